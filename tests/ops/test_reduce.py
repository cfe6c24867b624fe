"""Reductions against numpy, on every backend: axes (negative, tuples, None), keepdims, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import AxisError, ShapeError, TensorOverflowError

from ._helpers import FLOATS, INTS, accumulation_atol, arrays, assert_close, on, shapes, supported


@st.composite
def axis_args(draw: st.DrawFn, ndim: int) -> int | tuple[int, ...] | None:
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none" or ndim == 0:
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def _reduced_size(shape: tuple[int, ...], axis: int | tuple[int, ...] | None) -> int:
    if axis is None:
        return int(np.prod(shape))
    axes = (axis,) if isinstance(axis, int) else axis
    return int(np.prod([shape[a] for a in axes]))


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min", "prod", "var"])
@given(data=st.data())
def test_reduction_matches_numpy(device: str, op: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(supported(device, (*FLOATS, *INTS, "bool"))), label="dtype")
    low, high = (-2, 2) if op == "prod" and dtype in FLOATS else (None, None)
    if op == "prod" and dtype in INTS:
        low, high = (0, 3) if dtype == "uint8" else (-3, 3)
    x = data.draw(arrays(dtype, shapes(), low, high), label="x")
    axis = data.draw(axis_args(x.ndim), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    correction = data.draw(st.sampled_from([0, 1]), label="correction") if op == "var" else 0
    reduced = _reduced_size(x.shape, axis)
    t = on(device, x)
    kwargs = {"correction": correction} if op == "var" else {}
    if op in ("max", "min") and reduced == 0 and x.ndim:
        with pytest.raises(ShapeError, match="empty"):
            getattr(ops, op)(t, axis, keepdims=keepdims)
        return
    with np.errstate(all="ignore"):
        if op == "var":
            source = x.astype(np.float64) if x.dtype == np.bool_ else x
            expected = np.asarray(np.var(source, axis=axis, keepdims=keepdims, ddof=correction))
        else:
            expected = np.asarray(getattr(np, op)(x, axis=axis, keepdims=keepdims))
    if op in ("sum", "prod") and x.dtype.kind in "biu":
        wide = np.asarray(getattr(np, op)(x.astype(object), axis=axis, keepdims=keepdims))
        if wide.size and (np.any(wide > 2**63 - 1) or np.any(wide < -(2**63))):
            with pytest.raises(TensorOverflowError):
                getattr(ops, op)(t, axis, keepdims=keepdims).numpy()
            return
        expected = expected.astype(np.int64)  # documented: integer sums accumulate in int64
    assume(str(expected.dtype) in supported(device))
    actual = getattr(ops, op)(t, axis, keepdims=keepdims, **kwargs)
    magnitude = float(np.max(np.abs(x.astype(np.float64)))) if x.size else 1.0
    atol = None
    if expected.dtype.kind == "f":
        terms = max(reduced, 1)
        if op == "var":
            magnitude = magnitude**2
        elif op == "prod":
            magnitude = magnitude**terms
        atol = accumulation_atol(str(expected.dtype), terms, magnitude)
    assert_close(actual, expected, op=op, atol=atol)
    method = (
        getattr(t, op)(axis, keepdims, **kwargs)
        if op != "var"
        else t.var(axis, keepdims, correction=correction)
    )
    assert_close(method, expected, op=f"Tensor.{op}", atol=atol)


@pytest.mark.parametrize("op", ["argmax", "argmin"])
@given(data=st.data())
def test_arg_reductions_match_numpy(device: str, op: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(supported(device, (*FLOATS, *INTS))))
    x = data.draw(arrays(dtype, shapes(min_side=1), -4, 4))
    axis = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1)) if x.ndim else None
    keepdims = data.draw(st.booleans())
    expected = getattr(np, op)(x, axis=axis, keepdims=keepdims)
    assert_close(
        getattr(ops, op)(on(device, x), axis, keepdims=keepdims),
        np.asarray(expected, dtype=np.int64),
        op=op,
    )


@pytest.mark.parametrize("op", ["any", "all"])
@given(data=st.data())
def test_truth_reductions_match_numpy(device: str, op: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(supported(device, ("bool", "float32", "int32"))))
    x = data.draw(arrays(dtype, shapes(), -1, 1))
    axis = data.draw(axis_args(x.ndim))
    keepdims = data.draw(st.booleans())
    expected = np.asarray(getattr(np, op)(x, axis=axis, keepdims=keepdims))
    assert_close(getattr(ops, op)(on(device, x), axis, keepdims=keepdims), expected, op=op)


def test_std_is_sqrt_var(device: str) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert_close(ops.std(on(device, x), axis=1, correction=1), np.std(x, axis=1, ddof=1), op="std")


def test_nan_propagates_through_max_and_argmax(device: str) -> None:
    x = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    assert_close(ops.max(on(device, x), 1), np.max(x, axis=1), op="max")
    assert_close(ops.argmax(on(device, x), 1), np.argmax(x, axis=1).astype(np.int64), op="argmax")


def test_reduction_axis_errors(device: str) -> None:
    t = ia.zeros(2, 3, device=device)
    with pytest.raises(AxisError, match=r"sum: axis 2 is out of range for a tensor of rank 2"):
        ops.sum(t, 2)
    with pytest.raises(AxisError, match="repeated axis"):
        ops.mean(t, (0, -2))
    with pytest.raises(AxisError, match="argmax"):
        ops.argmax(t, -3)
    with pytest.raises(ShapeError, match="argmax"):
        ops.argmax(ia.zeros(0, device=device))
