"""The priority limiter: a concurrency bound with a priority queue in front of it."""

from __future__ import annotations

import asyncio
import builtins
import heapq
import itertools
import threading
import time
from typing import Any

from ipfs_accelerate.errors import APITimeoutError, QueueFullError

from ._types import Priority

__all__ = ["PriorityLimiter"]


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
    """At most ``max_concurrency`` holders; up to ``max_queue`` waiters served by priority,
    FIFO within one.

    Over the bound, :meth:`acquire` raises QueueFullError at once. A waiter cancelled (or
    timed out) leaves the queue; a slot handed to a waiter that was cancelled meanwhile is
    passed on, so no slot is ever lost. Works across event loops and threads.
    """

    def __init__(
        self, max_concurrency: int, max_queue: int, *, provider: str = "", name: str = ""
    ) -> None:
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

    async def acquire(
        self, priority: Priority = Priority.NORMAL, timeout: float | None = None
    ) -> float:
        """Take a slot; return the seconds waited. Raises QueueFullError or APITimeoutError."""
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
                raise APITimeoutError(
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
