"""Types every resilient client shares: request priority and the outcome of a health probe."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["HealthStatus", "Priority"]


class Priority(enum.IntEnum):
    """Queue priority of a request: lower value is served first."""

    HIGH = 0
    NORMAL = 1
    LOW = 2

    @classmethod
    def parse(cls, value: Priority | str | int | None) -> Priority:
        """Accept ``Priority``, its name (``"high"``) or its value; ``None`` means NORMAL."""
        if value is None:
            return cls.NORMAL
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        elif isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                pass
        from ipfs_accelerate.errors import InvalidArgumentError

        raise InvalidArgumentError(f"priority must be 'high', 'normal' or 'low', got {value!r}")


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """Outcome of a health probe. A probe never raises for an unhealthy service."""

    healthy: bool
    status: int | None = None
    latency_s: float | None = None
    detail: str = ""
