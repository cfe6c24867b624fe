"""Per-backend (and per-endpoint) counters and histograms.

Plain numbers, no exporter dependency: a Prometheus or OpenTelemetry exporter reads
:meth:`Metrics.snapshot` (counters, and histograms as cumulative buckets with sum and
count, the Prometheus shape). Percentiles are computed over the most recent observations
(a bounded window), so they follow current behaviour rather than the whole history.
Nothing here ever holds a request body, a header or a key.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

__all__ = ["DEFAULT_BUCKETS", "Histogram", "Metrics"]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, math.inf,
)  # fmt: skip


class Histogram:
    """Bucketed counts plus a window of recent samples for percentiles. Not locked: callers lock."""

    __slots__ = ("_bounds", "_counts", "_recent", "count", "max", "sum")

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS, window: int = 4096) -> None:
        bounds = sorted(buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = tuple(bounds)
        self._counts = [0] * len(self._bounds)
        self._recent: deque[float] = deque(maxlen=window)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._recent.append(value)
        self.count += 1
        self.sum += value
        if value > self.max:
            self.max = value

    def snapshot(self) -> dict[str, Any]:
        ordered = sorted(self._recent)

        def pick(q: float) -> float | None:
            if not ordered:
                return None
            return ordered[max(1, math.ceil(q / 100.0 * len(ordered))) - 1]

        cumulative = []
        running = 0
        for bound, n in zip(self._bounds, self._counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return {
            "count": self.count,
            "sum": self.sum,
            "mean": self.sum / self.count if self.count else None,
            "max": self.max if self.count else None,
            "p50": pick(50),
            "p95": pick(95),
            "p99": pick(99),
            "buckets": cumulative,
        }


class Metrics:
    """Counters of one backend or endpoint. Thread-safe; every update is O(1)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.successes = 0
        self.failures: Counter[str] = Counter()
        self.retries = 0
        self.cancelled = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.latency = Histogram()
        self.time_to_first_chunk = Histogram()
        self.queue_wait = Histogram()

    def on_request(self) -> None:
        with self._lock:
            self.requests += 1

    def on_queue_wait(self, seconds: float) -> None:
        with self._lock:
            self.queue_wait.observe(seconds)

    def on_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def on_first_chunk(self, seconds: float) -> None:
        with self._lock:
            self.time_to_first_chunk.observe(seconds)

    def on_success(
        self,
        latency: float,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        queue_wait: float | None = None,
    ) -> None:
        with self._lock:
            self.successes += 1
            self.latency.observe(latency)
            if tokens_in:
                self.tokens_in += tokens_in
            if tokens_out:
                self.tokens_out += tokens_out
            if queue_wait is not None:
                self.queue_wait.observe(queue_wait)

    def on_attempt(self, latency: float) -> None:
        """A successful attempt, counted when it ends (endpoint-level metrics)."""
        with self._lock:
            self.requests += 1
            self.successes += 1
            self.latency.observe(latency)

    def on_attempt_failure(self, error: BaseException) -> None:
        with self._lock:
            self.requests += 1
            self.failures[type(error).__name__] += 1

    def on_failure(self, error: BaseException, queue_wait: float | None = None) -> None:
        """Count a failed request by error type; cancellation and closing are counted apart."""
        with self._lock:
            if queue_wait is not None:
                self.queue_wait.observe(queue_wait)
            if isinstance(error, Exception):
                self.failures[type(error).__name__] += 1
            else:
                self.cancelled += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "successes": self.successes,
                "failures": dict(self.failures),
                "failures_total": sum(self.failures.values()),
                "retries": self.retries,
                "cancelled": self.cancelled,
                "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out,
                "latency_s": self.latency.snapshot(),
                "time_to_first_chunk_s": self.time_to_first_chunk.snapshot(),
                "queue_wait_s": self.queue_wait.snapshot(),
            }
