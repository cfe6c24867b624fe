"""The webnn backend's cache of compiled graphs (least recently used first out, bounded in
count and estimated bytes), split out of :mod:`._backend` so that each module stays within
the house's length."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ipfs_accelerate.hal.webnn._backend import _Compiled
    from ipfs_accelerate.hal.webnn._graph import Trace

__all__ = ["GraphCache"]


class GraphCache:
    """What :class:`~._backend.WebNNBackend` keeps of its compiled graphs: ``_cache`` (key ->
    compiled graph, most recently used last) under ``_lock``, within ``cache_size`` graphs
    and ``cache_bytes`` of estimated memory; the backend compiles (``_compile``)."""

    _cache: OrderedDict[Any, _Compiled]
    _lock: threading.RLock
    cache_size: int
    cache_bytes: int

    def _compile(self, found: Trace, threads: int | None = None) -> _Compiled:
        raise NotImplementedError

    def _compiled(self, key: Any, found: Trace, threads: int | None = None) -> _Compiled:
        """The cached graph of ``key``, compiled from ``found`` on a miss (hold the lock);
        ``threads`` as MLGraphBuilder.build's (part of ``key`` where given)."""
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._compile(found, threads)
            self._cache[key] = compiled
            self._evict()
        else:
            self._cache.move_to_end(key)
        return compiled

    def _evict(self) -> None:
        """Drop least recently used graphs beyond the count and memory bounds (never the newest)."""
        total = sum(entry.cost for entry in self._cache.values())
        while len(self._cache) > 1 and (
            len(self._cache) > self.cache_size or total > self.cache_bytes
        ):
            _, dropped = self._cache.popitem(last=False)
            total -= dropped.cost

    @property
    def cached_graphs(self) -> int:
        """How many compiled graphs the cache holds."""
        return len(self._cache)

    def clear_cache(self) -> None:
        """Drop every compiled graph (their sessions and memory go with them)."""
        with self._lock:
            self._cache.clear()

    @contextmanager
    def transient_graphs(self) -> Iterator[None]:
        """Graphs compiled inside the context are dropped from the cache when it exits (their
        sessions and arenas go with them): a calibration pass's graphs, with their extra
        outputs, are never run again. A graph another thread compiled meanwhile is dropped
        too; it is compiled again when next used."""
        with self._lock:
            before = set(self._cache)
        try:
            yield
        finally:
            with self._lock:
                for key in [key for key in self._cache if key not in before]:
                    del self._cache[key]
