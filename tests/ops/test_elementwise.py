"""Element-wise ops against numpy, on every backend: values, dtypes, broadcasting, errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import DtypeError, InvalidArgumentError, ShapeError, TensorOverflowError

from ._helpers import (
    ALL_DTYPES,
    FLOATS,
    INTS,
    arrays,
    assert_close,
    erf_ref,
    float_result,
    gelu_ref,
    on,
    promote_mixed,
    shapes,
    sigmoid_ref,
    supported,
)


@dataclass(frozen=True)
class Unary:
    ref: Callable[[np.ndarray], np.ndarray]
    dtypes: tuple[str, ...]
    low: float | None = None
    high: float | None = None
    #: float functions: integer/bool inputs compute in numpy's float for them
    float_rule: bool = False


def _as_float(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def ref(x: np.ndarray) -> np.ndarray:
        if x.dtype.kind != "f":
            x = x.astype(float_result(str(x.dtype)))
        return fn(x)

    return ref


NUMERIC = (*FLOATS, *INTS)
UNARY: dict[str, Unary] = {
    "neg": Unary(np.negative, ("float16", "float32", "float64", "int32", "int64", "int8")),
    "abs": Unary(np.abs, ALL_DTYPES),
    "square": Unary(np.square, (*FLOATS, "int32", "int64", "int8"), -40, 40),
    "sign": Unary(np.sign, NUMERIC),
    "exp": Unary(_as_float(np.exp), NUMERIC, -8, 8, True),
    "log": Unary(_as_float(np.log), NUMERIC, 1, 100, True),
    "sqrt": Unary(_as_float(np.sqrt), NUMERIC, 0, 100, True),
    "rsqrt": Unary(
        _as_float(lambda x: (1 / np.sqrt(x.astype(np.float64))).astype(x.dtype)),
        NUMERIC,
        1,
        100,
        True,
    ),
    "reciprocal": Unary(
        _as_float(lambda x: (1 / x.astype(np.float64)).astype(x.dtype)), FLOATS, 0.25, 8, True
    ),
    "erf": Unary(_as_float(erf_ref), (*FLOATS, "int32"), -5, 5, True),
    "sin": Unary(_as_float(np.sin), (*FLOATS, "int32"), -8, 8, True),
    "cos": Unary(_as_float(np.cos), (*FLOATS, "int32"), -8, 8, True),
    "tanh": Unary(_as_float(np.tanh), (*FLOATS, "int32"), -8, 8, True),
    "sigmoid": Unary(_as_float(sigmoid_ref), (*FLOATS, "int32"), -12, 12, True),
    "silu": Unary(
        _as_float(
            lambda x: (x.astype(np.float64) * sigmoid_ref(x.astype(np.float64))).astype(x.dtype)
        ),
        FLOATS,
        -12,
        12,
        True,
    ),
    "relu": Unary(lambda x: np.maximum(x, x.dtype.type(0)), NUMERIC),
    "floor": Unary(_as_float(np.floor), (*FLOATS, "int32"), None, None, True),
    "ceil": Unary(_as_float(np.ceil), (*FLOATS, "int32"), None, None, True),
    "round": Unary(np.round, NUMERIC),
    "logical_not": Unary(np.logical_not, ALL_DTYPES),
    "isnan": Unary(np.isnan, NUMERIC),
    "isinf": Unary(np.isinf, NUMERIC),
    "isfinite": Unary(np.isfinite, NUMERIC),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@given(data=st.data())
def test_unary_matches_numpy(device: str, op: str, data: st.DataObject) -> None:
    case = UNARY[op]
    dtype = data.draw(st.sampled_from(supported(device, case.dtypes)), label="dtype")
    low, high = case.low, case.high
    if dtype == "uint8" and low is not None and low < 0:
        low = 0
    if dtype == "uint8" and op == "exp":
        high = 8
    if dtype == "int8" and op == "square":
        low, high = -11, 11  # squares that int8 holds (overflow raises: tested elsewhere)
    x = data.draw(arrays(dtype, shapes(), low, high), label="x")
    expected = case.ref(x)
    if case.float_rule:
        assume(str(expected.dtype) in supported(device))
    assert_close(getattr(ops, op)(on(device, x)), expected, op=op)


@given(data=st.data())
def test_gelu_exact_and_tanh(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(supported(device, FLOATS)))
    x = data.draw(arrays(dtype, shapes(), -8, 8))
    assert_close(ops.gelu(on(device, x)), gelu_ref(x), op="gelu")
    assert_close(ops.gelu(on(device, x), approximate="tanh"), gelu_ref(x, "tanh"), op="gelu_tanh")


def test_special_float_values(device: str) -> None:
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0], dtype=np.float32)
    x = on(device, values)
    with np.errstate(all="ignore"):
        assert_close(ops.exp(x), np.exp(values), op="exp")
        assert_close(ops.log(x), np.log(values), op="log")
        assert_close(ops.sqrt(x), np.sqrt(values), op="sqrt")
        assert_close(ops.relu(x), np.maximum(values, 0), op="relu")
        assert_close(
            ops.sigmoid(x),
            np.array([np.nan, 1, 0, 0.5, 0.5, sigmoid_ref(np.float32(1.0))], np.float32),
            op="sigmoid",
        )
        assert_close(ops.isnan(x), np.isnan(values), op="isnan")
        assert_close(ops.maximum(x, 0.5), np.maximum(values, np.float32(0.5)), op="maximum")


# ----------------------------------------------------------------------------- binary

_BINARY_UFUNCS: dict[str, Any] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.true_divide,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "floor_divide": np.floor_divide,
    "remainder": np.remainder,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}
_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
    "floor_divide": lambda a, b: a // b,
    "remainder": lambda a, b: a % b,
    "equal": lambda a, b: a == b,
    "not_equal": lambda a, b: a != b,
    "less": lambda a, b: a < b,
    "less_equal": lambda a, b: a <= b,
    "greater": lambda a, b: a > b,
    "greater_equal": lambda a, b: a >= b,
}
_SUPPORTED_NP = {np.dtype(d) for d in ALL_DTYPES}
_COMPARISON_OPS = frozenset(
    {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
     "logical_and", "logical_or", "logical_xor"}
)  # fmt: skip


def _value_range(op: str, dtype: str, which: int) -> tuple[float | None, float | None]:
    if op == "pow":
        if dtype in FLOATS:
            return (0.25, 4.0) if which == 0 else (-3.0, 3.0)
        return (-6, 6) if which == 0 and dtype != "uint8" else (0, 6)
    if (
        op in ("div", "floor_divide", "remainder")
        and which == 1
        and dtype not in FLOATS
        and dtype != "bool"
    ):
        return (1, 20)
    return (None, None)


def _expected_binary(
    op: str, xa: np.ndarray, xb: np.ndarray
) -> tuple[np.ndarray | None, type[Exception] | None]:
    """numpy's answer (mixed int/float promoted to the float), or the error to raise instead."""
    if op not in _COMPARISON_OPS:  # comparisons are exact, as numpy's
        if np.result_type(xa.dtype, xb.dtype) not in _SUPPORTED_NP:
            return None, DtypeError  # int8 with uint8: no supported common dtype (int16)
        xa, xb = promote_mixed(xa, xb)
    try:
        with np.errstate(all="ignore"):
            expected = _BINARY_UFUNCS[op](xa, xb)
    except TypeError:
        return None, DtypeError
    if expected.dtype not in _SUPPORTED_NP:
        return None, DtypeError
    if op in ("floor_divide", "remainder") and expected.dtype.kind in "iu" and np.any(xb == 0):
        return None, InvalidArgumentError  # integer division by zero raises (numpy gives 0)
    if expected.dtype.kind in "iu" and op in ("add", "sub", "mul", "pow"):
        wide = np.asarray(_BINARY_UFUNCS[op](xa.astype(object), xb.astype(object)))
        info = np.iinfo(expected.dtype)
        if wide.size and (np.any(wide > info.max) or np.any(wide < info.min)):
            return None, TensorOverflowError
    return expected, None


@pytest.mark.parametrize("op", sorted(_BINARY_UFUNCS))
@given(data=st.data())
def test_binary_matches_numpy(device: str, op: str, data: st.DataObject) -> None:
    dtypes = supported(device)
    da = data.draw(st.sampled_from(dtypes), label="dtype_a")
    db = data.draw(st.sampled_from(dtypes), label="dtype_b")
    shape_a, shape_b = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4), label="shapes"
    ).input_shapes
    xa = data.draw(arrays(da, shape_a, *_value_range(op, da, 0)), label="a")
    xb = data.draw(arrays(db, shape_b, *_value_range(op, db, 1)), label="b")
    expected, error = _expected_binary(op, xa, xb)
    if expected is not None:
        assume(str(expected.dtype) in dtypes)
    a, b = on(device, xa), on(device, xb)
    if error is not None:
        with pytest.raises(error):
            getattr(ops, op)(a, b).numpy()
        return
    assert_close(getattr(ops, op)(a, b), expected, op=op)
    if op in _OPERATORS:
        assert_close(_OPERATORS[op](a, b), expected, op=op)


@pytest.mark.parametrize(
    "op", ["add", "sub", "mul", "div", "maximum", "minimum", "less", "equal", "pow"]
)
@given(data=st.data())
def test_binary_with_python_scalars_follows_nep50(
    device: str, op: str, data: st.DataObject
) -> None:
    dtype = data.draw(st.sampled_from(supported(device, (*FLOATS, *INTS))))
    x = data.draw(arrays(dtype, shapes(max_dims=3), *_value_range(op, dtype, 0)))
    kind = data.draw(st.sampled_from(["int", "float"]))
    if op == "pow":
        scalar: float | int = (
            data.draw(st.integers(0, 3)) if kind == "int" else data.draw(st.floats(-2, 2, width=16))
        )
    else:
        scalar = (
            data.draw(st.integers(1, 50))
            if kind == "int"
            else data.draw(st.floats(-4, 4, width=16).filter(lambda v: v != 0 or op != "div"))
        )
    reverse = data.draw(st.booleans())
    if op == "pow" and reverse:
        reverse = False
    if op not in _COMPARISON_OPS:  # comparisons are exact, as numpy's
        (x,) = promote_mixed(x, scalar)[:1]
    with np.errstate(all="ignore"):
        expected = _BINARY_UFUNCS[op](scalar, x) if reverse else _BINARY_UFUNCS[op](x, scalar)
    if expected.dtype.kind in "iu" and op in ("add", "sub", "mul", "pow"):
        wide = np.asarray(
            _BINARY_UFUNCS[op](scalar, x.astype(object))
            if reverse
            else _BINARY_UFUNCS[op](x.astype(object), scalar)
        )
        info = np.iinfo(expected.dtype)
        if wide.size and (np.any(wide > info.max) or np.any(wide < info.min)):
            with pytest.raises(TensorOverflowError):
                (
                    getattr(ops, op)(scalar, on(device, x))
                    if reverse
                    else getattr(ops, op)(on(device, x), scalar)
                ).numpy()
            return
    assume(str(expected.dtype) in supported(device))
    t = on(device, x)
    actual = getattr(ops, op)(scalar, t) if reverse else getattr(ops, op)(t, scalar)
    assert_close(actual, expected, op=f"{op} scalar")


def test_integer_overflow_raises_instead_of_wrapping(device: str) -> None:
    x = on(device, np.array([200, 100], dtype=np.uint8))
    with pytest.raises(TensorOverflowError, match="uint8"):
        (x + x).numpy()
    with pytest.raises(TensorOverflowError):
        (
            on(device, np.array([3], dtype=np.uint8)) - on(device, np.array([5], dtype=np.uint8))
        ).numpy()
    if "int32" in supported(device):
        big = on(device, np.array([2**31 - 1], dtype=np.int32))
        with pytest.raises(TensorOverflowError, match="int32"):
            (big + 1).numpy()
        with pytest.raises(TensorOverflowError):
            ops.neg(on(device, np.array([-(2**31)], dtype=np.int32))).numpy()


def test_integer_division_by_zero_raises(device: str) -> None:
    if "int32" not in supported(device):
        pytest.skip("no int32 on this backend")
    a = on(device, np.array([4, 5], dtype=np.int32))
    b = on(device, np.array([2, 0], dtype=np.int32))
    with pytest.raises(InvalidArgumentError, match="division by zero"):
        ops.floor_divide(a, b).numpy()
    with pytest.raises(InvalidArgumentError, match="negative integer powers"):
        ops.pow(a, on(device, np.array([1, -1], dtype=np.int32))).numpy()


# ----------------------------------------------------------------------------- where, clamp


@given(data=st.data())
def test_where_matches_numpy(device: str, data: st.DataObject) -> None:
    dtypes = supported(device)
    shapes3 = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=4, max_side=4)
    ).input_shapes
    cond = data.draw(arrays("bool", shapes3[0]))
    dx, dy = data.draw(st.sampled_from(dtypes)), data.draw(st.sampled_from(dtypes))
    x, y = data.draw(arrays(dx, shapes3[1])), data.draw(arrays(dy, shapes3[2]))
    expected = np.where(cond, *promote_mixed(x, y))
    assume(str(expected.dtype) in dtypes)
    assert_close(ops.where(on(device, cond), on(device, x), on(device, y)), expected, op="where")


def test_where_with_scalars_and_truthy_condition(device: str) -> None:
    x = np.array([[1.5, -2.0], [0.0, 4.0]], dtype=np.float32)
    t = on(device, x)
    assert_close(ops.where(t > 0, t, 0.0), np.where(x > 0, x, np.float32(0)), op="where")
    assert_close(
        ops.where(t, 1.0, -1.0), np.where(x != 0, 1.0, -1.0).astype(np.float32), op="where"
    )


@given(data=st.data())
def test_clamp_matches_numpy_clip(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(supported(device, (*FLOATS, "int32", "int64"))))
    x = data.draw(arrays(dtype, shapes()))
    low = data.draw(st.none() | st.integers(-5, 0))
    high = data.draw(st.integers(1, 5) if low is None else st.none() | st.integers(1, 5))
    expected = np.clip(x, low, high)
    assert_close(ops.clamp(on(device, x), low, high), expected, op="clamp")
    assert_close(on(device, x).clip(low, high), expected, op="clip")


def test_clamp_with_tensor_bounds(device: str) -> None:
    x = np.array([-3.0, 0.5, 9.0], dtype=np.float32)
    lo = np.array([-1.0, 1.0, 0.0], dtype=np.float32)
    assert_close(ops.clamp(on(device, x), on(device, lo), 2.0), np.clip(x, lo, 2.0), op="clamp")


# ----------------------------------------------------------------------------- errors


def test_broadcast_error_names_op_and_shapes(device: str) -> None:
    a, b = ia.zeros(2, 3, device=device), ia.zeros(4, device=device)
    with pytest.raises(ShapeError, match=r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        a + b
    with pytest.raises(ShapeError, match="less"):
        ops.less(a, b)


def test_gelu_rejects_unknown_approximation(device: str) -> None:
    with pytest.raises(DtypeError, match="approximate"):
        ops.gelu(ia.zeros(2, device=device), approximate="fast")
