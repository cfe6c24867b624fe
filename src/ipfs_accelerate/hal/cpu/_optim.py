"""Optimizer updates in place on numpy arrays: no per-op temporaries, cache-sized pieces.

The arithmetic follows torch.optim's single-tensor loops operation for operation, in the same
order, so results equal torch's as the composed updates do. What changes is the memory
traffic: a parameter is updated piece by piece (CHUNK elements), every pass of the update
over one piece before the next, through one scratch piece per thread and dtype that is
reused across pieces, parameters and steps; nothing is allocated per step.

Where a gradient is known to be zero outside some rows (an embedding table's, see
``_rows``), only the rows whose gradient or state can be nonzero take the update; every other
row's exact update is the weight decay alone (AdamW) or nothing (SGD without weight decay),
the same numbers as the full pass gives them.

A big parameter's full pass is shared over the cores (:func:`_shared`): the caller and a
helper thread per further core claim its pieces one at a time, each with its own scratch
piece. Every element goes through the same operations whichever thread takes it (all exactly
rounded: a piece boundary changes no number), so the result is the serial one bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ipfs_accelerate._pools import LazyPool
from ipfs_accelerate.hal._backend import AdamWHyper, SGDHyper, host_cores
from ipfs_accelerate.hal.cpu import _rows
from ipfs_accelerate.hal.cpu._blas import oversubscribed

Array = np.ndarray[Any, Any]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class _Scratch(threading.local):
    def __init__(self) -> None:
        self.buffers: dict[np.dtype[Any], Array] = {}


_SCRATCH = _Scratch()


def _scratch(like: Array) -> Array:
    """A C-contiguous array of ``like``'s shape and dtype, this thread's to overwrite."""
    flat = _SCRATCH.buffers.get(like.dtype)
    if flat is None or flat.size < like.size:
        flat = np.empty(like.size, like.dtype)
        _SCRATCH.buffers[like.dtype] = flat
    return flat[: like.size].reshape(like.shape)


def _writable(*arrays: Array | None) -> bool:
    first = arrays[0]
    assert first is not None
    for a in arrays:
        if a is None:
            continue
        if (
            a.__class__ is not np.ndarray
            or a.dtype != first.dtype
            or a.dtype not in _FLOATS
            or not a.flags.writeable
            or 0 in a.strides  # a broadcast view: one memory cell behind many entries
        ):
            return False
    return True


def adamw_step(
    param: Array,
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    max_exp_avg_sq: Array | None,
    hyper: AdamWHyper,
) -> bool:
    if not _writable(param, exp_avg, exp_avg_sq, max_exp_avg_sq) or grad.dtype != param.dtype:
        return False
    if _shares_memory(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
        return False
    moments = tuple(m for m in (exp_avg, exp_avg_sq, max_exp_avg_sq) if m is not None)
    rows = _sparse_rows(param, grad, moments)
    if rows is not None:
        if hyper.weight_decay:  # every row's, first, as the full update's first pass
            np.multiply(param, 1.0 - hyper.lr * hyper.weight_decay, out=param)
        taken = [None if a is None else a[rows] for a in (param, grad, *moments)]
        p, g, m, v = taken[:4]
        v_max = taken[4] if len(taken) > 4 else None
        undecayed = dataclasses.replace(hyper, weight_decay=0.0)
        _adamw_chunk(p, g, m, v, v_max, _scratch(p), undecayed)
        _put_rows(rows, (param, *moments), (p, m, v, v_max))
        return True
    arrays = (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    _shared(_adamw_piece, arrays, hyper)
    _after_dense(grad, moments)
    return True


def _adamw_piece(piece: tuple[Any, ...], hyper: Any) -> None:
    p, g, m, v, v_max = piece
    _adamw_chunk(p, g, m, v, v_max, _scratch(p), hyper)


def _adamw_chunk(
    param: Array,
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    max_exp_avg_sq: Array | None,
    tmp: Array,
    hyper: AdamWHyper,
) -> None:
    if hyper.weight_decay:
        np.multiply(param, 1.0 - hyper.lr * hyper.weight_decay, out=param)
    np.subtract(grad, exp_avg, out=tmp)  # torch's lerp: m + w * (g - m) for w < 0.5
    tmp *= 1.0 - hyper.beta1
    exp_avg += tmp
    exp_avg_sq *= hyper.beta2
    np.multiply(grad, grad, out=tmp)
    tmp *= 1.0 - hyper.beta2
    exp_avg_sq += tmp
    second = exp_avg_sq
    if max_exp_avg_sq is not None:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second = max_exp_avg_sq
    np.sqrt(second, out=tmp)
    tmp /= math.sqrt(1.0 - hyper.beta2**hyper.step)
    tmp += hyper.eps
    np.divide(exp_avg, tmp, out=tmp)
    tmp *= hyper.lr / (1.0 - hyper.beta1**hyper.step)
    param -= tmp


#: elements per cache-sized piece: the dozen passes of an update over one piece stay in the
#: core's cache instead of streaming the whole parameter through memory a dozen times
CHUNK = 1 << 15


#: elements per piece while the cores share an update: bigger than :data:`CHUNK`, since each
#: ufunc call takes the GIL (a dozen per piece) and with small pieces the threads queue for it.
#: Measured on the quiet 2-core machine, AdamW over the 3 x 1024 MLP's 2.1M parameters (two
#: threads, each a contiguous half of the pieces): 4.6-5.1 ms on one thread; shared in 32K
#: pieces 5.8 ms, 128K 3.6-3.9, 256K 3.37, 512K 3.75
SHARED_CHUNK = 1 << 18

#: the fewest elements a parameter needs for its update to be shared over the cores: two
#: whole pieces (below, one thread takes the whole update, in CHUNK pieces)
SHARE_MIN = 2 * SHARED_CHUNK

#: the process's optimizer threads (one per core beyond the caller's), started once
_HELPERS = LazyPool(lambda: host_cores() - 1, "ia-optim")


def _helpers() -> ThreadPoolExecutor:
    return _HELPERS.get()


def _shared(
    update: Callable[[tuple[Any, ...], Any], None],
    arrays: tuple[Array | None, ...],
    hyper: Any,
) -> None:
    """``update(piece, hyper)`` over every piece of the arrays. Where they are big and
    C-contiguous enough (and the cores are not already oversubscribed), the helper threads
    share the pieces: caller and helpers each claim the next piece left until none is, so
    a helper that a busy core keeps waiting takes fewer pieces (or none) instead of holding
    the caller up with a fixed share."""
    first = arrays[0]
    assert first is not None
    if (
        first.size < SHARE_MIN
        or host_cores() < 2
        or not all(a is None or a.flags.c_contiguous for a in arrays)
        or oversubscribed()
    ):
        for piece in _chunks(arrays, CHUNK):
            update(piece, hyper)
        return
    job = _Job(update, _chunks(arrays, SHARED_CHUNK), hyper)
    pool = _helpers()
    for _ in range(min(host_cores(), len(job.pieces)) - 1):
        try:
            pool.submit(job.help)
        except RuntimeError:  # the interpreter is shutting down: the caller takes them all
            break
    job.work()


class _Job:
    """One update's pieces, claimed one at a time by the caller and the helper threads."""

    __slots__ = ("_active", "_closed", "_error", "_idle", "_lock", "_next", "hyper", "pieces",
                 "update")  # fmt: skip

    def __init__(
        self,
        update: Callable[[tuple[Any, ...], Any], None],
        pieces: list[tuple[Any, ...]],
        hyper: Any,
    ) -> None:
        self.update = update
        self.pieces = pieces
        self.hyper = hyper
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._next = 0
        self._active = 0  # helpers inside _run
        self._closed = False  # the caller has returned or is about to: no helper may start
        self._error: BaseException | None = None

    def _claim(self) -> tuple[Any, ...] | None:
        with self._lock:
            if self._next >= len(self.pieces) or self._error is not None:
                return None
            self._next += 1
            return self.pieces[self._next - 1]

    def _run(self, caller: bool = False) -> None:
        while (piece := self._claim()) is not None:
            if caller and not self._active:
                # no helper running (yet: a busy core may keep it waiting): cache-sized
                # pieces, as the serial pass, which big pieces would only slow down here
                for part in _chunks(piece, CHUNK):
                    self.update(part, self.hyper)
            else:
                self.update(piece, self.hyper)

    def help(self) -> None:
        """A helper thread's share (none, if the caller finished every piece first)."""
        with self._lock:
            if self._closed:
                return
            self._active += 1
        try:
            self._run()
        except BaseException as error:  # handed to the caller, which raises it
            with self._lock:
                self._error = error
        finally:
            with self._lock:
                self._active -= 1
                self._idle.notify_all()

    def work(self) -> None:
        """The caller's share; returns once no helper still writes into the arrays."""
        try:
            self._run(caller=True)
        finally:
            with self._lock:
                self._closed = True
                while self._active:
                    self._idle.wait()
        if self._error is not None:
            raise self._error


def _chunks(arrays: tuple[Array | None, ...], chunk: int) -> list[tuple[Any, ...]]:
    """The arrays cut into matching flat pieces of ``chunk`` elements (whole, where one is not
    C-contiguous and so has no flat view to cut)."""
    size = arrays[0].size if arrays[0] is not None else 0
    if size <= chunk or not all(a is None or a.flags.c_contiguous for a in arrays):
        return [arrays]
    flat = [None if a is None else a.reshape(-1) for a in arrays]
    return [
        tuple(None if a is None else a[start : start + chunk] for a in flat)
        for start in range(0, size, chunk)
    ]


def sgd_step(param: Array, grad: Array, buffer: Array | None, hyper: SGDHyper) -> bool:
    if not _writable(param, buffer) or grad.dtype != param.dtype:
        return False
    if _shares_memory(param, grad, buffer):
        return False
    moments = () if buffer is None else (buffer,)
    # with weight decay every row's direction is nonzero: no rows to leave alone
    rows = None if hyper.weight_decay else _sparse_rows(param, grad, moments)
    if rows is not None:
        p, g = param[rows], grad[rows]
        b = None if buffer is None else buffer[rows]
        _sgd_chunk(p, g, b, _scratch(p), hyper)
        _put_rows(rows, (param, *moments), (p, b))
        return True
    _shared(_sgd_piece, (param, grad, buffer), hyper)
    _after_dense(grad, moments)
    return True


def _sgd_piece(piece: tuple[Any, ...], hyper: Any) -> None:
    p, g, b = piece
    _sgd_chunk(p, g, b, _scratch(p), hyper)


def _sgd_chunk(
    param: Array, grad: Array, buffer: Array | None, tmp: Array, hyper: SGDHyper
) -> None:
    direction = grad
    if hyper.weight_decay:
        np.multiply(param, hyper.weight_decay, out=tmp)
        tmp += grad
        direction = tmp
    if buffer is not None:
        if hyper.first_step:
            np.copyto(buffer, direction)
        else:
            buffer *= hyper.momentum
            if hyper.dampening:
                np.multiply(direction, 1.0 - hyper.dampening, out=tmp)
                buffer += tmp
            else:
                buffer += direction
        if hyper.nesterov:  # dampening is 0 here, so tmp still holds the direction
            if direction is grad:
                np.copyto(tmp, grad)
            tmp += buffer * hyper.momentum
            direction = tmp
        else:
            direction = buffer
    np.multiply(direction, hyper.lr, out=tmp)
    param -= tmp


#: the largest share of a parameter's rows that the row kernels update by gathering them; past
#: it one pass over the whole parameter costs less than gathering and scattering the rows
ROW_SHARE = 0.25


def _sparse_rows(param: Array, grad: Array, moments: tuple[Array, ...]) -> Array | None:
    """The rows (sorted) whose gradient or optimizer state may be nonzero, where ``grad`` is
    known to be zero outside some rows and those are few enough; else None (the full pass)."""
    marked = _rows.marked_rows(grad)
    if marked is None or param.ndim == 0 or grad.shape != param.shape:
        return None
    rows = marked
    if moments:
        rows = np.union1d(_rows.active_rows(*moments), marked)
    if rows.size > ROW_SHARE * param.shape[0]:
        _rows.set_active_rows(rows, *moments)  # what the full pass leaves nonzero
        return None
    return rows


def _put_rows(rows: Array, arrays: tuple[Array, ...], values: tuple[Array | None, ...]) -> None:
    """Write the updated rows back; the moments' nonzero rows are now ``rows``."""
    for array, value in zip(arrays, values, strict=False):
        if value is not None:
            array[rows] = value
    _rows.set_active_rows(rows, *arrays[1:])


def _after_dense(grad: Array, moments: tuple[Array, ...]) -> None:
    """After a full pass from a gradient without marked rows, the moments' rows recorded as
    the only nonzero ones no longer are."""
    if _rows.marked_rows(grad) is None:
        _rows.forget_active_rows(*moments)


def _shares_memory(*arrays: Array | None) -> bool:
    """Whether two of the arrays overlap (an in-place write would change the other's input)."""
    present = [a for a in arrays if a is not None]
    # bounds only (cheap): parameters interleaved in one buffer are refused, never wrong
    return any(np.may_share_memory(a, b) for i, a in enumerate(present) for b in present[i + 1 :])
