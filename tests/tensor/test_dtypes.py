"""Dtypes and promotion: the seven dtypes, numpy's promotion rules (NEP 50), conversions that
keep values, and the refusals where a value or a dtype would change silently."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import DtypeError, TensorOverflowError
from ipfs_accelerate.tensor import DTYPES, as_dtype, result_type
from tests.ops._helpers import (
    ALL_DTYPES,
    FLOATS,
    INTS,
    arrays,
    assert_close,
    on,
    shapes,
    supported,
)


def test_dtype_names_equality_and_limits() -> None:
    assert tuple(d.name for d in DTYPES) == ALL_DTYPES
    assert as_dtype("half") is ia.float16 and as_dtype(np.int32) is ia.int32
    assert as_dtype(bool) is ia.bool_ and as_dtype(float) is ia.float64
    assert ia.float32 == "float32" and ia.float32 == np.float32 and ia.float32 != "float64"
    assert (ia.uint8.min, ia.uint8.max, ia.bool_.max) == (0, 255, 1)
    assert ia.float16.max == 65504.0 and ia.int32.is_signed and not ia.uint8.is_signed
    assert pickle.loads(pickle.dumps(ia.int64)) is ia.int64
    assert (ia.int8.min, ia.int8.max) == (-128, 127) and ia.int8.is_signed
    assert as_dtype("int8") is ia.int8 and as_dtype(np.int8) is ia.int8 and ia.int8 == np.int8
    with pytest.raises(DtypeError, match="unsupported dtype 'int16'"):
        as_dtype("int16")


def test_result_type_follows_numpy_nep50() -> None:
    assert result_type(ia.uint8, 1) is ia.uint8  # a Python int is weak: the tensor's dtype wins
    assert result_type(ia.float16, 2.5) is ia.float16
    assert result_type(ia.float16, 3) is ia.float16
    assert result_type(ia.uint8, ia.int32) is ia.int32
    assert result_type(ia.float16, ia.float64) is ia.float64
    assert result_type(ia.bool_, ia.bool_) is ia.bool_
    with pytest.raises(DtypeError, match="concat: cannot promote"):
        result_type(ia.float32, "x", op="concat")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("operands", "expected"),
    [
        ((ia.int32, ia.float32), ia.float32),  # numpy: float64
        ((ia.float32, ia.int32), ia.float32),
        ((ia.int64, ia.float16), ia.float16),  # numpy: float64
        ((ia.float16, ia.int32), ia.float16),
        ((ia.uint8, ia.float16), ia.float16),
        ((ia.int64, ia.float64), ia.float64),
        ((ia.bool_, ia.float16), ia.float16),
        ((ia.int32, 1.5), ia.float32),  # an integer tensor with a Python float: float32
        ((ia.int64, 1.5), ia.float32),
        ((ia.bool_, 1.5), ia.float32),
        ((ia.int32, ia.float16, 1.5), ia.float16),
        ((ia.int32, ia.float16, ia.float32), ia.float32),
        ((ia.float16, 1.5, 2), ia.float16),
    ],
)
def test_mixed_int_float_promotes_to_the_float_operand(
    operands: tuple[ia.DType | float, ...], expected: ia.DType
) -> None:
    assert result_type(*operands) is expected
    assert result_type(*reversed(operands)) is expected


def test_mixed_int_float_arithmetic_on_tensors(device: str) -> None:
    if "int32" in supported(device):
        total = ia.tensor([1], dtype=ia.int32, device=device) + ia.tensor([1.5], device=device)
        assert_close(total, np.array([2.5], dtype=np.float32), op="add")
        assert_close(
            ia.tensor([3], dtype="int32", device=device) / 2.0,
            np.array([1.5], dtype=np.float32),
            op="div",
        )
    if "float16" in supported(device) and "int64" in supported(device):
        h = ia.tensor([0.5], dtype="float16", device=device)
        assert_close(
            ia.tensor([2], dtype="int64", device=device) * h, np.array([1], np.float16), op="mul"
        )
    # comparisons stay exact: 2**24 + 1 is not the float32 2**24 although it rounds to it
    if "int32" in supported(device):
        i = ia.tensor([2**24 + 1], dtype="int32", device=device)
        f = ia.tensor([2.0**24], dtype="float32", device=device)
        assert (i == f).numpy().tolist() == [False] and (i > f).numpy().tolist() == [True]
        assert (i + f).dtype is ia.float32


@pytest.mark.parametrize("dtype", [*FLOATS, *INTS, "bool"])
def test_dtypes_round_trip(device: str, dtype: str) -> None:
    if dtype not in supported(device):
        pytest.skip(f"{device} does not hold {dtype}")
    x = np.array([0, 1, 1, 0], dtype=dtype)
    assert_close(on(device, x), x)


@given(data=st.data())
def test_astype_converts_like_numpy_when_values_fit(device: str, data: st.DataObject) -> None:
    names = supported(device, ALL_DTYPES)
    source = data.draw(st.sampled_from(names))
    target = data.draw(st.sampled_from(names))
    x = data.draw(arrays(source, shapes(), 0, 1 if target == "bool" else 100))
    if x.dtype.kind == "f" and target not in FLOATS:
        x = np.round(x)  # whole values convert exactly; fractions are refused (tested below)
    assert_close(on(device, x).astype(target), x.astype(target), op=f"astype {source}->{target}")


def test_astype_refuses_value_changing_casts(device: str) -> None:
    names = supported(device)
    if "int32" in names:
        with pytest.raises(DtypeError, match="truncate"):
            on(device, np.array([1.5], dtype=np.float32)).astype("int32").numpy()
        with pytest.raises(TensorOverflowError, match="nan"):
            on(device, np.array([np.nan], dtype=np.float32)).astype("int32").numpy()
    with pytest.raises(TensorOverflowError, match="uint8"):
        on(device, np.array([300.0], dtype=np.float32)).astype("uint8").numpy()
    if "float16" in names:
        with pytest.raises(TensorOverflowError, match="float16"):
            on(device, np.array([1e6], dtype=np.float32)).astype("float16").numpy()


def test_scalar_out_of_range_for_dtype_raises(device: str) -> None:
    x = on(device, np.array([1, 2, 3], dtype=np.uint8))
    with pytest.raises(TensorOverflowError, match="300.*uint8"):
        x + 300
    if "float16" in supported(device):
        h = on(device, np.array([1, 2], dtype=np.float16))
        with pytest.raises(TensorOverflowError, match="float16"):
            h * 1e6


def test_bool_arithmetic_follows_numpy(device: str) -> None:
    a = on(device, np.array([True, True, False]))
    b = on(device, np.array([True, False, False]))
    assert_close(a + b, np.array([True, True, False]), op="add")
    assert_close(a * b, np.array([True, False, False]), op="mul")
    with pytest.raises(DtypeError, match="sub"):
        a - b
    with pytest.raises(DtypeError, match="neg"):
        -a


def test_unsupported_promotion_is_refused(device: str) -> None:
    if "int8" not in supported(device):
        pytest.skip("no int8")
    t = on(device, np.array([True]))
    assert_close(ops.pow(t, t), np.power(np.array([True]), np.array([True])), op="pow")  # int8
    i, u = on(device, np.array([1], np.int8)), on(device, np.array([1], np.uint8))
    with pytest.raises(DtypeError, match=r"add.*int8, uint8.*int16"):
        i + u  # numpy: int16
    with pytest.raises(DtypeError, match=r"pow.*int16"):
        ops.pow(u, i)


# ----------------------------------------------------------------------------- int8


_INT8_EXTREMES = np.array([-128, -1, 0, 1, 127], dtype=np.int8)


def test_int8_round_trips_and_creation(device: str) -> None:
    if "int8" not in supported(device):
        pytest.skip(f"{device} does not hold int8")
    x = _INT8_EXTREMES
    assert_close(ia.tensor(x, device=device), x)  # negatives come back sign-extended
    assert_close(ia.tensor(x.tolist(), dtype=ia.int8, device=device), x)
    assert_close(ia.from_numpy(x).to(device), x)
    assert_close(ia.tensor(x, device=device).to("cpu"), x)
    assert_close(ia.zeros(2, 3, dtype="int8", device=device), np.zeros((2, 3), np.int8))
    assert_close(ia.full((2,), -128, dtype=ia.int8, device=device), np.full(2, -128, np.int8))
    wide = np.array([-128, -5, 0, 127], dtype=np.int32)
    assert_close(on(device, wide).astype("int8"), wide.astype(np.int8), op="astype")
    assert_close(on(device, x).astype("int32"), x.astype(np.int32), op="astype")
    assert_close(on(device, x).astype("float32"), x.astype(np.float32), op="astype")
    with pytest.raises(TensorOverflowError, match=r"128.*int8"):
        ia.tensor([1, 128], dtype="int8", device=device)
    with pytest.raises(TensorOverflowError, match="int8"):
        on(device, np.array([-129, 0], dtype=np.int32)).astype("int8").numpy()
    with pytest.raises(TensorOverflowError, match="int8"):
        on(device, np.array([200.0], dtype=np.float32)).astype("int8").numpy()


def test_int8_arithmetic_and_reductions(device: str) -> None:
    if "int8" not in supported(device):
        pytest.skip(f"{device} does not hold int8")
    a = np.array([[-100, -3, 0], [7, 50, 120]], dtype=np.int8)
    b = np.array([-20, 3, -5], dtype=np.int8)
    ta, tb = on(device, a), on(device, b)
    for op, ref in (("add", np.add), ("sub", np.subtract), ("maximum", np.maximum),
                    ("minimum", np.minimum), ("floor_divide", np.floor_divide),
                    ("remainder", np.remainder)):  # fmt: skip
        assert_close(getattr(ops, op)(ta, tb), ref(a, b), op=op)
    assert_close(ta - 1, a - np.int8(1), op="sub scalar")
    assert_close(ta * 1, a, op="mul scalar")
    assert_close(ops.neg(tb), -b, op="neg")
    assert_close(ops.abs(tb), np.abs(b), op="abs")
    assert_close(ta < tb, a < b, op="less")
    u = np.array([0, 200, 255], dtype=np.uint8)  # no common dtype, yet comparisons are exact
    assert_close(ta >= on(device, u), a >= u, op="greater_equal int8 uint8")
    assert_close(ta + on(device, np.array([1], np.int32)), a + np.int32(1), op="int8+int32")
    if "float64" in supported(device):
        assert_close(ta / tb, a / b, op="div")  # two integer tensors: numpy's float64
    assert_close(ta * 0.5, a.astype(np.float32) * np.float32(0.5), op="mul float")
    assert_close(ta.sum(axis=1), a.sum(axis=1, dtype=np.int64), op="sum")
    assert_close(ta.max(axis=0), a.max(axis=0), op="max")
    assert_close(ta.argmin(axis=1), a.argmin(axis=1), op="argmin")


def test_int8_overflow_raises_instead_of_wrapping(device: str) -> None:
    # numpy wraps (int8(127) + int8(1) == -128); every integer dtype here refuses instead
    if "int8" not in supported(device):
        pytest.skip(f"{device} does not hold int8")
    top = on(device, np.array([127, 0], dtype=np.int8))
    with pytest.raises(TensorOverflowError, match=r"int8 \[-128, 127\]"):
        (top + on(device, np.array([1, 1], dtype=np.int8))).numpy()
    with pytest.raises(TensorOverflowError, match="int8"):
        (on(device, np.array([-128], dtype=np.int8)) - 1).numpy()
    with pytest.raises(TensorOverflowError, match="int8"):
        (on(device, np.array([16, 2], dtype=np.int8)) * 8).numpy()
    with pytest.raises(TensorOverflowError, match="int8"):
        ops.neg(on(device, np.array([-128], dtype=np.int8))).numpy()
    with pytest.raises(TensorOverflowError, match="200.*int8"):
        top + 200
