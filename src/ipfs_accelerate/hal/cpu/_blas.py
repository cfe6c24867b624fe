"""OpenBLAS held to one thread: around small matrix products, and while sharded batches run.

OpenBLAS splits a product over its thread pool even when the product takes well under a
millisecond on one core. Waking the pool costs tens of microseconds on an idle machine; on a
loaded one a worker waits for a core, the product waits for the worker, and the woken
workers spin afterwards on the cores the caller needs. Measured on a loaded 2-core machine:
a (192 x 384) @ (384 x 1536) product took 23 ms on 2 threads and 1.4 ms on one (a MiniLM
backward pass: 683 ms against 184 ms). Products below :data:`SMALL_PRODUCT_MACS`
multiply-adds therefore run on one thread; bigger ones, where a second core pays, keep the
pool, unless the machine is oversubscribed (a 1-minute load average above
:data:`OVERSUBSCRIBED` times the cores this process may use, read at most once a second):
then no product gains from waking workers that wait for a core, and all run on one thread
(a 3 x 1024 MLP step at batch 256 on a 2-core machine at load 16: 200 ms with the pool, 110
ms without).

The thread count is process-wide, so every change goes through one depth count: the first
holder sets one thread, the last one out restores the count it found.
``models/_parallel`` (row shards on a thread pool) holds it the same way. The library's own
``openblas_set_num_threads`` is called directly (threadpoolctl only lets the first Python
thread that changed it change it again, and small products run on any thread); lowering
and restoring the count never starts or stops OpenBLAS's threads, and a product reads the
count once as it starts, so a change while another thread multiplies is safe. Where numpy's
BLAS is not OpenBLAS, nothing is held (:func:`available` is False).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any

from ipfs_accelerate.hal._backend import host_cores

__all__ = [
    "OVERSUBSCRIBED",
    "SMALL_PRODUCT_MACS",
    "available",
    "hold",
    "one_thread_for",
    "oversubscribed",
    "release",
]

#: products with fewer multiply-adds than this (about 0.1 ms on one core: per-head attention
#: products, a short sentence's projections) run on one BLAS thread; bigger ones keep the
#: pool. Measured on the quiet 2-core machine against 2^20, 2^24 and 2^27 (the first choice,
#: made under load): a MiniLM training step on 16 sentences 244 / 256 / 287 ms at 2^20 /
#: 2^24 / 2^27 and 239-251 ms here; one-sentence MiniLM inference 89 sent/s here, 72 at 2^27
SMALL_PRODUCT_MACS = 1 << 22

#: load average per usable core above which every product runs on one thread
OVERSUBSCRIBED = 1.5

#: seconds a load reading is reused
_LOAD_TTL = 1.0
_load_checked = -_LOAD_TTL
_load_high = False

_lock = threading.Lock()
_depth = 0
_restore: list[int] = []
_found: list[tuple[Any, Any]] | None = None


def _libraries() -> list[tuple[Any, Any]]:
    """(get, set) of every OpenBLAS numpy loaded (found once, by threadpoolctl)."""
    global _found
    if _found is None:
        found: list[tuple[Any, Any]] = []
        try:
            import numpy  # noqa: F401  (its BLAS must be loaded to be found)
            from threadpoolctl import threadpool_info
        except ImportError:
            _found = found
            return found
        for info in threadpool_info():
            if info.get("internal_api") != "openblas" or info.get("threading_layer") == "openmp":
                continue
            pair = _symbols(info["filepath"])
            if pair is not None:
                found.append(pair)
        _found = found
    return _found


def _symbols(path: str) -> tuple[Any, Any] | None:
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return None
    # OpenBLAS builds rename their symbols (scipy-openblas: prefix scipy_, suffix 64_)
    for prefix in ("", "scipy_"):
        for suffix in ("", "64_"):
            get = getattr(library, f"{prefix}openblas_get_num_threads{suffix}", None)
            put = getattr(library, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                get.argtypes = []
                put.restype = None
                put.argtypes = [ctypes.c_int]
                return get, put
    return None


def available() -> bool:
    """Whether numpy's BLAS is an OpenBLAS whose thread count can be held here."""
    return bool(_libraries())


def hold() -> bool:
    """Count a holder in; the first one in sets one thread. True when BLAS runs on one
    thread until the matching :func:`release` (call it whatever this returns)."""
    global _depth
    libraries = _libraries()
    with _lock:
        if _depth == 0:
            _restore.clear()
            for get, put in libraries:
                count = int(get())
                _restore.append(count)
                if count != 1:
                    put(1)
        _depth += 1
        return bool(libraries)


def release() -> None:
    """Count a holder out; the last one out restores the counts the first one found."""
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0:
            for (_, put), count in zip(_libraries(), _restore, strict=True):
                if count != 1:
                    put(count)
            _restore.clear()


class _OneThread:
    """Holds BLAS to one thread for a ``with`` block (re-entrant, any thread)."""

    __slots__ = ()

    def __enter__(self) -> None:
        hold()

    def __exit__(self, *exc: object) -> None:
        release()


class _Unchanged:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_ONE_THREAD = _OneThread()
_UNCHANGED = _Unchanged()


def one_thread_for(macs: int) -> _OneThread | _Unchanged:
    """A context for a product of ``macs`` multiply-adds: one BLAS thread when it is small
    and the thread count can be held, else nothing changes."""
    if (macs < SMALL_PRODUCT_MACS or oversubscribed()) and _libraries():
        return _ONE_THREAD
    return _UNCHANGED


def oversubscribed() -> bool:
    """Whether more threads want to run than this process has cores for (see the module)."""
    global _load_checked, _load_high
    now = time.monotonic()
    if now - _load_checked >= _LOAD_TTL:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not reported here
            load = 0.0
        _load_high = load > OVERSUBSCRIBED * host_cores()
        _load_checked = now
    return _load_high
