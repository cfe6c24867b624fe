"""The circuit breaker: stop sending to an endpoint that keeps failing, probe it later.

Thread-safe (a backend may be driven from its own event loop and, through the sync
facade, from the facade's loop thread at the same time), so one breaker guards each
endpoint whoever sends to it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ipfs_accelerate.errors import CircuitOpenError

from ._config import BreakerConfig

__all__ = ["BreakerPermit", "CircuitBreaker", "CircuitState"]


class CircuitState:
    CLOSED: str = "closed"
    OPEN: str = "open"
    HALF_OPEN: str = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPermit:
    """Proof that an attempt was let through; ``probe`` marks the single half-open trial."""

    probe: bool
    generation: int


_DISABLED_PERMIT = BreakerPermit(False, -1)


class CircuitBreaker:
    """Closed / open / half-open breaker with consecutive-failure and failure-rate thresholds.

    Call :meth:`acquire` before an attempt (raises CircuitOpenError while open, and while a
    half-open probe is out), then exactly one of :meth:`record_success`,
    :meth:`record_failure`, :meth:`release` (neutral outcome or cancellation) with the permit.
    """

    def __init__(
        self,
        config: BreakerConfig,
        *,
        provider: str = "",
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._provider = provider
        self._name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._consecutive = 0
        self._window: deque[bool] = deque(maxlen=config.window_size)
        self._window_failures = 0
        self._probe_out = False
        self._generation = 0  # bumps on every state change; stale permits are ignored
        self._closed_permit = BreakerPermit(False, 0)  # shared by all attempts of one closed period
        self.times_opened = 0

    @property
    def state(self) -> str:
        with self._lock:
            self._maybe_half_open()
            return self._state

    @property
    def is_open(self) -> bool:
        """Whether calls are refused now (open and still cooling down); lock-free when closed."""
        return not self.surely_closed and self.state == CircuitState.OPEN

    def _maybe_half_open(self) -> None:
        if (
            self._state == CircuitState.OPEN
            and self._clock() - self._opened_at >= self.config.cooldown
        ):
            self._state = CircuitState.HALF_OPEN
            self._probe_out = False
            self._generation += 1

    @property
    def surely_closed(self) -> bool:
        """Lock-free hint for the hot path: True only when the circuit is closed (or disabled)."""
        return self._state is CircuitState.CLOSED or not self.config.enabled

    def acquire(self) -> BreakerPermit:
        if not self.config.enabled:
            return _DISABLED_PERMIT
        permit = self._closed_permit
        if self._state is CircuitState.CLOSED and permit.generation == self._generation:
            # hot path without the lock: a permit that went stale meanwhile is ignored on record
            return permit
        with self._lock:
            self._maybe_half_open()
            if self._state == CircuitState.CLOSED:
                if self._closed_permit.generation != self._generation:
                    self._closed_permit = BreakerPermit(False, self._generation)
                return self._closed_permit
            if self._state == CircuitState.HALF_OPEN and not self._probe_out:
                self._probe_out = True
                return BreakerPermit(True, self._generation)
            if self._state == CircuitState.OPEN:
                wait = max(0.0, self.config.cooldown - (self._clock() - self._opened_at))
                detail = f"retry in {wait:.3g} s"
            else:
                detail = "a half-open probe is in flight"
        where = f" for {self._name}" if self._name else ""
        raise CircuitOpenError(
            f"circuit breaker open{where}: request not sent ({detail})", provider=self._provider
        )

    def record_success(self, permit: BreakerPermit) -> None:
        self._record(permit, failed=False)

    def record_failure(self, permit: BreakerPermit) -> None:
        self._record(permit, failed=True)

    def _record(self, permit: BreakerPermit, *, failed: bool) -> None:
        if permit.generation < 0:
            return
        with self._lock:
            if permit.generation != self._generation:
                return  # a verdict on a circuit that has moved on since the permit
            if self._state == CircuitState.HALF_OPEN:
                if permit.probe:
                    (self._open if failed else self._close)()
                return
            self._consecutive = self._consecutive + 1 if failed else 0
            self._push(failed)
            if not failed:
                return  # a success never trips the circuit; the rate is checked on failures
            cfg = self.config
            rate_trip = (
                len(self._window) >= cfg.min_calls
                and self._window_failures / len(self._window) >= cfg.failure_rate_threshold
            )
            if self._consecutive >= cfg.failure_threshold or rate_trip:
                self._open()

    def release(self, permit: BreakerPermit) -> None:
        """Neutral outcome (429, cancellation): frees a half-open probe slot, records nothing."""
        if permit.generation < 0 or not permit.probe:
            return
        with self._lock:
            if permit.generation == self._generation and self._state == CircuitState.HALF_OPEN:
                self._probe_out = False

    def record(self, permit: BreakerPermit, failure: bool | None) -> None:
        if failure is None:
            self.release(permit)
        elif failure:
            self.record_failure(permit)
        else:
            self.record_success(permit)

    def reset(self) -> None:
        with self._lock:
            self._close()

    def _push(self, failed: bool) -> None:
        if len(self._window) == self._window.maxlen and self._window[0]:
            self._window_failures -= 1
        self._window.append(failed)
        if failed:
            self._window_failures += 1

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
        self._probe_out = False
        self._generation += 1
        self.times_opened += 1
        self._consecutive = 0
        self._window.clear()
        self._window_failures = 0

    def _close(self) -> None:
        self._state = CircuitState.CLOSED
        self._probe_out = False
        self._generation += 1
        self._consecutive = 0
        self._window.clear()
        self._window_failures = 0
