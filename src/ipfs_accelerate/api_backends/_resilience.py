"""Retry decisions, backoff, the circuit breaker and the priority limiter.

These are the pieces :class:`~ipfs_accelerate.api_backends.APIBackend` composes around every
request. They are transport-free and thread-safe (a backend may be driven from its own
event loop and, through the sync facade, from the facade's loop thread at the same time),
so a router can reuse them per endpoint.
"""

from __future__ import annotations

import asyncio
import builtins
import email.utils
import heapq
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ipfs_accelerate.errors import (
    APIStatusError,
    CircuitOpenError,
    ConnectionError,
    ProtocolError,
    QueueFullError,
    RateLimitError,
    StreamInterruptedError,
    TimeoutError,
)

from ._config import BreakerConfig, ResilienceConfig
from ._types import Priority

__all__ = [
    "RETRYABLE_STATUS",
    "CircuitBreaker",
    "CircuitState",
    "PriorityLimiter",
    "backoff_delay",
    "counts_as_failure",
    "is_retryable",
    "parse_retry_after",
]

# 408 request timeout, 409 conflict (e.g. a lock), 429 rate limit, 5xx, 529 (Anthropic overloaded)
RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_retryable(error: BaseException) -> bool:
    """Whether a failed attempt may be sent again.

    Connection failures and timeouts, and HTTP 408/409/429/5xx/529 are retryable (also when
    the error came as an HTML page from a proxy); every other status (400, 401, 403, 404,
    422...) and malformed responses are not. A server's
    ``x-should-retry`` header, when present, has the last word (OpenAI and Anthropic send it).
    """
    if isinstance(error, StreamInterruptedError):
        return False
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    if isinstance(error, ProtocolError):
        # only an HTML error page from a proxy with a transient status (502, 503...);
        # a malformed answer (status 2xx) is not fixed by asking again
        status = error.status or 0
        return status in RETRYABLE_STATUS or status >= 500
    if isinstance(error, APIStatusError):
        advice = getattr(error, "should_retry", None)
        if advice is not None:
            return bool(advice)
        status = error.status or 0
        return status in RETRYABLE_STATUS or status >= 500
    return False


def counts_as_failure(error: BaseException) -> bool | None:
    """How an attempt's error counts for the circuit breaker.

    ``True``: the endpoint is unhealthy (connection, timeout, 5xx, 408, malformed response).
    ``False``: it answered sanely (a 4xx about the request is the caller's fault).
    ``None``: neutral: 429 says "slow down", not "broken", and must not open the circuit.
    """
    if isinstance(error, RateLimitError) or (
        isinstance(error, APIStatusError) and error.status == 429
    ):
        return None
    if isinstance(error, ConnectionError | TimeoutError | ProtocolError):
        return True
    if isinstance(error, APIStatusError):
        status = error.status or 0
        return status >= 500 or status == 408
    return None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, else ``retry-after``.

    ``retry-after`` may be seconds (possibly fractional) or an HTTP date. Unparseable or
    negative values are ignored (None), never guessed.
    """
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if ms >= 0 and ms == ms:
            return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(seconds, 0.0)
    if seconds != seconds or seconds < 0:
        return None
    return seconds


def backoff_delay(
    attempt: int,
    config: ResilienceConfig,
    retry_after: float | None,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """Delay before retry number ``attempt`` (0-based), or None when the server's wait is too long."""
    if retry_after is not None:
        if retry_after > config.max_retry_after:
            return None
        return retry_after
    base = min(config.initial_backoff * config.backoff_multiplier**attempt, config.max_backoff)
    return base * (1.0 - config.jitter * rng())


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
        if self._state == CircuitState.OPEN and self._clock() - self._opened_at >= self.config.cooldown:
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
        if permit.generation < 0:
            return
        with self._lock:
            if permit.generation != self._generation:
                return
            if self._state == CircuitState.HALF_OPEN:
                if permit.probe:
                    self._close()
                return
            self._consecutive = 0
            self._push(False)

    def record_failure(self, permit: BreakerPermit) -> None:
        if permit.generation < 0:
            return
        with self._lock:
            if permit.generation != self._generation:
                return
            if self._state == CircuitState.HALF_OPEN:
                if permit.probe:
                    self._open()
                return
            self._consecutive += 1
            self._push(True)
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


class _Waiter:
    __slots__ = ("future", "loop", "priority", "seq", "state")

    def __init__(self, priority: int, seq: int, loop: asyncio.AbstractEventLoop) -> None:
        self.priority = priority
        self.seq = seq
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.state = "waiting"  # -> "granted" (owns a slot) or "abandoned"

    def __lt__(self, other: _Waiter) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PriorityLimiter:
    """At most ``max_concurrency`` holders; up to ``max_queue`` waiters served by priority, FIFO within one.

    Over the bound, :meth:`acquire` raises QueueFullError at once. A waiter cancelled (or
    timed out) leaves the queue; a slot handed to a waiter that was cancelled meanwhile is
    passed on, so no slot is ever lost. Works across event loops and threads.
    """

    def __init__(self, max_concurrency: int, max_queue: int, *, provider: str = "", name: str = "") -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._provider = provider
        self._name = name
        self._lock = threading.Lock()
        self._in_flight = 0
        self._queued = 0
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return self._queued

    def try_acquire(self) -> bool:
        """Take a free slot without waiting (nobody queued ahead); False when one must wait."""
        with self._lock:
            if self._in_flight < self.max_concurrency and self._queued == 0:
                self._in_flight += 1
                return True
        return False

    async def acquire(self, priority: Priority = Priority.NORMAL, timeout: float | None = None) -> float:
        """Take a slot; return the seconds spent waiting. Raises QueueFullError or TimeoutError."""
        with self._lock:
            if self._in_flight < self.max_concurrency and self._queued == 0:
                self._in_flight += 1
                return 0.0
            if self._queued >= self.max_queue:
                in_flight, queued = self._in_flight, self._queued
                full = True
            else:
                full = False
                waiter = _Waiter(int(priority), next(self._seq), asyncio.get_running_loop())
                heapq.heappush(self._heap, waiter)
                self._queued += 1
        if full:
            where = f" of {self._name}" if self._name else ""
            raise QueueFullError(
                f"request queue{where} is full ({queued} waiting, {in_flight} in flight, "
                f"limits {self.max_concurrency} concurrent / {self.max_queue} queued)",
                provider=self._provider,
            )
        start = time.monotonic()
        try:
            if timeout is None:
                await waiter.future
            else:
                async with asyncio.timeout(timeout):
                    await waiter.future
        except BaseException as exc:
            with self._lock:
                if waiter.state == "waiting":
                    waiter.state = "abandoned"
                    self._queued -= 1
                    granted = False
                else:
                    granted = waiter.state == "granted"
                    waiter.state = "abandoned"
            if granted:  # the slot arrived as we were cancelled: pass it on
                self.release()
            if isinstance(exc, builtins.TimeoutError):
                where = f" of {self._name}" if self._name else ""
                raise TimeoutError(
                    f"waited {time.monotonic() - start:.3g} s in the request queue{where} "
                    "without getting a slot (deadline reached)",
                    provider=self._provider,
                ) from None
            raise
        return time.monotonic() - start

    def release(self) -> None:
        """Give a slot back: to the best waiter if any, else to the pool."""
        with self._lock:
            while self._heap:
                waiter = heapq.heappop(self._heap)
                if waiter.state != "waiting":
                    continue
                waiter.state = "granted"
                self._queued -= 1
                break
            else:
                self._in_flight -= 1
                return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is waiter.loop:
            _wake(waiter.future)
        else:
            try:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            except RuntimeError:  # that loop is closed: its waiter can never run
                with self._lock:
                    waiter.state = "abandoned"
                self.release()

    def stats(self) -> dict[str, Any]:
        return {
            "in_flight": self._in_flight,
            "queued": self._queued,
            "max_concurrency": self.max_concurrency,
            "max_queue": self.max_queue,
        }
