"""The int4/uint4 operand types: an extension to the spec's MLOperandDataType (docs/webnn.md).

Values are held one per int8/uint8 element and packed two per byte (low nibble first) only in
bytes-like buffers; every way in checks the 4-bit range.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from ipfs_accelerate import webnn
from ipfs_accelerate.errors import WebNNValidationError
from ipfs_accelerate.webnn._types import pack_four_bit, unpack_four_bit

pytestmark = pytest.mark.webnn


@pytest.fixture(scope="module")
def ctx() -> webnn.MLContext:
    return webnn.create_context(accelerated=False)


def test_packing_round_trips_and_sign_extends() -> None:
    values = np.array([-8, -1, 0, 7, 3], np.int8)
    packed = pack_four_bit(values)
    assert packed == bytes([0xF8, 0x70, 0x03])  # low nibble first, odd count padded
    descriptor = webnn.MLOperandDescriptor("int4", (5,))
    assert descriptor.byte_length == 3
    np.testing.assert_array_equal(unpack_four_bit(packed, descriptor), values)
    unsigned = np.array([15, 0, 9, 1], np.uint8)
    out = unpack_four_bit(pack_four_bit(unsigned), webnn.MLOperandDescriptor("uint4", (2, 2)))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, unsigned.reshape(2, 2))


@pytest.mark.parametrize("form", ["array", "list", "bytes"])
def test_int4_constant_dequantizes(ctx: webnn.MLContext, form: str) -> None:
    values = np.array([[-8, -3, 0], [7, 1, -1]], np.int8)
    data = {"array": values, "list": values.tolist(), "bytes": pack_four_bit(values)}[form]
    b = webnn.MLGraphBuilder(ctx)
    x = b.constant({"dataType": "int4", "shape": [2, 3]}, data)
    scale = b.constant({"dataType": "float32", "shape": [2, 1]}, np.array([[0.5], [2.0]], "f4"))
    zero = b.constant({"dataType": "int4", "shape": [2, 1]}, np.array([[-2], [3]], np.int8))
    graph = b.build({"y": b.dequantize_linear(x, scale, zero)})
    out = ctx.compute(graph, {})["y"]
    expected = (values.astype(np.float64) - [[-2], [3]]) * [[0.5], [2.0]]
    np.testing.assert_array_equal(out, expected.astype(np.float32))


@pytest.mark.parametrize(("data_type", "low", "high"), [("int4", -8, 7), ("uint4", 0, 15)])
def test_quantize_to_four_bits_saturates(
    ctx: webnn.MLContext, data_type: str, low: int, high: int
) -> None:
    b = webnn.MLGraphBuilder(ctx)
    x = b.input("x", {"dataType": "float32", "shape": [6]})
    scale = b.constant("float32", 0.5)
    zero = b.constant(data_type, 1)
    q = b.quantize_linear(x, scale, zero)
    assert q.data_type == data_type
    # through int4 data movement and back to float
    moved = b.transpose(b.reshape(b.identity(q), [2, 3]))
    y = b.dequantize_linear(moved, b.constant("float32", 1.0), b.constant(data_type, 0))
    graph = b.build({"q": q, "y": y})
    x_values = np.array([100.0, -100.0, 0.75, 1.25, -0.25, 2.0], np.float32)
    out = ctx.compute(graph, {"x": x_values})
    expected = np.clip(np.round(x_values.astype(np.float64) / 0.5) + 1, low, high)
    held = np.int8 if data_type == "int4" else np.uint8
    assert out["q"].dtype == held
    np.testing.assert_array_equal(out["q"], expected.astype(held))
    np.testing.assert_array_equal(out["y"], expected.reshape(2, 3).T.astype(np.float32))
    # the same through tensors: read_tensor gives one value per element
    tx = ctx.create_tensor({"dataType": "float32", "shape": [6]}, writable=True)
    tq = ctx.create_tensor({"dataType": data_type, "shape": [6]}, readable=True)
    ty = ctx.create_tensor({"dataType": "float32", "shape": [3, 2]}, readable=True)
    ctx.write_tensor(tx, x_values)
    ctx.dispatch(graph, {"x": tx}, {"q": tq, "y": ty})
    np.testing.assert_array_equal(ctx.read_tensor(tq), expected.astype(held))


def test_int4_input_runs_with_range_checks(ctx: webnn.MLContext) -> None:
    b = webnn.MLGraphBuilder(ctx)
    x = b.input("x", {"dataType": "uint4", "shape": [3]})
    y = b.dequantize_linear(x, b.constant("float32", 2.0), b.constant("uint4", 15))
    graph = b.build({"y": y})
    out = ctx.compute(graph, {"x": np.array([0, 15, 9], np.uint8)})["y"]
    np.testing.assert_array_equal(out, np.array([-30, 0, -12], np.float32))
    # the fast path for an array of the held dtype still checks the range
    with pytest.raises(WebNNValidationError, match=r"input 'x'.*16 do not fit uint4 \[0, 15\]"):
        ctx.compute(graph, {"x": np.array([0, 16, 9], np.uint8)})
    tensor = ctx.create_tensor({"dataType": "uint4", "shape": [3]}, writable=True)
    with pytest.raises(WebNNValidationError, match=r"write_tensor.*200 do not fit uint4"):
        ctx.write_tensor(tensor, np.array([1, 200, 3], np.uint8))
    ctx.write_tensor(tensor, bytes([0x21, 0x03]))  # packed: 1, 2, 3
    out_tensor = ctx.create_tensor({"dataType": "float32", "shape": [3]}, readable=True)
    ctx.dispatch(graph, {"x": tensor}, {"y": out_tensor})
    np.testing.assert_array_equal(ctx.read_tensor(out_tensor), np.array([-28, -26, -24], "f4"))


def test_int4_bad_input_is_refused(ctx: webnn.MLContext) -> None:
    b = webnn.MLGraphBuilder(ctx)
    int4 = {"dataType": "int4", "shape": [2, 2]}
    with pytest.raises(WebNNValidationError, match=r"constant.*8 do not fit int4 \[-8, 7\]"):
        b.constant(int4, np.array([[0, 8], [1, 2]], np.int8))
    with pytest.raises(WebNNValidationError, match=r"-9 do not fit int4"):
        b.constant(int4, [[0, -9], [1, 2]])
    with pytest.raises(WebNNValidationError, match=r"array dtype int32 does not match.*int4"):
        b.constant(int4, np.zeros((2, 2), np.int32))
    with pytest.raises(WebNNValidationError, match="buffer of 4 bytes.*2 bytes"):
        b.constant(int4, bytes(4))
    with pytest.raises(WebNNValidationError, match="value 8 is not representable as int4"):
        b.constant("int4", 8)
    x = b.input("x", int4)
    # the extension reaches quantization and data movement only, not arithmetic or cast
    with pytest.raises(WebNNValidationError, match="int4"):
        b.add(x, x)
    with pytest.raises(WebNNValidationError, match="int4"):
        b.cast(x, "float32")
    with pytest.raises(WebNNValidationError, match="int4"):
        b.cast(b.input("f", {"dataType": "float32", "shape": [2]}), "int4")


def test_op_support_limits_list_the_extension(ctx: webnn.MLContext) -> None:
    limits = ctx.op_support_limits()
    assert {"int4", "uint4"} <= set(limits["input"]["data_types"])
    assert {"int4", "uint4"} <= set(limits["dequantize_linear"]["input"]["data_types"])
    assert {"int4", "uint4"} <= set(limits["quantize_linear"]["output"]["data_types"])
    assert {"int4", "uint4"} <= set(limits["reshape"]["input"]["data_types"])
    assert "int4" not in limits["add"]["a"]["data_types"]
    assert "int4" not in limits["cast"]["input"]["data_types"]
    assert "int4" in webnn.DATA_TYPES
