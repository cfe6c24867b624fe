"""Reductions: sum, mean, max, min, prod, var, std, argmax, argmin, any, all.

``axis`` is None (all axes), an int or a sequence of ints; negative axes count from the end;
``keepdims`` keeps reduced axes as size 1. Output dtypes follow numpy, except that integer and
bool sums/products accumulate in int64 (numpy would use uint64 for uint8; uint64 is not a
supported dtype). Integer and bool means/variances are float64. ``max``/``min`` of an empty
axis raise (there is no identity), as in numpy.
"""

from __future__ import annotations

import math
from typing import Any

from ipfs_accelerate.errors import InvalidArgumentError, ShapeError
from ipfs_accelerate.ops._core import (
    as_tensor,
    cast_to,
    describe,
    normalize_axes,
    normalize_axis,
    run,
)
from ipfs_accelerate.tensor._dtype import DType, bool_, float64, int64
from ipfs_accelerate.tensor._tensor import Tensor

__all__ = ["all", "any", "argmax", "argmin", "max", "mean", "min", "prod", "std", "sum", "var"]


def _out_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce(
    op: str, x: Any, axis: Any, keepdims: bool, out_dtype: DType, correction: float = 0.0
) -> Tensor:
    x = as_tensor(x, op=op)
    axes = normalize_axes(axis, x.ndim, op)
    shape = _out_shape(x.shape, axes, keepdims)
    if not axes:  # nothing to reduce (0-d input, or axis=()): numpy returns the values as out_dtype
        if op == "var":  # each value is its own one-element sample: 0 / max(1 - correction, 0)
            from ipfs_accelerate.tensor._creation import full

            return full(shape, 0.0 if correction < 1 else math.nan, out_dtype, x.device)
        return (
            cast_to(x, out_dtype)
            if x.dtype is not out_dtype
            else run(x._backend, "copy", (x,), x.shape, x.dtype)
        )
    reduced = math.prod(x.shape[a] for a in axes)
    if reduced == 0 and op in ("max", "min"):
        raise ShapeError(
            f"{op}: cannot reduce an empty axis (no identity); {describe(x)}, axes {axes}"
        )
    return run(
        x._backend, "reduce", (op, x, axes, keepdims, out_dtype, correction), shape, out_dtype
    )


def _accumulate_dtype(dtype: DType) -> DType:
    return dtype if dtype.is_floating else int64


def _mean_dtype(dtype: DType) -> DType:
    return dtype if dtype.is_floating else float64


def sum(x: Any, axis: Any = None, keepdims: bool = False, *, axes: Any = None) -> Tensor:
    """Sum over ``axis`` (``axes`` is an alias)."""
    x = as_tensor(x, op="sum")
    return _reduce(
        "sum", x, axes if axes is not None else axis, keepdims, _accumulate_dtype(x.dtype)
    )


def prod(x: Any, axis: Any = None, keepdims: bool = False, *, axes: Any = None) -> Tensor:
    """Product over ``axis``; integer products that overflow int64 raise."""
    x = as_tensor(x, op="prod")
    return _reduce(
        "prod", x, axes if axes is not None else axis, keepdims, _accumulate_dtype(x.dtype)
    )


def mean(x: Any, axis: Any = None, keepdims: bool = False, *, axes: Any = None) -> Tensor:
    """Arithmetic mean over ``axis`` (float64 for integer input)."""
    x = as_tensor(x, op="mean")
    return _reduce("mean", x, axes if axes is not None else axis, keepdims, _mean_dtype(x.dtype))


def var(
    x: Any,
    axis: Any = None,
    keepdims: bool = False,
    *,
    correction: float = 0.0,
    ddof: float | None = None,
    axes: Any = None,
) -> Tensor:
    """Variance over ``axis``, dividing by ``N - correction`` (numpy's ``ddof``; 0 by default)."""
    x = as_tensor(x, op="var")
    if ddof is not None:
        correction = ddof
    if correction < 0:
        raise InvalidArgumentError(f"var: correction must be >= 0, got {correction}")
    if x.dtype is bool_:
        x = cast_to(x, float64)
    return _reduce(
        "var",
        x,
        axes if axes is not None else axis,
        keepdims,
        _mean_dtype(x.dtype),
        float(correction),
    )


def std(
    x: Any,
    axis: Any = None,
    keepdims: bool = False,
    *,
    correction: float = 0.0,
    ddof: float | None = None,
    axes: Any = None,
) -> Tensor:
    """Standard deviation: ``sqrt(var(...))``."""
    from ipfs_accelerate.ops._elementwise import sqrt

    return sqrt(var(x, axis, keepdims, correction=correction, ddof=ddof, axes=axes))


def max(x: Any, axis: Any = None, keepdims: bool = False, *, axes: Any = None) -> Tensor:
    """Maximum over ``axis`` (NaN propagates)."""
    x = as_tensor(x, op="max")
    return _reduce("max", x, axes if axes is not None else axis, keepdims, x.dtype)


def min(x: Any, axis: Any = None, keepdims: bool = False, *, axes: Any = None) -> Tensor:
    """Minimum over ``axis`` (NaN propagates)."""
    x = as_tensor(x, op="min")
    return _reduce("min", x, axes if axes is not None else axis, keepdims, x.dtype)


def _arg(op: str, x: Any, axis: int | None, keepdims: bool) -> Tensor:
    x = as_tensor(x, op=op)
    if x.size == 0:
        raise ShapeError(f"{op}: attempt to get {op} of an empty sequence ({describe(x)})")
    if axis is None:
        flat = x if x.ndim == 1 else _reshape(x, (x.size,))
        result = run(flat._backend, "arg_reduce", (op, flat, 0, False), (), int64)
        if keepdims:
            return _reshape(result, (1,) * x.ndim)
        return result
    ax = normalize_axis(axis, x.ndim, op)
    if x.shape[ax] == 0:
        raise ShapeError(f"{op}: axis {axis} of {describe(x)} is empty")
    shape = _out_shape(x.shape, (ax,), keepdims)
    return run(x._backend, "arg_reduce", (op, x, ax, keepdims), shape, int64)


def _reshape(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    return run(x._backend, "reshape", (x, shape), shape, x.dtype)


def argmax(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index (int64) of the first maximum along ``axis`` (of the flattened tensor if None)."""
    return _arg("argmax", x, axis, keepdims)


def argmin(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index (int64) of the first minimum along ``axis`` (of the flattened tensor if None)."""
    return _arg("argmin", x, axis, keepdims)


def _truth(op: str, x: Any, axis: Any, keepdims: bool, empty_value: bool) -> Tensor:
    from ipfs_accelerate.ops._elementwise import not_equal

    x = as_tensor(x, op=op)
    axes = normalize_axes(axis, x.ndim, op)
    truth = x if x.dtype is bool_ else not_equal(x, 0)
    if axes and math.prod(x.shape[a] for a in axes) == 0:
        from ipfs_accelerate.tensor._creation import full

        return full(_out_shape(x.shape, axes, keepdims), empty_value, bool_, x.device)
    return _reduce("max" if op == "any" else "min", truth, axes, keepdims, bool_)


def any(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Whether any element along ``axis`` is true (non-zero); False for empty axes."""
    return _truth("any", x, axis, keepdims, False)


def all(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Whether every element along ``axis`` is true (non-zero); True for empty axes."""
    return _truth("all", x, axis, keepdims, True)
