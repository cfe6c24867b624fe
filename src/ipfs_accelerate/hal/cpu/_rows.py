"""Which rows of a host array may be nonzero, where that is known without reading it.

An embedding table's gradient is its lookups' rows scattered into zeros: a batch of a few
hundred tokens gives a 30,522-row table a gradient that is zero outside a few hundred rows.
AdamW's exact update of a row whose gradient and moments are all zero is the weight decay
alone, so the optimizer's kernels (``_optim.adamw_rows``, ``_optim.sgd_rows``) run the full
update over the rows that can be nonzero and one multiply over the rest, instead of reading
and writing the parameter, the gradient and both moments in full every step.

Two facts are kept, each for one host buffer, by its identity and only while it has seen no
in-place write through the op set (its version, ``tensor._autograd.version_of``):

* a gradient's *marked* rows: ``index_add`` into a table of zeros wrote those rows only;
* a moment buffer's *active* rows: the rows the row kernels have updated since the buffer was
  made; all its other rows are still zero. A buffer nobody has recorded is scanned once.

Memory written outside the op set (an array from ``Tensor.numpy()`` written in place) is not
seen, as torch's version counters do not see it either.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import numpy as np

__all__ = [
    "active_rows",
    "forget_active_rows",
    "mark_rows",
    "mark_sum",
    "marked_rows",
    "set_active_rows",
]

Array = np.ndarray[Any, Any]

#: id(buffer) -> (rows, the buffer's version when they were recorded)
_MARKED: dict[int, tuple[Array, int]] = {}
_ACTIVE: dict[int, tuple[Array, int]] = {}


def _version(array: Array) -> int:
    from ipfs_accelerate.tensor._autograd import _BUFFER_VERSIONS

    return _BUFFER_VERSIONS.get(id(array), 0)


def _owner(array: Array) -> bool:
    """Whether ``array`` owns its memory (a view would share its buffer's record)."""
    return array.base is None and array.ndim >= 1 and array.flags.c_contiguous


def _remember(table: dict[int, tuple[Array, int]], array: Array, rows: Array) -> None:
    key = id(array)
    if key not in table:
        weakref.finalize(array, table.pop, key, None)  # ids are reused once freed
    table[key] = (rows, _version(array))


def _recall(table: dict[int, tuple[Array, int]], array: Array) -> Array | None:
    if not _owner(array):
        return None
    found = table.get(id(array))
    if found is None or found[1] != _version(array):
        return None
    return found[0]


def mark_rows(array: Array, rows: Array) -> None:
    """Record that ``array`` (which owns its memory) is zero outside ``rows`` (sorted,
    unique indices along axis 0)."""
    if _owner(array):
        _remember(_MARKED, array, rows)


def marked_rows(array: Array) -> Array | None:
    """The rows outside which ``array`` is known to be zero, or None."""
    return _recall(_MARKED, array)


def mark_sum(out: Array, terms: tuple[Array, ...]) -> None:
    """``out`` was just written with the sum of ``terms`` (``out`` may be one of them): its
    rows are the union of the terms' where every term's are known, else it has no mark."""
    if not _MARKED:
        return
    found = [
        _recall(_MARKED, t) if isinstance(t, np.ndarray) and t.shape == out.shape else None
        for t in terms
    ]
    rows = None
    if all(r is not None for r in found):
        rows = functools.reduce(np.union1d, found)  # type: ignore[arg-type]
    if rows is None or not _owner(out):
        _MARKED.pop(id(out), None)
    else:
        _remember(_MARKED, out, rows)


def active_rows(*moments: Array) -> Array:
    """The rows of the moment buffers (same shape) that may be nonzero: recorded by
    :func:`set_active_rows`, or found by reading them once."""
    recorded = [_recall(_ACTIVE, m) for m in moments]
    if all(r is not None for r in recorded) and len({id(r) for r in recorded}) == 1:
        first = recorded[0]
        assert first is not None
        return first
    nonzero = np.zeros(moments[0].shape[0], dtype=bool)
    for m in moments:
        flat = m.reshape(m.shape[0], -1)
        nonzero |= np.any(flat != 0, axis=1)  # NaN != 0 too
    return np.flatnonzero(nonzero)


def set_active_rows(rows: Array, *moments: Array) -> None:
    """Record that the moment buffers are zero outside ``rows``."""
    for m in moments:
        if _owner(m):
            _remember(_ACTIVE, m, rows)


def forget_active_rows(*moments: Array) -> None:
    """Drop what was recorded of the moment buffers (a full update wrote every row)."""
    for m in moments:
        _ACTIVE.pop(id(m), None)
