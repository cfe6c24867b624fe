"""Shape and data-movement ops: reshape, transpose, broadcast, concat, split, slice, gather,
pad, indexing, device and dtype conversion."""

from __future__ import annotations

import builtins
import itertools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ipfs_accelerate.errors import (
    AutogradError,
    AxisError,
    DtypeError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    ShapeError,
    UnsupportedOpError,
)
from ipfs_accelerate.ops._core import (
    Shape,
    as_tensor,
    broadcast_shapes,
    cast_to,
    describe,
    normalize_axis,
    promote,
    run,
    same_backend,
)
from ipfs_accelerate.tensor._autograd import bump_version, is_grad_enabled
from ipfs_accelerate.tensor._autograd import record as _record
from ipfs_accelerate.tensor._dtype import DType, bool_, int32, int64
from ipfs_accelerate.tensor._tensor import Tensor

__all__ = [
    "astype",
    "broadcast_to",
    "clone",
    "concat",
    "contiguous",
    "copy_",
    "embedding",
    "expand",
    "flatten",
    "gather",
    "getitem",
    "index_add",
    "matrix_transpose",
    "pad",
    "permute",
    "reshape",
    "setitem",
    "slice",
    "split",
    "squeeze",
    "stack",
    "swapaxes",
    "to_device",
    "transpose",
    "unsqueeze",
]


def _ints(values: Any, op: str, what: str) -> tuple[int, ...]:
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        return (int(values),)
    try:
        items = tuple(values)
    except TypeError:
        raise InvalidArgumentError(
            f"{op}: {what} must be an int or a sequence of ints, got {values!r}"
        ) from None
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise InvalidArgumentError(f"{op}: {what} {items!r} contains a non-integer {v!r}")
    return tuple(int(v) for v in items)


# ----------------------------------------------------------------------------- reshape family


def reshape(x: Any, shape: Any) -> Tensor:
    """The same elements (row-major order) in a new shape; one dimension may be -1 (inferred)."""
    x = as_tensor(x, op="reshape")
    dims = _ints(shape, "reshape", "shape")
    if dims == x.shape:
        return x
    unknown = [i for i, d in enumerate(dims) if d == -1]
    if len(unknown) > 1 or builtins.any(d < -1 for d in dims):
        raise ShapeError(
            f"reshape: invalid target shape {dims} (at most one -1, no other negatives)"
        )
    if unknown:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or x.size % known:
            raise ShapeError(
                f"reshape: cannot reshape {describe(x)} ({x.size} elements) into {dims}"
            )
        dims = tuple(x.size // known if d == -1 else d for d in dims)
    if math.prod(dims) != x.size:
        raise ShapeError(f"reshape: cannot reshape {describe(x)} ({x.size} elements) into {dims}")
    return run(x._backend, "reshape", (x, dims), dims, x.dtype)


def flatten(x: Any, start_axis: int = 0, end_axis: int = -1) -> Tensor:
    """Merge axes ``start_axis..end_axis`` (inclusive) into one."""
    x = as_tensor(x, op="flatten")
    if x.ndim == 0:
        return reshape(x, (1,))
    s = normalize_axis(start_axis, x.ndim, "flatten")
    e = normalize_axis(end_axis, x.ndim, "flatten")
    if s > e:
        raise AxisError(f"flatten: start_axis {start_axis} comes after end_axis {end_axis}")
    return reshape(x, (*x.shape[:s], math.prod(x.shape[s : e + 1]), *x.shape[e + 1 :]))


def permute(x: Any, axes: Sequence[int]) -> Tensor:
    """Reorder the axes: output axis i is input axis ``axes[i]`` (negative axes allowed)."""
    x = as_tensor(x, op="permute")
    order = tuple(normalize_axis(a, x.ndim, "permute") for a in _ints(axes, "permute", "axes"))
    if sorted(order) != list(range(x.ndim)):
        raise AxisError(
            f"permute: axes {tuple(axes)} "
            f"are not a permutation of the {x.ndim} axes of {describe(x)}"
        )
    if order == tuple(range(x.ndim)):
        return x
    shape = tuple(x.shape[a] for a in order)
    return run(x._backend, "permute", (x, order), shape, x.dtype)


def transpose(x: Any, axes: Sequence[int] | None = None) -> Tensor:
    """numpy's transpose: reverse the axes, or permute them by ``axes``."""
    x = as_tensor(x, op="transpose")
    if axes is None:
        return permute(x, tuple(range(x.ndim - 1, -1, -1)))
    return permute(x, axes)


def swapaxes(x: Any, axis1: int, axis2: int) -> Tensor:
    x = as_tensor(x, op="swapaxes")
    a = normalize_axis(axis1, x.ndim, "swapaxes")
    b = normalize_axis(axis2, x.ndim, "swapaxes")
    order = list(range(x.ndim))
    order[a], order[b] = order[b], order[a]
    return permute(x, order)


def matrix_transpose(x: Any) -> Tensor:
    """Swap the last two axes (a stack of matrices transposed)."""
    x = as_tensor(x, op="matrix_transpose")
    if x.ndim < 2:
        raise ShapeError(f"matrix_transpose: needs at least 2 dimensions, got {describe(x)}")
    return swapaxes(x, -1, -2)


def broadcast_to(x: Any, shape: Any) -> Tensor:
    """numpy's broadcast_to: ``x`` repeated along size-1 and new leading axes to ``shape``."""
    x = as_tensor(x, op="broadcast_to")
    dims = _ints(shape, "broadcast_to", "shape")
    if builtins.any(d < 0 for d in dims):
        raise ShapeError(f"broadcast_to: negative dimension in {dims}")
    if dims == x.shape:
        return x
    if len(dims) < x.ndim or broadcast_shapes(x.shape, dims, "broadcast_to") != dims:
        raise ShapeError(f"broadcast_to: cannot broadcast {describe(x)} to shape {dims}")
    return run(x._backend, "broadcast_to", (x, dims), dims, x.dtype)


def expand(x: Any, shape: Any) -> Tensor:
    """PyTorch's expand: like broadcast_to, where -1 keeps the input's size for that axis."""
    x = as_tensor(x, op="expand")
    dims = list(_ints(shape, "expand", "shape"))
    lead = len(dims) - x.ndim
    if lead < 0:
        raise ShapeError(f"expand: target {tuple(dims)} has fewer dimensions than {describe(x)}")
    for i, d in enumerate(dims):
        if d == -1:
            if i < lead:
                raise ShapeError(
                    f"expand: -1 is not allowed for the new leading dimension {i} in {tuple(dims)}"
                )
            dims[i] = x.shape[i - lead]
    return broadcast_to(x, dims)


def squeeze(x: Any, axis: Any = None) -> Tensor:
    """Remove size-1 axes (all of them, or those named; naming a larger axis raises)."""
    x = as_tensor(x, op="squeeze")
    if axis is None:
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    else:
        axes = tuple(
            sorted({normalize_axis(a, x.ndim, "squeeze") for a in _ints(axis, "squeeze", "axis")})
        )
        for a in axes:
            if x.shape[a] != 1:
                raise ShapeError(f"squeeze: axis {a} of {describe(x)} has size {x.shape[a]}, not 1")
    return reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes))


def unsqueeze(x: Any, axis: Any) -> Tensor:
    """Insert size-1 axes at the given positions of the result (numpy's expand_dims)."""
    x = as_tensor(x, op="unsqueeze")
    positions = _ints(axis, "unsqueeze", "axis")
    out_ndim = x.ndim + len(positions)
    axes = {normalize_axis(a, out_ndim, "unsqueeze") for a in positions}
    if len(axes) != len(positions):
        raise AxisError(f"unsqueeze: repeated axis in {positions}")
    dims = iter(x.shape)
    return reshape(x, tuple(1 if i in axes else next(dims) for i in range(out_ndim)))


# ----------------------------------------------------------------------------- joining, splitting


def concat(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (dtypes promote; other dimensions must match)."""
    items = _tensor_list(tensors, "concat")
    backend = same_backend("concat", items)
    ndim = items[0].ndim
    if ndim == 0:
        raise ShapeError("concat: zero-dimensional tensors cannot be concatenated (use stack)")
    ax = normalize_axis(axis, ndim, "concat")
    for t in items[1:]:
        if t.ndim != ndim or builtins.any(
            t.shape[i] != items[0].shape[i] for i in range(ndim) if i != ax
        ):
            raise ShapeError(
                f"concat: all shapes must match except along axis {ax}; got "
                + ", ".join(str(i.shape) for i in items)
            )
    dtype = (
        items[0].dtype
        if builtins.all(t.dtype is items[0].dtype for t in items)
        else promote("concat", *items)
    )
    items = [cast_to(t, dtype) for t in items]
    shape = (
        *items[0].shape[:ax],
        builtins.sum(t.shape[ax] for t in items),
        *items[0].shape[ax + 1 :],
    )
    if len(items) == 1:
        return run(backend, "copy", (items[0],), shape, dtype)
    return run(backend, "concat", (items, ax), shape, dtype)


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join same-shaped tensors along a new axis."""
    items = _tensor_list(tensors, "stack")
    for t in items[1:]:
        if t.shape != items[0].shape:
            raise ShapeError(
                "stack: all tensors must have the same shape; got "
                + ", ".join(str(i.shape) for i in items)
            )
    ax = normalize_axis(axis, items[0].ndim + 1, "stack")
    return concat([unsqueeze(t, ax) for t in items], ax)


def _tensor_list(tensors: Any, op: str) -> list[Tensor]:
    if isinstance(tensors, Tensor):
        raise InvalidArgumentError(f"{op}: expected a sequence of tensors, got a single Tensor")
    items = list(tensors)
    if not items:
        raise InvalidArgumentError(f"{op}: needs at least one tensor")
    like = next((t for t in items if isinstance(t, Tensor)), None)
    return [as_tensor(t, op=op, like=like) for t in items]


def split(
    x: Any, indices_or_sections: Any = None, axis: int = 0, *, sizes: Sequence[int] | None = None
) -> list[Tensor]:
    """Split along ``axis``: into N equal parts (an int, which must divide the axis), at the
    given indices (a sequence, numpy's meaning), or into pieces of the given ``sizes``."""
    x = as_tensor(x, op="split")
    if x.ndim == 0:
        raise ShapeError("split: cannot split a 0-d tensor")
    ax = normalize_axis(axis, x.ndim, "split")
    n = x.shape[ax]
    if sizes is not None:
        if indices_or_sections is not None:
            raise InvalidArgumentError("split: give either indices_or_sections or sizes, not both")
        parts = _ints(sizes, "split", "sizes")
        if builtins.any(p < 0 for p in parts) or builtins.sum(parts) != n:
            raise ShapeError(
                f"split: sizes {parts} must be non-negative and sum to {n} "
                f"(axis {ax} of {describe(x)})"
            )
        bounds = list(np.cumsum((0, *parts)))
    elif isinstance(indices_or_sections, numbers.Integral) and not isinstance(
        indices_or_sections, bool
    ):
        sections = int(indices_or_sections)
        if sections <= 0 or n % sections:
            raise ShapeError(
                f"split: {sections} sections do not divide axis {ax} of size {n} equally"
            )
        step = n // sections
        bounds = list(range(0, n + 1, step)) if step else [0] * (sections + 1)
    elif indices_or_sections is not None:
        points = [
            builtins.min(builtins.max(p + n if p < 0 else p, 0), n)
            for p in _ints(indices_or_sections, "split", "indices")
        ]
        bounds = [0, *points, n]
    else:
        raise InvalidArgumentError("split: give indices_or_sections or sizes")
    out = []
    for start, stop in itertools.pairwise(bounds):
        size = builtins.max(0, int(stop) - int(start))
        starts = tuple(int(start) if i == ax else 0 for i in range(x.ndim))
        dims = tuple(size if i == ax else d for i, d in enumerate(x.shape))
        out.append(_slice(x, starts, (1,) * x.ndim, dims))
    return out


def _slice(x: Tensor, starts: Shape, steps: Shape, sizes: Shape) -> Tensor:
    # a full-size selection is the identity only when it also starts at 0 and steps by 1
    # (x[:, ::-1] has the full size but reverses the axis)
    if sizes == x.shape and not any(starts) and all(step == 1 for step in steps):
        return x
    return run(x._backend, "slice", (x, starts, steps, sizes), sizes, x.dtype)


def slice(
    x: Any,
    starts: Sequence[int] | int,
    stops: Sequence[int | None] | int | None,
    steps: Sequence[int] | int | None = None,
    axes: Sequence[int] | int | None = None,
) -> Tensor:
    """Python-slice semantics per axis: ``x[starts[i]:stops[i]:steps[i]]`` along ``axes[i]``
    (default: the first len(starts) axes). Out-of-range bounds clamp as in Python."""
    x = as_tensor(x, op="slice")
    start_list = _ints(starts, "slice", "starts")
    stop_list = (stops,) if stops is None or isinstance(stops, int) else tuple(stops)
    step_list = (1,) * len(start_list) if steps is None else _ints(steps, "slice", "steps")
    axis_list = tuple(range(len(start_list))) if axes is None else _ints(axes, "slice", "axes")
    if not len(start_list) == len(stop_list) == len(step_list) == len(axis_list):
        raise InvalidArgumentError("slice: starts, stops, steps and axes must have the same length")
    key: list[Any] = [builtins.slice(None)] * x.ndim
    for a, s, e, st in zip(axis_list, start_list, stop_list, step_list, strict=True):
        ax = normalize_axis(a, x.ndim, "slice")
        if st == 0:
            raise InvalidArgumentError("slice: step must not be zero")
        key[ax] = builtins.slice(s, e, st)
    return getitem(x, tuple(key))


# ----------------------------------------------------------------------------- gather, pad


def gather(x: Any, indices: Any, axis: int = 0) -> Tensor:
    """numpy's ``take``: pick entries along ``axis`` by integer ``indices`` (any shape);
    negative indices count from the end; an out-of-range index raises IndexOutOfRangeError."""
    x = as_tensor(x, op="gather")
    idx = as_tensor(indices, op="gather", like=x)
    same_backend("gather", (x, idx))
    if idx.dtype not in (int32, int64):
        if idx.dtype.is_integer:
            idx = cast_to(idx, int64)
        else:
            raise DtypeError(f"gather: indices must be integers, got {describe(idx)}")
    if x.ndim == 0:
        raise ShapeError("gather: cannot gather from a 0-d tensor")
    ax = normalize_axis(axis, x.ndim, "gather")
    if x.shape[ax] == 0 and idx.size:
        raise IndexOutOfRangeError(f"gather: axis {ax} of {describe(x)} is empty")
    shape = (*x.shape[:ax], *idx.shape, *x.shape[ax + 1 :])
    return run(x._backend, "gather", (x, idx, ax), shape, x.dtype)


def index_add(x: Any, axis: int, indices: Any, source: Any) -> Tensor:
    """``x`` plus ``source`` scattered along ``axis`` by ``indices`` (torch's ``index_add``
    generalised to indices of any shape; repeated indices add up): the adjoint of
    :func:`gather`. ``source`` has shape ``x.shape[:axis] + indices.shape + x.shape[axis+1:]``;
    indices must be in ``[0, n)``."""
    x = as_tensor(x, op="index_add")
    idx = as_tensor(indices, op="index_add", like=x)
    src = as_tensor(source, op="index_add", like=x)
    backend = same_backend("index_add", (x, idx, src))
    if not idx.dtype.is_integer:
        raise DtypeError(f"index_add: indices must be integers, got {describe(idx)}")
    if idx.dtype not in (int32, int64):
        idx = cast_to(idx, int64)
    if x.ndim == 0:
        raise ShapeError("index_add: cannot scatter into a 0-d tensor")
    ax = normalize_axis(axis, x.ndim, "index_add")
    expected = (*x.shape[:ax], *idx.shape, *x.shape[ax + 1 :])
    if src.shape != expected:
        raise ShapeError(
            f"index_add: source {describe(src)} must have shape {expected} for indices "
            f"{idx.shape} along axis {ax} of {describe(x)}"
        )
    _check_non_negative_on_host(idx, x.shape[ax], "index_add")
    src = cast_to(src, x.dtype)
    if "index_add" in backend.fused:
        return run(backend, "index_add", (x, ax, idx, src), x.shape, x.dtype)
    return _index_add_composed(x, ax, idx, src)


def _index_add_composed(x: Tensor, axis: int, idx: Tensor, src: Tensor) -> Tensor:
    # a one-hot (n, len(indices)) matrix times the source rows: one matmul on any backend
    from ipfs_accelerate.ops._elementwise import add, equal
    from ipfs_accelerate.ops._nn import matmul
    from ipfs_accelerate.tensor._creation import arange

    n = x.shape[axis]
    outer, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1 :])
    flat = reshape(idx, (1, idx.size))
    if idx.size:
        # an id off the table would match no row of the one-hot and drop silently: look the
        # ids up in [0, n) (gather raises at readback for >= n) and at id - n (for < 0);
        # both give the id back when it is in range, and the product depends on both
        ids = arange(n, dtype=flat.dtype, device=x.device)
        from ipfs_accelerate.ops._elementwise import sub

        flat = sub(add(gather(ids, flat, axis=0), gather(ids, sub(flat, n), axis=0)), flat)
    onehot = astype(equal(flat, reshape(arange(n, device=x.device), (n, 1))), x.dtype)
    rows = reshape(src, (outer, idx.size, inner))
    spread = reshape(matmul(onehot, rows), x.shape)
    return add(x, spread)


def embedding(indices: Any, weight: Any, padding_idx: int | None = None) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``indices``: shape
    ``indices.shape + (dim,)``; an id outside ``[0, num_embeddings)`` raises. As PyTorch, the
    row ``padding_idx`` (negative counts from the end) is looked up as any other but gets no
    gradient."""
    weight = as_tensor(weight, op="embedding")
    if weight.ndim != 2:
        raise ShapeError(
            f"embedding: weight must be 2-D (num_embeddings, dim), got {describe(weight)}"
        )
    idx = as_tensor(indices, op="embedding", like=weight)
    _check_non_negative_on_host(idx, weight.shape[0], "embedding")
    rows = gather(weight, idx, axis=0)
    if padding_idx is None or not rows._requires_grad:
        return rows
    from ipfs_accelerate.ops._elementwise import equal, where

    pad = normalize_axis(padding_idx, weight.shape[0], "embedding padding_idx")
    # the same values, the padding rows taken from a detached copy: no gradient reaches them
    return where(unsqueeze(equal(idx, pad), -1), rows.detach(), rows)


def _check_non_negative_on_host(idx: Tensor, n: int, op: str) -> None:
    # negative ids are a bug in an embedding lookup (numpy's take would wrap them); the check
    # reads the ids only when they already live on the host
    if idx.device == "cpu" and idx.size and (idx.dtype.is_integer):
        values = idx.numpy()
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= n:
            bad = low if low < 0 else high
            raise IndexOutOfRangeError(f"{op}: id {bad} is out of range for {n} embeddings")


def pad(x: Any, pad_width: Any, mode: str = "constant", value: bool | int | float = 0) -> Tensor:
    """numpy's pad: ``pad_width`` is an int, a (before, after) pair, or one pair per axis;
    ``mode`` is "constant" (with ``value``), "edge" or "reflect"."""
    x = as_tensor(x, op="pad")
    if mode not in ("constant", "edge", "reflect"):
        raise InvalidArgumentError(
            f"pad: mode must be 'constant', 'edge' or 'reflect', got {mode!r}"
        )
    try:
        widths = np.broadcast_to(np.asarray(pad_width, dtype=object), (x.ndim, 2))
    except ValueError:
        raise ShapeError(
            f"pad: pad_width {pad_width!r} does not fit {describe(x)} "
            "(need one (before, after) pair per axis)"
        ) from None
    pads = []
    for axis, (before, after) in enumerate(widths.tolist()):
        for v in (before, after):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise InvalidArgumentError(
                    f"pad: widths must be non-negative ints, got {pad_width!r}"
                )
        if mode != "constant" and (before or after) and x.shape[axis] == 0:
            raise ShapeError(
                f"pad: mode {mode!r} cannot pad the empty axis {axis} of {describe(x)}"
            )
        if mode == "reflect" and builtins.max(before, after) >= builtins.max(x.shape[axis], 1):
            raise ShapeError(
                f"pad: reflect padding ({before}, {after}) "
                f"must be smaller than axis {axis} (size {x.shape[axis]})"
            )
        pads.append((int(before), int(after)))
    from ipfs_accelerate.ops._elementwise import _check_scalar

    if mode == "constant":
        _check_scalar("pad", value, x.dtype)
        if not x.dtype.is_floating and isinstance(value, float) and not float(value).is_integer():
            raise DtypeError(f"pad: value {value!r} would be truncated in a {x.dtype.name} tensor")
    shape = tuple(d + b + a for d, (b, a) in zip(x.shape, pads, strict=True))
    return run(x._backend, "pad", (x, tuple(pads), mode, value), shape, x.dtype)


# ----------------------------------------------------------------------------- indexing


def _expand_key(key: Any, ndim: int) -> list[Any]:
    items = list(key) if isinstance(key, tuple) else [key]
    ellipses = [i for i, k in enumerate(items) if k is Ellipsis]
    if len(ellipses) > 1:
        raise InvalidArgumentError("index: an index can only have a single ellipsis ('...')")
    consumed = builtins.sum(1 for k in items if k is not None and k is not Ellipsis)
    if consumed > ndim:
        raise IndexOutOfRangeError(f"index: too many indices for a tensor of rank {ndim}: {key!r}")
    if ellipses:
        i = ellipses[0]
        items[i : i + 1] = [builtins.slice(None)] * (ndim - consumed)
    else:
        items.extend([builtins.slice(None)] * (ndim - consumed))
    return items


def getitem(x: Tensor, key: Any) -> Tensor:
    """numpy basic indexing (ints, slices with any step, ``...``, ``None``) plus one integer
    array index (a gather) or a bool mask of the full shape (CPU)."""
    if isinstance(key, Tensor | np.ndarray | list) and not (isinstance(key, list) and not key):
        return _array_index(x, key)
    items = _expand_key(key, x.ndim)
    starts, steps, sizes, out_shape = [], [], [], []
    axis = 0
    array_axis: tuple[int, Any] | None = None
    for item in items:
        if item is None:
            out_shape.append(1)
            continue
        dim = x.shape[axis]
        if isinstance(item, builtins.slice):
            start, stop, step = item.indices(dim)
            size = len(range(start, stop, step))
            starts.append(start if size else 0)
            steps.append(step if size else 1)
            sizes.append(size)
            out_shape.append(size)
        elif (
            isinstance(item, numbers.Integral | Tensor)
            and not isinstance(item, bool)
            and (not isinstance(item, Tensor) or item.ndim == 0)
        ):
            i = int(item)
            if not -dim <= i < dim:
                raise IndexOutOfRangeError(
                    f"index {i} is out of bounds for axis {axis} with size {dim}"
                )
            starts.append(i + dim if i < 0 else i)
            steps.append(1)
            sizes.append(1)
        elif isinstance(item, Tensor | np.ndarray | list):
            if array_axis is not None:
                raise UnsupportedOpError(
                    "index: only one integer-array index per indexing expression is supported"
                )
            array_axis = (len(out_shape), item)
            starts.append(0)
            steps.append(1)
            sizes.append(dim)
            out_shape.append(dim)
        else:
            raise InvalidArgumentError(
                f"index: unsupported index element {item!r} of type {type(item).__name__}"
            )
        axis += 1
    result = _slice(x, tuple(starts), tuple(steps), tuple(sizes))
    result = reshape(result, tuple(out_shape))
    if array_axis is not None:
        position, index = array_axis
        result = gather(result, index, axis=position)
    return result


def _array_index(x: Tensor, key: Any) -> Tensor:
    idx = as_tensor(key, op="index", like=x)
    if idx.dtype is bool_:
        if idx.shape != x.shape[: idx.ndim]:
            raise ShapeError(
                f"index: boolean mask of shape {idx.shape} does not match {describe(x)}"
            )
        if x.device != "cpu":
            raise UnsupportedOpError(
                "index: boolean masks give data-dependent shapes, supported on 'cpu' only; "
                f"tensor is on {x.device!r}"
            )
        from ipfs_accelerate.tensor._creation import from_numpy

        if x._requires_grad:  # as a gather of the selected rows, so that gradients flow back
            rows = reshape(x, (math.prod(idx.shape), *x.shape[idx.ndim :]))
            picked = from_numpy(np.flatnonzero(idx.numpy()), x.device)
            return gather(rows, picked, axis=0)
        return from_numpy(np.ascontiguousarray(x.numpy()[idx.numpy()]), x.device)
    if x.ndim == 0:
        raise IndexOutOfRangeError("index: cannot index a 0-d tensor with an array")
    return gather(x, idx, axis=0)


def setitem(x: Tensor, key: Any, value: Any) -> None:
    """In-place assignment (CPU backend): the value broadcasts to the selection; values that
    would be truncated or wrap in ``x``'s dtype raise."""
    from ipfs_accelerate.tensor._creation import checked_cast

    target = getitem(x, key)  # validates the key and gives the selection's shape
    if isinstance(value, Tensor):
        same_backend("setitem", (x, value))
        host = value.numpy()
    else:
        host = np.asarray(value)
        if host.dtype == object:
            raise InvalidArgumentError(f"setitem: cannot assign {type(value).__name__}")
    if host.dtype.kind not in "biuf":
        raise DtypeError(f"setitem: cannot assign values of numpy dtype {host.dtype}")
    host = checked_cast(host, x.dtype, context="setitem")
    try:
        fits = np.broadcast_shapes(host.shape, target.shape) == target.shape
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(
            f"setitem: value of shape {host.shape} "
            f"cannot be broadcast to the selection {target.shape}"
        )
    _check_in_place("setitem", x, value)
    x._backend.setitem(x, key if not isinstance(key, Tensor) else key.numpy(), host)
    bump_version(x)


def _check_in_place(op: str, x: Tensor, value: Any) -> None:
    """In-place writes are outside the graph: refused where grad mode would need them in it."""
    if is_grad_enabled() and (
        x._requires_grad or (isinstance(value, Tensor) and value._requires_grad)
    ):
        if x._requires_grad and x._grad_fn is None:
            raise AutogradError(
                f"{op}: {describe(x)} is a leaf that requires grad; it cannot be written in "
                "place while grad mode is on (update parameters under ia.no_grad())"
            )
        raise UnsupportedOpError(
            f"{op}: in-place assignment into or from a tensor that requires grad is not "
            f"differentiable ({describe(x)}); build the result with where() or concat()"
        )


def copy_(x: Tensor, value: Any) -> Tensor:
    """Overwrite ``x``'s values with ``value`` (broadcast to ``x.shape``, converted to its
    dtype, on its device) and return ``x``: how optimizers update parameters, under
    ``no_grad``. On cpu the values are written into ``x``'s memory, so views of ``x`` see
    them; on device backends ``x`` takes a buffer of its own holding them (views made before
    keep the old values), and so does a cpu tensor over read-only memory that is not a
    broadcast view: a weight memory-mapped from its checkpoint (the file, and other models
    sharing the mapping, keep the old values). Backward passes that saved ``x`` before the
    write raise."""
    src = as_tensor(value, op="copy_", like=x)
    same_backend("copy_", (x, src))
    _check_in_place("copy_", x, src)
    if src.shape != x.shape:
        src = broadcast_to(src, x.shape)
    if src.dtype is not x.dtype:
        src = astype(src, x.dtype)
    if x._backend.shares_host_memory and not _read_only_mapping(x._data):
        x._backend.setitem(x, Ellipsis, src.numpy())
    else:
        x._data = clone(src)._data
    bump_version(x)
    return x


def _read_only_mapping(data: Any) -> bool:
    """Read-only host memory that is not a broadcast view (those have a zero stride, and
    writing through them stays an error)."""
    flags = getattr(data, "flags", None)
    if flags is None or flags.writeable:
        return False
    return 0 not in data.strides or data.size <= 1


# ----------------------------------------------------------------------------- devices, dtypes


def to_device(x: Any, device: str) -> Tensor:
    """A copy of ``x`` on ``device`` (``x`` itself when it is already there)."""
    from ipfs_accelerate.hal import get_backend

    x = as_tensor(x, op="to")
    target = get_backend(device)
    if target is x._backend:
        return x
    host = x._backend.to_numpy(x)
    # the copy must not alias the source: copy host memory that the source still owns
    host = (
        np.array(host, copy=True, order="C")
        if x._backend.shares_host_memory
        else np.ascontiguousarray(host)
    )
    result = Tensor(target.from_numpy(host), x.shape, x.dtype, target)
    if x._requires_grad and x.dtype.is_floating:
        _record("to_device", (x, x.device), result)  # the gradient goes back there
    return result


def clone(x: Any) -> Tensor:
    x = as_tensor(x, op="clone")
    return run(x._backend, "copy", (x,), x.shape, x.dtype)


def contiguous(x: Any) -> Tensor:
    """``x`` with a row-major layout (a copy only on CPU when it is a strided view)."""
    x = as_tensor(x, op="contiguous")
    if x.device == "cpu":
        data = x._data
        if data.flags.c_contiguous:
            return x
        return run(x._backend, "copy", (x,), x.shape, x.dtype)
    return x


def astype(x: Any, dtype: DType, copy: bool = True) -> Tensor:
    """``x`` converted to ``dtype``; conversions that would change values silently raise."""
    x = as_tensor(x, op="astype")
    if dtype is x.dtype:
        return clone(x) if copy else x
    return run(x._backend, "cast", (x, dtype), x.shape, dtype)
