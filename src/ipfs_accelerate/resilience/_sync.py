"""The sync facade: run a client's coroutines from code that is not async.

All sync calls run on one daemon thread with its own event loop (started on first use), so
connection pools persist across sync calls and a sync call works the same from plain code,
from a worker thread, or from a thread whose own event loop is busy elsewhere. Calling the
facade from that loop thread itself would deadlock and raises instead.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Self, TypeVar

__all__ = ["BlockingFacade", "iterate_sync", "run_sync"]

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            return loop
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                ready = threading.Event()
                new_loop = asyncio.new_event_loop()

                def run() -> None:
                    asyncio.set_event_loop(new_loop)
                    ready.set()
                    new_loop.run_forever()

                thread = threading.Thread(target=run, name="ipfs-accelerate-api-sync", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = new_loop, thread
            return self._loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, awaitable: Awaitable[T]) -> T:
        if self.in_loop_thread():
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()  # it will never run: do not leave an un-awaited coroutine behind
            raise RuntimeError(
                "the sync facade was called from its own event loop thread; await the async method"
            )
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), self.loop())
        try:
            return future.result()
        except BaseException:
            future.cancel()  # KeyboardInterrupt in the caller: do not leave the request running
            raise


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


_PORTAL = _LoopThread()


def run_sync(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` on the facade's loop thread and return its result (or raise its error)."""
    return _PORTAL.run(awaitable)


def iterate_sync(aiterator: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator from sync code; closing the sync iterator closes it (frees its
    slot)."""

    async def next_item() -> tuple[bool, Any]:
        try:
            return True, await aiterator.__anext__()
        except StopAsyncIteration:
            return False, None

    finished = False
    try:
        while True:
            ok, item = _PORTAL.run(next_item())
            if not ok:
                finished = True
                return
            yield item
    finally:
        if not finished:
            close = getattr(aiterator, "aclose", None)
            if close is not None:
                _PORTAL.run(close())


class BlockingFacade:
    """Blocking twin of an async client: ``client.sync.op(...)`` returns what
    ``await client.op(...)`` would; methods that return async iterators return plain
    iterators. Every public method of the client is available."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._client!r}>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return _wrap(attr)

    def close(self) -> None:
        run_sync(self._client.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wrap(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        if inspect.isawaitable(result):
            return run_sync(result)
        if hasattr(result, "__anext__"):
            return iterate_sync(result)
        return result

    return call
