"""Dynamic batching: the inputs of concurrent embedding requests run as shared forward passes.

A batch runs when it is full or its oldest input has waited ``max_wait``; it takes the oldest
input plus those nearest to it in length, and each result goes back to its request by
position. The full contract (and why) is in docs/server.md, "Dynamic batching".
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["EmbeddingBatcher", "Overloaded"]

logger = logging.getLogger(__name__)

Array = np.ndarray[Any, Any]
#: runs one batch of token lists, returns (N, dimension) vectors; called on the worker thread
Forward = Callable[[list[list[int]]], Array]
#: hands a function to the model's worker thread
Runner = Callable[..., "asyncio.Future[Any]"]


class Overloaded(Exception):
    """``max_pending`` requests are already in progress."""


@dataclass(eq=False)
class _Request:
    future: asyncio.Future[Array]
    out: Array
    remaining: int
    enqueued: float
    queue_s: float | None = None
    inference_s: float = 0.0


@dataclass(eq=False)
class _Item:
    request: _Request
    index: int
    tokens: list[int]
    enqueued: float = field(default_factory=time.perf_counter)


class EmbeddingBatcher:
    """Batches embedding requests for one model (see the module docstring).

    ``forward`` computes a batch; ``run`` executes a callable on the model's worker thread
    (``ServedModel.call``). ``on_batch(size, queue_waits, seconds)`` reports each batch (for
    metrics). All state lives on one event loop, the one of the first :meth:`embed` call.
    """

    def __init__(
        self,
        forward: Forward,
        run: Callable[..., Any],
        dimension: int,
        *,
        max_batch_size: int = 32,
        max_wait: float = 0.005,
        max_pending: int = 1024,
        window_batches: int = 4,
        on_batch: Callable[[int, list[float], float], None] | None = None,
    ) -> None:
        self._forward = forward
        self._run = run
        self.dimension = dimension
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_pending = max_pending
        self.window_batches = window_batches
        self._on_batch = on_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pending_requests = 0
        self.batches = 0

    @property
    def queued_inputs(self) -> int:
        return len(self._queue)

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._arrived = asyncio.Event()
        elif self._loop is not loop:
            raise RuntimeError("EmbeddingBatcher is bound to another event loop")
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._collect(), name="embedding-batcher")

    async def embed(self, sequences: Sequence[list[int]]) -> tuple[Array, float, float]:
        """Vectors (N, dimension) for the token lists, in order, with this request's queue
        wait and its share of inference seconds. Raises :class:`Overloaded` when
        ``max_pending`` requests are in progress, or what the forward pass raised."""
        if not sequences:
            return np.empty((0, self.dimension), dtype=np.float32), 0.0, 0.0
        if self.pending_requests >= self.max_pending:
            raise Overloaded(f"{self.pending_requests} requests in progress (the limit)")
        self._start()
        assert self._arrived is not None
        now = time.perf_counter()
        request = _Request(
            asyncio.get_running_loop().create_future(),
            np.empty((len(sequences), self.dimension), np.float32),
            len(sequences),
            now,
        )
        self._queue.extend(
            _Item(request, i, list(tokens), now) for i, tokens in enumerate(sequences)
        )
        self._arrived.set()
        self.pending_requests += 1
        try:
            out = await request.future
        finally:
            self.pending_requests -= 1
            if not request.future.done():
                request.future.cancel()  # the caller went away: its queued inputs are dropped
        return out, request.queue_s or 0.0, request.inference_s

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._queue:
            item = self._queue.popleft()
            if not item.request.future.done():
                item.request.future.set_exception(RuntimeError("the server is shutting down"))

    # ------------------------------------------------------------------ the collector

    async def _collect(self) -> None:
        assert self._arrived is not None
        while True:
            self._drop_abandoned()
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            deadline = self._queue[0].enqueued + self.max_wait
            while len(self._queue) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = [item for item in self._take() if not item.request.future.done()]
            if batch:
                try:
                    await self._run_batch(batch)
                except asyncio.CancelledError:
                    for item in batch:
                        if not item.request.future.done():
                            item.request.future.set_exception(
                                RuntimeError("the server is shutting down")
                            )
                    raise
                except Exception:  # pragma: no cover - _run_batch delivers errors itself
                    logger.exception("embedding batcher: unexpected failure")

    def _take(self) -> list[_Item]:
        """The next batch: everything when it fits, else the oldest input and the inputs
        nearest to it in length within the window (a contiguous run of the window sorted by
        length, placed so that its longest input is as short as possible)."""
        size = self.max_batch_size
        if len(self._queue) <= size:
            batch = list(self._queue)
            self._queue.clear()
            return batch
        window = [
            self._queue.popleft() for _ in range(min(len(self._queue), size * self.window_batches))
        ]
        oldest = window[0]
        ranked = sorted(window, key=lambda item: len(item.tokens))
        position = next(i for i, item in enumerate(ranked) if item is oldest)
        start = max(0, min(position - size + 1, len(ranked) - size))
        chosen = ranked[start : start + size]
        taken = {id(item) for item in chosen}
        # what stays keeps its arrival order, ahead of what arrived after the window
        self._queue.extendleft(reversed([item for item in window if id(item) not in taken]))
        return chosen

    def _drop_abandoned(self) -> None:
        while self._queue and self._queue[0].request.future.done():
            self._queue.popleft()

    async def _run_batch(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        waits = [started - item.enqueued for item in batch]
        for item in batch:
            if item.request.queue_s is None:
                item.request.queue_s = started - item.request.enqueued
        try:
            vectors = await self._run(self._forward, [item.tokens for item in batch])
        except Exception as exc:
            requests = list(dict.fromkeys(item.request for item in batch))
            if len(requests) == 1:
                _fail(requests[0], exc)
                return
            # one request's input may have broken the batch: each request again on its own
            for request in requests:
                await self._run_batch([item for item in batch if item.request is request])
            return
        seconds = time.perf_counter() - started
        self.batches += 1
        if self._on_batch is not None:
            self._on_batch(len(batch), waits, seconds)
        share = seconds / len(batch)
        for item, vector in zip(batch, vectors, strict=True):
            request = item.request
            if request.future.done():
                continue
            request.out[item.index] = vector
            request.inference_s += share
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(request.out)


def _fail(request: _Request, exc: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(exc)
