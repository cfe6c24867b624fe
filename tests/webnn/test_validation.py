"""Build-time validation: each invalid call raises WebNNValidationError (a TypeError) naming the
op (and its label) and the offending operand or option, before anything is compiled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from ipfs_accelerate import webnn
from ipfs_accelerate.errors import WebNNInvalidStateError, WebNNValidationError

pytestmark = pytest.mark.webnn


@pytest.fixture(scope="module")
def ctx() -> webnn.MLContext:
    return webnn.create_context(accelerated=False)


@pytest.fixture
def b(ctx: webnn.MLContext) -> webnn.MLGraphBuilder:
    return webnn.MLGraphBuilder(ctx)


def f32(b: webnn.MLGraphBuilder, name: str, *shape: int) -> webnn.MLOperand:
    return b.input(name, {"dataType": "float32", "shape": list(shape)})


def typed(b: webnn.MLGraphBuilder, name: str, data_type: str, *shape: int) -> webnn.MLOperand:
    return b.input(name, {"dataType": data_type, "shape": list(shape)})


def expect(call: Callable[[], Any], *fragments: str) -> None:
    with pytest.raises(WebNNValidationError) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert isinstance(info.value, TypeError)


def test_descriptors(b: webnn.MLGraphBuilder) -> None:
    expect(lambda: b.input("x", {"dataType": "float64", "shape": [2]}), "input 'x'", "float64")
    expect(lambda: b.input("x", {"dataType": "float32", "shape": [2, 0]}), "input 'x'", "size 0")
    expect(lambda: b.input("x", {"dataType": "float32", "shape": [1] * 9}), "rank 9")
    expect(lambda: b.input("x", {"shape": [2]}), "no 'dataType'")
    expect(
        lambda: b.input("x", {"dataType": "float32", "shape": [2**31, 2**31]}),
        "maximum tensor byte length",
    )
    expect(lambda: b.input("", {"dataType": "float32", "shape": [2]}), "non-empty")
    f32(b, "x", 2)
    expect(lambda: f32(b, "x", 3), "'x' already exists")
    assert b.input("y", {"data_type": "int8", "shape": []}).shape == ()


def test_constants(b: webnn.MLGraphBuilder) -> None:
    desc = {"dataType": "float32", "shape": [2, 2]}
    expect(lambda: b.constant(desc, np.zeros(4, np.float64)), "constant", "float64", "float32")
    expect(lambda: b.constant(desc, np.zeros(5, np.float32)), "5 elements")
    expect(lambda: b.constant(desc, b"\x00" * 15), "15 bytes", "16 bytes")
    expect(lambda: b.constant({"dataType": "uint8", "shape": [2]}, [1, 256]), "do not fit uint8")
    expect(lambda: b.constant({"dataType": "int32", "shape": [2]}, [1.5, 2]), "non-integral")
    expect(lambda: b.constant("int8", 1000), "not representable as int8")
    expect(lambda: b.constant(desc), "buffer is required")
    assert b.constant("float16", 0.1).data_type == "float16"
    assert b.constant(desc, [[1, 2], [3, 4]]).shape == (2, 2)


def test_operand_from_another_builder(ctx: webnn.MLContext, b: webnn.MLGraphBuilder) -> None:
    other = webnn.MLGraphBuilder(ctx)
    foreign = f32(other, "x", 2, 2)
    mine = f32(b, "y", 2, 2)
    expect(lambda: b.add(mine, foreign), "add", "b was created by another MLGraphBuilder")
    expect(lambda: b.relu(foreign), "relu", "input was created by another MLGraphBuilder")
    expect(lambda: b.layer_normalization(mine, scale=foreign), "scale was created by another")
    expect(lambda: b.concat([mine, foreign], 0), "inputs[1] was created by another")
    expect(lambda: b.build({"out": foreign}), "build", "output 'out' was created by another")
    expect(lambda: b.add(mine, 1.0), "b must be an MLOperand")  # type: ignore[arg-type]


def test_labels_appear_in_messages(b: webnn.MLGraphBuilder) -> None:
    x = f32(b, "x", 2, 3)
    expect(
        lambda: b.softmax(x, 2, label="my-softmax"),
        "softmax [my-softmax]",
        "axis 2 is out of range for rank 2",
    )


@pytest.mark.parametrize(
    ("call", "fragments"),
    [
        (
            lambda b, x: b.reduce_sum(x, axes=[3]),
            ("reduce_sum", "axis 3 is out of range for rank 3"),
        ),
        (lambda b, x: b.reduce_sum(x, axes=[1, 1]), ("repeated axis",)),
        (lambda b, x: b.reduce_mean(x, axes=[-1]), ("axes must be in [0",)),
        (lambda b, x: b.arg_max(x, 5), ("arg_max", "axis 5")),
        (lambda b, x: b.arg_max(x, 0, output_data_type="float32"), ("output_data_type",)),
        (lambda b, x: b.softmax(x, 3), ("softmax", "axis 3")),
        (lambda b, x: b.cumulative_sum(x, 3), ("cumulative_sum", "axis 3")),
        (lambda b, x: b.transpose(x, permutation=[0, 1]), ("permutation [0, 1] must hold 3 axes",)),
        (lambda b, x: b.transpose(x, permutation=[0, 0, 1]), ("repeated axis",)),
        (lambda b, x: b.reshape(x, [5, 5]), ("reshape", "25 elements", "24")),
        (lambda b, x: b.reshape(x, [24, 0]), ("new_shape must be in [1",)),
        (lambda b, x: b.expand(x, [3, 4]), ("expand", "higher rank")),
        (lambda b, x: b.expand(x, [2, 5, 4]), ("does not broadcast to [2, 5, 4]",)),
        (lambda b, x: b.slice(x, [0, 0, 3], [1, 1, 2]), ("slice", "reach past axis 2")),
        (lambda b, x: b.slice(x, [0, 0], [1, 1]), ("starts must hold 3 values",)),
        (
            lambda b, x: b.slice(x, [0, 0, 0], [1, 1, 1], strides=[1, 0, 1]),
            ("strides must be in [1",),
        ),
        (lambda b, x: b.split(x, 5, axis=2), ("split", "does not split into 5")),
        (lambda b, x: b.split(x, [1, 2], axis=2), ("sum to 3", "size 4")),
        (lambda b, x: b.tile(x, [1, 2]), ("repetitions must hold 3",)),
        (lambda b, x: b.pad(x, [1, 1, 1], [0, 0, 4], mode="reflection"), ("reflection padding",)),
        (lambda b, x: b.pad(x, [1, 1], [0, 0]), ("beginning_padding must hold 3",)),
        (lambda b, x: b.pad(x, [0, 0, 0], [0, 0, 0], mode="symmetric"), ("mode must be one of",)),
        (
            lambda b, x: b.clamp(x, min_value=2, max_value=1),
            ("clamp", "min_value 2 is greater than max_value 1"),
        ),
        (lambda b, x: b.elu(x, alpha=float("nan")), ("alpha must be finite",)),
        (lambda b, x: b.layer_normalization(x, axes=[3]), ("layer_normalization", "axis 3")),
        (lambda b, x: b.gather(x, x), ("gather", "indices has data type float32")),
        (lambda b, x: b.triangular(b.reshape(x, [24])), ("triangular", "rank 1")),
        (lambda b, x: b.sqrt(b.cast(x, "int32")), ("sqrt", "input has data type int32")),
        (lambda b, x: b.matmul(x, x), ("matmul", "inner sizes 4 and 3 differ")),
        (
            lambda b, x: b.resample2d(b.reshape(x, [1, 2, 3, 4]), scales=[0, 1]),
            ("scales must be 2 positive",),
        ),
        (lambda b, x: b.resample2d(b.reshape(x, [1, 2, 3, 4]), axes=[1]), ("axes must hold 2",)),
        (lambda b, x: b.cast(x, "bfloat16"), ("unsupported data type 'bfloat16'",)),
    ],
)
def test_invalid_calls(
    b: webnn.MLGraphBuilder, call: Callable[..., Any], fragments: tuple[str, ...]
) -> None:
    x = f32(b, "x", 2, 3, 4)
    expect(lambda: call(b, x), *fragments)


def test_binary_and_where_shapes_and_types(b: webnn.MLGraphBuilder) -> None:
    x = f32(b, "x", 2, 3)
    y = f32(b, "y", 4, 3)
    i = typed(b, "i", "int32", 2, 3)
    expect(lambda: b.add(x, y), "add", "shapes [2, 3] and [4, 3] of a and b do not broadcast")
    expect(lambda: b.mul(x, i), "mul", "a is float32 but b is int32")
    expect(lambda: b.logical_and(x, x), "logical_and", "a has data type float32")
    c = typed(b, "c", "uint8", 2, 3)
    expect(lambda: b.where(x, x, x), "where", "condition has data type float32")
    expect(lambda: b.where(c, x, i), "false_value has data type int32")
    assert b.equal(x, x).data_type == "uint8"
    assert b.add(x, f32(b, "z", 1, 3)).shape == (2, 3)


def test_conv_and_pool_checks(b: webnn.MLGraphBuilder) -> None:
    x = f32(b, "x", 1, 4, 5, 5)
    w = f32(b, "w", 6, 2, 3, 3)
    expect(lambda: b.conv2d(x, w), "conv2d", "4 channels", "groups=1", "2 input channels")
    assert b.conv2d(x, w, groups=2).shape == (1, 6, 3, 3)
    expect(
        lambda: b.conv2d(x, w, groups=2, bias=f32(b, "bias", 5)), "bias has shape [5], expected [6]"
    )
    expect(lambda: b.conv2d(x, w, groups=2, strides=[0, 1]), "strides must be in [1")
    expect(lambda: b.conv2d(x, w, groups=2, padding=[1, 1]), "padding must hold 4")
    expect(lambda: b.conv2d(x, w, groups=2, input_layout="nwhc"), "input_layout must be one of")
    expect(
        lambda: b.conv2d(x, w, groups=2, dilations=[3, 3]),
        "dilated window 7 is larger than the padded height 5",
    )
    expect(lambda: b.conv2d(x, b.reshape(w, [6, 18])), "filter has rank 2")
    t = f32(b, "t", 4, 2, 3, 3)  # iohw
    expect(
        lambda: b.conv_transpose2d(x, t, output_padding=[1, 1]),
        "output_padding [1, 1] must be smaller than strides",
    )
    expect(
        lambda: b.conv_transpose2d(x, t, strides=[2, 2], output_sizes=[20, 11]),
        "output_sizes",
        "[11, 12]",
    )
    assert b.conv_transpose2d(x, t, strides=[2, 2], output_sizes=[12, 11]).shape == (1, 2, 12, 11)
    expect(lambda: b.max_pool2d(x, window_dimensions=[6, 6]), "max_pool2d", "dilated window 6")
    expect(
        lambda: b.average_pool2d(x, window_dimensions=[2, 2], strides=[2, 2], output_sizes=[4, 4]),
        "must be 2 or 3",
    )
    expect(
        lambda: b.l2_pool2d(x, output_shape_rounding="round"),
        "output_shape_rounding must be one of",
    )
    expect(
        lambda: b.max_pool2d(typed(b, "i", "int32", 1, 1, 2, 2)),
        "max_pool2d",
        "input has data type int32",
    )


def test_normalization_and_gemm_checks(b: webnn.MLGraphBuilder) -> None:
    x = f32(b, "x", 2, 3, 4)
    expect(
        lambda: b.batch_normalization(x, f32(b, "m", 3), f32(b, "v", 4)),
        "variance has shape [4], expected [3]",
    )
    expect(lambda: b.batch_normalization(x, f32(b, "m2", 4), f32(b, "v2", 4), axis=3), "axis 3")
    expect(
        lambda: b.layer_normalization(x, axes=[2, 0], scale=f32(b, "s", 2, 4)),
        "scale has shape [2, 4], expected [4, 2]",
    )
    a = f32(b, "a", 3, 5)
    m = f32(b, "mat", 4, 5)
    expect(lambda: b.gemm(a, m), "gemm", "inner sizes")
    expect(
        lambda: b.gemm(a, m, b_transpose=True, c=f32(b, "c", 2, 4)),
        "c of shape [2, 4] does not broadcast to [3, 4]",
    )
    assert b.gemm(a, m, b_transpose=True, c=f32(b, "c2", 4)).shape == (3, 4)


def test_recurrent_checks(b: webnn.MLGraphBuilder) -> None:
    x = f32(b, "x", 3, 2, 4)
    w = f32(b, "w", 1, 15, 4)
    r = f32(b, "r", 1, 15, 5)
    expect(lambda: b.gru(x, w, r, 2, 5), "gru", "does not hold 2 steps")
    expect(
        lambda: b.gru(x, w, r, 3, 5, direction="both"),
        "weight has shape [1, 15, 4], expected [2, 15, 4]",
    )
    expect(lambda: b.gru(x, w, r, 3, 5, activations=["sigmoid"]), "activations must hold 2")
    expect(
        lambda: b.gru(x, w, r, 3, 5, activations=["sigmoid", "gelu"]), "activations must be one of"
    )
    expect(lambda: b.gru(x, w, r, 3, 5, layout="zr"), "layout must be one of")
    outs = b.gru(x, w, r, 3, 5, return_sequence=True)
    assert [o.shape for o in outs] == [(1, 2, 5), (3, 1, 2, 5)]
    expect(lambda: b.lstm(x, f32(b, "lw", 1, 16, 4), f32(b, "lr", 1, 16, 4), 3, 4,
                          peephole_weight=f32(b, "p", 1, 4)),
           "lstm", "peephole_weight has shape [1, 4], expected [1, 12]")  # fmt: skip
    expect(lambda: b.lstm_cell(f32(b, "ci", 2, 4), f32(b, "cw", 16, 4), f32(b, "cr", 16, 4),
                               f32(b, "ch", 2, 4), f32(b, "cc", 3, 4), 4),
           "lstm_cell", "cell_state has shape [3, 4], expected [2, 4]")  # fmt: skip


def test_quantization_checks(b: webnn.MLGraphBuilder) -> None:
    x = typed(b, "x", "int8", 4, 6)
    expect(
        lambda: b.dequantize_linear(x, f32(b, "s", 4), typed(b, "z", "int8", 4)),
        "does not tile the input",
        "axis 1 of size 6",
    )
    expect(
        lambda: b.dequantize_linear(x, f32(b, "s2", 2), typed(b, "z2", "uint8", 2)),
        "zero_point has data type uint8, but must match int8",
    )
    expect(lambda: b.dequantize_linear(x, f32(b, "s3", 2), typed(b, "z3", "int8", 3)), "same shape")
    expect(
        lambda: b.quantize_linear(f32(b, "q", 4), f32(b, "qs", 4), typed(b, "qz", "uint32", 4)),
        "zero_point has data type uint32",
    )
    assert b.dequantize_linear(x, f32(b, "s4", 2, 3), typed(b, "z4", "int8", 2, 3)).shape == (4, 6)


def test_build_rules(ctx: webnn.MLContext, b: webnn.MLGraphBuilder) -> None:
    x = f32(b, "x", 2)
    c = b.constant("float32", 1.0)
    expect(lambda: b.build({}), "build", "non-empty")
    expect(lambda: b.build({"y": x}), "build", "output 'y' is the input operand 'x'")
    expect(lambda: b.build({"y": c}), "output 'y' is a constant operand")
    expect(lambda: b.build({"": b.relu(x)}), "non-empty strings")
    graph = b.build({"y": b.relu(x)})
    assert isinstance(graph, webnn.MLGraph)
    with pytest.raises(WebNNInvalidStateError, match="already built"):
        b.relu(x)
    with pytest.raises(WebNNInvalidStateError, match="already built"):
        b.build({"y": x})


def test_op_support_limits_match_the_builder(ctx: webnn.MLContext) -> None:
    limits = ctx.op_support_limits()
    assert limits["preferred_input_layout"] == "nchw"
    ops = {
        k
        for k in limits
        if k
        not in ("preferred_input_layout", "max_tensor_byte_length", "input", "constant", "output")
    }
    methods = {
        name for name in dir(webnn.MLGraphBuilder)
        if not name.startswith("_") and name not in ("input", "constant", "build")
    }  # fmt: skip
    assert ops == methods
    assert limits["conv2d"]["input"]["rank_range"] == {"min": 4, "max": 4}
    assert "int8" not in limits["sqrt"]["input"]["data_types"]
    assert limits["equal"]["output"]["data_types"] == ["uint8"]
