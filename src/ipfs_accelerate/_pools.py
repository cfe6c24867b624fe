"""Thread pools started on first use and started again in a forked child (whose process has
none of the parent's threads: a pool that thinks it has would never run the work)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["LazyPool"]


class LazyPool:
    """A ThreadPoolExecutor of ``workers()`` threads named ``prefix``, made by the first
    :meth:`get` and made again after a fork."""

    def __init__(self, workers: Callable[[], int], prefix: str) -> None:
        self._workers = workers
        self._prefix = prefix
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=max(1, self._workers()), thread_name_prefix=self._prefix
                )
            return self._pool

    def _forget(self) -> None:
        self._pool, self._lock = None, threading.Lock()
