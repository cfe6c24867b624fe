"""Exact comparisons of a float and an integer operand on backends without their common dtype.

numpy compares float32 with int32 (or an int32 tensor with a Python float) in float64, where
both values are exact. Arithmetic promotes such pairs to the float operand's dtype, which may
not hold the integer (2**24 + 1 in float32), and a backend without float64 (WebNN, WebGPU)
cannot take numpy's route, yet the result is a bool, and the comparison needs no common
dtype: for an integer ``i``,

    f < i  <=>  floor(f) < i        f <= i  <=>  ceil(f) <= i
    f > i  <=>  ceil(f) > i         f >= i  <=>  floor(f) >= i
    f == i <=>  floor(f) == ceil(f) == i

where floor/ceil are taken in the float dtype (exact) and converted to the integer's dtype
(exact, once values beyond its range and NaN are set aside). Logical and/or/xor need only
each operand's truth value. :func:`exact_comparison` is called by the element-wise binary op
for every comparison of a float with an integer/bool operand, on every backend.
"""

from __future__ import annotations

import math

from ipfs_accelerate.tensor._dtype import bool_
from ipfs_accelerate.tensor._tensor import Tensor

__all__ = ["exact_comparison"]

Scalar = bool | int | float

_MIRROR = {
    "less": "greater",
    "less_equal": "greater_equal",
    "greater": "less",
    "greater_equal": "less_equal",
    "equal": "equal",
    "not_equal": "not_equal",
}


def _is_float(value: Tensor | Scalar) -> bool:
    if isinstance(value, Tensor):
        return value.dtype.is_floating
    return isinstance(value, float)


def exact_comparison(op: str, a: Tensor | Scalar, b: Tensor | Scalar) -> Tensor:
    """``op`` (a comparison or logical op) of a float and an integer/bool operand, exactly,
    without converting either to their common dtype."""
    from ipfs_accelerate.ops import _elementwise as ew

    if op in ("logical_and", "logical_or", "logical_xor"):
        return ew._binary(op, _truth(a), _truth(b))
    if not _is_float(a):
        a, b, op = b, a, _MIRROR[op]
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return _float_tensor_vs_int_tensor(op, a, b)
    assert isinstance(b, Tensor) and isinstance(a, float)
    return _int_tensor_vs_float_scalar(_MIRROR[op], b, a)


def _truth(value: Tensor | Scalar) -> Tensor | bool:
    from ipfs_accelerate.ops import _elementwise as ew

    if isinstance(value, Tensor):
        return value if value.dtype is bool_ else ew.not_equal(value, 0)
    return bool(value)


def _constant(shape: tuple[int, ...], value: bool, device: str) -> Tensor:
    from ipfs_accelerate.tensor._creation import full

    return full(shape, value, bool_, device)


def _int_tensor_vs_float_scalar(op: str, t: Tensor, s: float) -> Tensor:
    """``t op s`` for an integer/bool tensor and a Python float: an integer comparison with
    the float's floor or ceiling, or a constant where the float lies beyond t's range."""
    from ipfs_accelerate.ops import _elementwise as ew

    if math.isnan(s):
        return _constant(t.shape, op == "not_equal", t.device)
    if op in ("equal", "not_equal"):
        if not s.is_integer():
            return _constant(t.shape, op == "not_equal", t.device)
        bound = int(s)
    elif op in ("less", "greater_equal"):
        bound = math.ceil(s) if math.isfinite(s) else (1 if s > 0 else -1) * 2**64
    else:
        bound = math.floor(s) if math.isfinite(s) else (1 if s > 0 else -1) * 2**64
    low, high = (0, 1) if t.dtype is bool_ else (int(t.dtype.min), int(t.dtype.max))
    if bound > high:  # every value of t is below the bound
        return _constant(t.shape, op in ("less", "less_equal", "not_equal"), t.device)
    if bound < low:  # every value of t is above it
        return _constant(t.shape, op in ("greater", "greater_equal", "not_equal"), t.device)
    return ew._binary(op, t, bound)


def _float_tensor_vs_int_tensor(op: str, f: Tensor, i: Tensor) -> Tensor:
    """``f op i`` for a float tensor and an integer tensor, via floor/ceil of ``f`` in i's dtype."""
    from ipfs_accelerate.ops import _elementwise as ew
    from ipfs_accelerate.ops._shape import astype

    nan = ew.isnan(f)
    limit = float(i.dtype.max) + 1.0  # a power of two: exact in every float dtype that reaches it
    if limit <= f.dtype.max:
        above = ew.greater_equal(f, limit)
        below = ew.less(f, float(i.dtype.min))
    else:  # every finite value of f's dtype lies inside i's range
        infinite = ew.isinf(f)
        above = ew.logical_and(infinite, ew.greater(f, 0.0))
        below = ew.logical_and(infinite, ew.less(f, 0.0))
    inside = ew.logical_not(ew.logical_or(nan, ew.logical_or(above, below)))
    safe = ew.where(inside, f, 0.0)
    floor = astype(ew.floor(safe), i.dtype)
    ceil = astype(ew.ceil(safe), i.dtype)
    if op == "less":
        return ew.logical_or(below, ew.logical_and(inside, ew.less(floor, i)))
    if op == "less_equal":
        return ew.logical_or(below, ew.logical_and(inside, ew.less_equal(ceil, i)))
    if op == "greater":
        return ew.logical_or(above, ew.logical_and(inside, ew.greater(ceil, i)))
    if op == "greater_equal":
        return ew.logical_or(above, ew.logical_and(inside, ew.greater_equal(floor, i)))
    equal = ew.logical_and(inside, ew.logical_and(ew.equal(floor, ceil), ew.equal(floor, i)))
    return equal if op == "equal" else ew.logical_not(equal)
