"""Balancing strategies: which of several interchangeable endpoints takes the next request.

Shared by the :class:`~ipfs_accelerate.api_backends.Router` (over route targets) and S3 Kit
(over its endpoints). A strategy only chooses among the candidates it is given; the caller
decides which are candidates (circuit not open, not cooling down, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from ipfs_accelerate.errors import ConfigurationError

__all__ = ["STRATEGIES", "Candidate", "make_strategy"]

STRATEGIES = ("round_robin", "least_in_flight", "lowest_latency", "weighted")


class Candidate(Protocol):
    in_flight: int
    weight: float
    ewma_latency: float | None
    ewma_ttfc: float | None
    wrr_current: float


C = TypeVar("C", bound=Candidate)


class _RoundRobin:
    """Cycles through the tier in order, skipping what is not a candidate."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, candidates: Sequence[C], pool: Sequence[C], stream: bool) -> C:
        n = len(pool)
        allowed = {id(c) for c in candidates}
        for i in range(n):
            index = (self._next + i) % n
            if id(pool[index]) in allowed:
                self._next = (index + 1) % n
                return pool[index]
        return candidates[0]


class _LeastInFlight(_RoundRobin):
    def choose(self, candidates: Sequence[C], pool: Sequence[C], stream: bool) -> C:
        low = min(c.in_flight for c in candidates)
        return super().choose([c for c in candidates if c.in_flight == low], pool, stream)


class _LowestLatency(_RoundRobin):
    def choose(self, candidates: Sequence[C], pool: Sequence[C], stream: bool) -> C:
        def key(c: C) -> float:
            value = c.ewma_ttfc if stream else c.ewma_latency
            return -1.0 if value is None else value  # unmeasured first: every target gets a sample

        best = min(key(c) for c in candidates)
        return super().choose([c for c in candidates if key(c) == best], pool, stream)


class _Weighted:
    """Smooth weighted round-robin (as nginx does): spreads picks in proportion to weight."""

    def choose(self, candidates: Sequence[C], pool: Sequence[C], stream: bool) -> C:
        total = 0.0
        best: C | None = None
        for c in candidates:
            c.wrr_current += c.weight
            total += c.weight
            if best is None or c.wrr_current > best.wrr_current:
                best = c
        assert best is not None
        best.wrr_current -= total
        return best


def make_strategy(name: str) -> Any:
    """A fresh strategy object (``choose(candidates, pool, stream)``) by name."""
    factories: dict[str, Callable[[], Any]] = {
        "round_robin": _RoundRobin,
        "least_in_flight": _LeastInFlight,
        "lowest_latency": _LowestLatency,
        "weighted": _Weighted,
    }
    if name not in factories:
        raise ConfigurationError(
            f"unknown routing strategy {name!r}; choose from {', '.join(STRATEGIES)}"
        )
    return factories[name]()
