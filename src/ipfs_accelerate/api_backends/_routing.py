"""What a :class:`~ipfs_accelerate.api_backends.router.Router` routes over, and how.

:class:`RouterConfig` holds the router's settings and checks them; :class:`RouteTarget` is one
endpoint of one backend with the routing state the router keeps for it (in flight, failures,
cooldowns, latency averages, health). Both are importable from
:mod:`ipfs_accelerate.api_backends.router` and :mod:`ipfs_accelerate.api_backends`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ipfs_accelerate.errors import ConfigurationError
from ipfs_accelerate.resilience.balancing import STRATEGIES

from ._types import HealthStatus

if TYPE_CHECKING:  # pragma: no cover
    from ipfs_accelerate.servers import ManagedServer

    from ._base import APIBackend
    from ._transport import Endpoint

__all__ = ["RouteTarget", "RouterConfig"]


def _int_at_least(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and value >= minimum


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Router settings (what each does: docs/router.md).

    ``max_attempts`` None means ``max(3, number of targets)``. ``deadline`` bounds a whole
    call (seconds; per call ``deadline=``). Round backoff: ``backoff * 2**round`` capped at
    ``max_backoff``; a Retry-After longer than ``max_retry_after`` ends the request.
    ``max_wait``: the longest the router sleeps waiting for a target to come out of cooldown
    (or for a backoff) before it gives up; open circuits are never waited for (they fail fast).
    """

    strategy: str = "least_in_flight"
    max_attempts: int | None = None
    deadline: float | None = None
    attempt_retries: int = 0
    cooldown_after: int = 5
    cooldown: float = 1.0
    max_cooldown: float = 30.0
    auth_cooldown: float = 300.0
    backoff: float = 0.1
    max_backoff: float = 2.0
    max_retry_after: float = 60.0
    jitter: float = 0.25
    ewma_alpha: float = 0.3
    health_interval: float | None = None
    health_timeout: float = 5.0
    max_wait: float = 10.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigurationError(
                f"router: strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        checks = (
            (self.max_attempts is None or _int_at_least(self.max_attempts, 1),
                "max_attempts must be >= 1", self.max_attempts),
            (self.deadline is None or self.deadline > 0, "deadline must be > 0", self.deadline),
            (_int_at_least(self.attempt_retries, 0),
                "attempt_retries must be >= 0", self.attempt_retries),
            (_int_at_least(self.cooldown_after, 1),
                "cooldown_after must be >= 1", self.cooldown_after),
            (self.cooldown >= 0 and self.max_cooldown >= 0 and self.auth_cooldown >= 0,
                "cooldowns must be >= 0", self.cooldown),
            (self.backoff >= 0 and self.max_backoff >= 0, "backoffs must be >= 0", self.backoff),
            (0.0 <= self.jitter <= 1.0, "jitter must be in [0, 1]", self.jitter),
            (0.0 < self.ewma_alpha <= 1.0, "ewma_alpha must be in (0, 1]", self.ewma_alpha),
            (self.health_interval is None or self.health_interval > 0,
                "health_interval must be > 0", self.health_interval),
            (self.health_timeout > 0, "health_timeout must be > 0", self.health_timeout),
            (self.max_wait >= 0, "max_wait must be >= 0", self.max_wait),
        )  # fmt: skip
        for ok, message, value in checks:
            if not ok:
                raise ConfigurationError(f"router: {message}, got {value!r}")

    @classmethod
    def from_value(cls, value: Any, **overrides: Any) -> RouterConfig:
        if value is None:
            base = cls()
        elif isinstance(value, RouterConfig):
            base = value
        elif isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ConfigurationError(
                    f"unknown router settings: {unknown}; known: {sorted(known)}"
                )
            base = cls(**dict(value))
        else:
            raise ConfigurationError(
                f"router settings must be a RouterConfig or a dict, got {type(value).__name__}"
            )
        return dataclasses.replace(base, **overrides) if overrides else base


class RouteTarget:
    """One endpoint of one backend (plus an optional model and weight) and its routing state.

    ``backend`` must have a single endpoint; give a Unified backend to the Router, which
    expands it into one target per endpoint (:meth:`expand`).
    """

    def __init__(
        self,
        backend: APIBackend,
        *,
        model: str | None = None,
        weight: float = 1.0,
        name: str | None = None,
        managed: ManagedServer | None = None,
    ) -> None:
        if not (isinstance(weight, int | float) and weight > 0 and math.isfinite(weight)):
            raise ConfigurationError(f"router: target weight must be > 0, got {weight!r}")
        if len(backend._endpoints()) != 1:
            raise ConfigurationError(
                f"router: {backend.provider} backend has {len(backend._endpoints())} endpoints; "
                "use RouteTarget.expand() (or pass the backend to the Router) "
                "for one target per endpoint"
            )
        self.backend = backend
        self.model = model
        self.weight = float(weight)
        self.managed = managed if managed is not None else getattr(backend, "managed_server", None)
        self.name = name or f"{backend.provider}@{backend.endpoint.name}" + (
            f"/{model}" if model else ""
        )
        # routing state, owned by the router(s) using this target
        self.in_flight = 0
        self.picks = 0
        self.successes = 0
        self.failures: Counter[str] = Counter()
        self.consecutive_failures = 0
        self.cooldown_until = 0.0  # soft: our failure-streak heuristic
        self.hard_cooldown_until = 0.0  # hard: the server's Retry-After, rejected credentials
        self.cooldown_streak = 0
        self.cooldowns = 0
        self.ewma_latency: float | None = None
        self.ewma_ttfc: float | None = None
        self.healthy: bool | None = None
        self.last_health: HealthStatus | None = None
        self.wrr_current = 0.0

    @property
    def endpoint(self) -> Endpoint:
        return self.backend.endpoint

    def __repr__(self) -> str:
        return f"<RouteTarget {self.name} in_flight={self.in_flight}>"

    @classmethod
    def expand(
        cls, item: Any, *, model: str | None = None, weight: float | None = None
    ) -> list[RouteTarget]:
        """Targets for a backend (one per endpoint of a Unified backend) or a target."""
        if isinstance(item, RouteTarget):
            if model is None and weight is None:
                return [item]
            return [
                cls(
                    item.backend,
                    model=model or item.model,
                    weight=float(weight or item.weight),
                    managed=item.managed,
                )
            ]
        members = getattr(item, "members", None)
        if members is not None:
            out = []
            for member in members:
                out.extend(cls.expand(member, model=model, weight=weight))
            return out
        from ._base import APIBackend

        if not isinstance(item, APIBackend):
            raise ConfigurationError(
                f"router: expected an API backend or a RouteTarget, got {type(item).__name__}"
            )
        route_weight: float = getattr(item, "route_weight", 1.0)
        return [cls(item, model=model, weight=float(weight or route_weight))]

    def stats(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        return {
            "name": self.name,
            "provider": self.backend.provider,
            "endpoint": self.endpoint.name,
            "model": self.model,
            "weight": self.weight,
            "in_flight": self.in_flight,
            "picks": self.picks,
            "successes": self.successes,
            "failures": dict(self.failures),
            "consecutive_failures": self.consecutive_failures,
            "cooldowns": self.cooldowns,
            "cooling_down_s": max(0.0, self.cooldown_until - now, self.hard_cooldown_until - now),
            "circuit_state": self.endpoint.breaker.state,
            "healthy": self.healthy,
            "latency_ewma_s": self.ewma_latency,
            "ttfc_ewma_s": self.ewma_ttfc,
            "managed_state": self.managed.state.value if self.managed is not None else None,
        }
