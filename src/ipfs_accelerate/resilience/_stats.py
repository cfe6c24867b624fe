"""Statistics of a client whose requests are spread over a pool of interchangeable endpoints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ._breaker import CircuitBreaker, CircuitState
from ._limiter import PriorityLimiter
from ._metrics import Metrics

__all__ = ["StatsEndpoint", "pool_stats", "pooled_circuit_state"]


class StatsEndpoint(Protocol):
    """What :func:`pool_stats` reads of an endpoint (an HTTP Endpoint, an S3 one)."""

    @property
    def breaker(self) -> CircuitBreaker: ...

    @property
    def limiter(self) -> PriorityLimiter: ...

    def stats(self) -> dict[str, Any]: ...


def pooled_circuit_state(states: Sequence[str]) -> str:
    """One state for interchangeable endpoints: closed while any is, else half-open while any is."""
    if CircuitState.CLOSED in states:
        return CircuitState.CLOSED
    return CircuitState.HALF_OPEN if CircuitState.HALF_OPEN in states else CircuitState.OPEN


def pool_stats(
    metrics: Metrics,
    provider: str,
    pooled: Sequence[StatsEndpoint],
    reported: Sequence[StatsEndpoint],
) -> dict[str, Any]:
    """Counters and latency percentiles of a client (no secrets, no payloads).

    ``circuit_state``, ``in_flight`` and ``queued`` sum up the ``pooled`` endpoints (the
    circuit counts as closed while any of them is closed, else half-open while any is);
    ``endpoints`` lists the stats of each ``reported`` one."""
    stats = metrics.snapshot()
    stats["provider"] = provider
    stats["circuit_state"] = pooled_circuit_state([ep.breaker.state for ep in pooled])
    stats["in_flight"] = sum(ep.limiter.in_flight for ep in pooled)
    stats["queued"] = sum(ep.limiter.queued for ep in pooled)
    stats["endpoints"] = [ep.stats() for ep in reported]
    return stats
