"""Random fault injection for soak runs: a share of requests gets a fault drawn from a mix.

:func:`install_chaos` makes a :class:`~tests.fakes._server.FakeServer` draw, for every request
outside its health routes, a fault with probability ``rate``: HTTP 500 (the provider's error
body), 429 with ``Retry-After``, a connection reset before any response, or a stall longer
than the client's timeout. Faults reuse the server's own fault machinery, so they look
exactly like the deterministic ones the tests inject. Counts of what was injected are kept
in ``plan.injected``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from ._server import FakeServer, Fault

__all__ = ["ChaosPlan", "install_chaos"]

HEALTH_PATHS = ("/health", "/v2/health", "/models", "/info")


@dataclass
class ChaosPlan:
    rate: float = 0.2
    seed: int | None = None
    kinds: tuple[str, ...] = ("500", "429", "reset", "timeout")
    retry_after: str = "1"  # seconds, as the header carries it
    stall: float = 3.0  # seconds a "timeout" fault keeps the request waiting
    injected: Counter[str] = field(default_factory=Counter)
    served: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"chaos rate must be in [0, 1], got {self.rate}")
        unknown = set(self.kinds) - {"500", "429", "reset", "timeout"}
        if unknown:
            raise ValueError(f"unknown chaos fault kinds {sorted(unknown)}")
        self._rng = random.Random(self.seed)

    def draw(self, path: str) -> Fault | None:
        self.served += 1
        if any(path.endswith(p) or p + "/" in path for p in HEALTH_PATHS):
            return None
        if self._rng.random() >= self.rate:
            return None
        kind = self._rng.choice(self.kinds)
        self.injected[kind] += 1
        if kind == "500":
            return Fault(status=500, message="chaos: injected internal error")
        if kind == "429":
            return Fault(
                status=429, message="chaos: rate limited", headers={"Retry-After": self.retry_after}
            )
        if kind == "reset":
            return Fault(reset=True)
        return Fault(delay=self.stall)


def install_chaos(server: FakeServer, plan: ChaosPlan) -> ChaosPlan:
    """Queued deterministic faults still come first; otherwise the plan decides."""
    queued = server._take_fault

    def take(path: str) -> Fault | None:
        fault = queued(path)
        return fault if fault is not None else plan.draw(path)

    server._take_fault = take  # type: ignore[method-assign]
    return plan
