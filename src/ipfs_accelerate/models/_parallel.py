"""A batch split into row shards that run at once, one per core, on the numpy backend.

numpy runs element-wise ops on one thread; shards side by side on a thread pool keep every
core busy between the matrix products (why, and what it gains: docs/models.md). A shard's
result is the same as the whole batch's rows.

BLAS is held to one thread process-wide while any sharded batch runs: the first batch in sets
it, the last one out restores it (OpenBLAS through hal/cpu/_blas, the count the cpu backend's
small products share; another BLAS from this module's one control thread, as threadpoolctl
lets a single thread at a time change it). Where no BLAS library can be limited, batches are
not sharded: threads would compete with BLAS's own.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from itertools import accumulate, pairwise
from typing import Any, TypeVar

import numpy as np

from ipfs_accelerate.hal._backend import host_cores
from ipfs_accelerate.hal.cpu import _blas as blas

__all__ = ["MIN_SHARD_ROWS", "run_longest_first", "run_sharded", "shard_bounds"]

T = TypeVar("T")

#: the fewest rows a shard gets: below this the per-op overhead outweighs the second core
MIN_SHARD_ROWS = 8

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_control: ThreadPoolExecutor | None = None  # the one thread that changes BLAS's thread count
_depth = 0
_limiter: Callable[[], None] | None = None
_controller: Any = None


def shard_bounds(
    weights: Sequence[int], cores: int, min_rows: int = MIN_SHARD_ROWS
) -> list[tuple[int, int]]:
    """Contiguous (start, stop) row ranges, at most ``cores`` of at least ``min_rows`` rows,
    each cut at the row boundary whose running total of ``weights`` (a row's tokens) is
    nearest its share of the whole: the shards run side by side, so the batch takes as long
    as its heaviest shard (cutting only once the share was reached gave the first shard up to
    a row more: 2-3% of a base-sized encoder's batch time lost waiting for it)."""
    rows = len(weights)
    count = max(1, min(cores, rows // max(1, min_rows)))
    if count == 1:
        return [(0, rows)]
    running = [0, *accumulate(weights)]  # running[i]: the weight of rows [0, i)
    total = running[-1]
    edges = [0]
    for shard in range(1, count):
        share = total * shard / count
        low = edges[-1] + min_rows
        high = rows - (count - shard) * min_rows
        above = min(max(bisect_left(running, share, low, high + 1), low), high)
        # the boundary just below the share when it is nearer (ties keep the one above)
        below_nearer = above > low and share - running[above - 1] < running[above] - share
        edges.append(above - 1 if below_nearer else above)
    edges.append(rows)
    return list(pairwise(edges))


def _blas_controller() -> Any:
    """threadpoolctl's controller when it finds a BLAS library to limit, else None."""
    global _controller
    if _controller is None:
        try:
            import numpy  # noqa: F401  (its BLAS must be loaded to be found)
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controller = False
        else:
            found = ThreadpoolController().select(user_api="blas")
            _controller = found if found.lib_controllers else False
    return _controller or None


def _limit_blas(controller: Any) -> Callable[[], None] | None:
    """Hold BLAS to one thread; the function that restores it, or None where the limit did
    not take. OpenBLAS is held through hal/cpu/_blas (the one count that the cpu backend's
    small products share); another BLAS through threadpoolctl, which lets one thread at a
    time change it: ours always changes it from the same thread, but another may hold it."""
    global _control
    if blas.available():
        if blas.hold():
            return blas.release
        blas.release()
        return None
    if _control is None:
        _control = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipfs-accelerate-blas")
    limiter = _control.submit(controller.limit, limits=1).result()
    control = _control
    if all(lib.get_num_threads() == 1 for lib in controller.lib_controllers):
        return lambda: control.submit(limiter.restore_original_limits).result()
    _control.submit(limiter.restore_original_limits).result()
    return None


def run_sharded(fn: Callable[[int, int], T], bounds: list[tuple[int, int]]) -> list[T]:
    """``fn(start, stop)`` for every shard, at once on a thread pool with BLAS on one thread
    (in order, on this thread, for a single shard or where BLAS cannot be limited)."""
    pool = _enter() if len(bounds) > 1 else None
    if pool is None:
        return [fn(start, stop) for start, stop in bounds]
    futures = [pool.submit(fn, start, stop) for start, stop in bounds[1:]]
    try:
        first = fn(*bounds[0])  # this thread works too
        return [first, *(future.result() for future in futures)]
    finally:
        wait(futures)  # BLAS stays limited until every shard is done, even after an error
        _leave()


def run_longest_first(
    fn: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]],
    lengths: np.ndarray[Any, Any],
    cores: int,
) -> np.ndarray[Any, Any] | None:
    """``fn(rows)`` (``rows``: the indices of one shard's rows in the batch) over row shards
    of a batch whose rows have ``lengths`` tokens, the rows taken longest first: a cut
    between rows of similar lengths splits the tokens evenly, and the shard of short rows is
    padded only to its own longest row. The shards' results (rows along axis 0) come back in
    the batch's order; None where the batch makes one shard (the caller runs it whole)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    bounds = shard_bounds(np.asarray(lengths)[order].tolist(), cores)
    if len(bounds) == 1:
        return None
    results = np.concatenate(run_sharded(lambda start, stop: fn(order[start:stop]), bounds))
    out = np.empty_like(results)
    out[order] = results  # back in the batch's order
    return out


def _enter() -> ThreadPoolExecutor | None:
    """Count a sharded batch in (the first one in limits BLAS): the shard pool, or None where
    BLAS cannot be limited."""
    global _pool, _depth, _limiter
    controller = _blas_controller()
    if controller is None:
        return None
    with _lock:
        if _depth == 0:
            _limiter = _limit_blas(controller)
            if _limiter is None:
                return None
        _depth += 1
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=host_cores(), thread_name_prefix="ipfs-accelerate-shard"
            )
        return _pool


def _leave() -> None:
    """Count a sharded batch out (the last one out restores BLAS)."""
    global _depth, _limiter
    with _lock:
        _depth -= 1
        if _depth == 0:
            assert _limiter is not None
            _limiter()
            _limiter = None
