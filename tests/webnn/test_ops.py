"""Ops the vendored WPT vectors do not cover, checked against numpy references (reference.py)
written from the spec's definitions; also data types that need widening in ONNX Runtime."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from ipfs_accelerate import webnn
from ipfs_accelerate.errors import WebNNValidationError

from . import reference as ref

pytestmark = pytest.mark.webnn

Array = np.ndarray[Any, Any]
rng = np.random.default_rng(20251121)


@pytest.fixture(scope="module")
def ctx() -> webnn.MLContext:
    return webnn.create_context(accelerated=False)


def run(
    ctx: webnn.MLContext,
    inputs: dict[str, Array],
    body: Callable[..., Any],
    *,
    constants: bool = False,
) -> Any:
    """Build ``body(builder, *operands)`` over ``inputs`` (graph inputs, or constants) and run it.
    Returns the output array, or a list/dict of arrays when ``body`` returns several."""
    builder = webnn.MLGraphBuilder(ctx)
    operands = []
    for name, array in inputs.items():
        descriptor = {"dataType": str(array.dtype), "shape": list(array.shape)}
        operands.append(
            builder.constant(descriptor, array) if constants else builder.input(name, descriptor)
        )
    result = body(builder, *operands)
    if isinstance(result, webnn.MLOperand):
        named = {"out": result}
    elif isinstance(result, list):
        named = {f"out{i}": r for i, r in enumerate(result)}
    else:
        named = result
    graph = builder.build(named)
    feeds = {} if constants else {name: inputs[name] for name in graph.input_descriptors}
    outputs = ctx.compute(graph, feeds)
    if isinstance(result, webnn.MLOperand):
        return outputs["out"]
    if isinstance(result, list):
        return [outputs[f"out{i}"] for i in range(len(result))]
    return outputs


def f32(*shape: int, low: float = -2.0, high: float = 2.0) -> Array:
    return rng.uniform(low, high, shape).astype(np.float32)


def close(actual: Array, expected: Array, rtol: float = 2e-6, atol: float = 2e-6) -> None:
    assert actual.shape == tuple(np.shape(expected)), (actual.shape, np.shape(expected))
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=atol)


# ============================================================================ element-wise


@pytest.mark.parametrize(
    ("method", "reference"),
    [
        ("cos", np.cos),
        ("sin", np.sin),
        ("tan", np.tan),
        ("erf", ref.erf),
        ("reciprocal", lambda x: 1 / x),
        ("round_even", np.round),
        ("sign", np.sign),
        ("identity", lambda x: x),
        ("softsign", lambda x: x / (1 + np.abs(x))),
        ("softplus", lambda x: np.log1p(np.exp(x))),
        ("gelu", ref.gelu),
        ("hard_swish", lambda x: x * np.clip(x + 3, 0, 6) / 6),
        ("elu", lambda x: np.where(x >= 0, x, np.expm1(x))),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_float_unary(
    ctx: webnn.MLContext, method: str, reference: Callable[[Array], Array], dtype: type
) -> None:
    x = f32(3, 5).astype(dtype)
    if method == "round_even":
        x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.2, -3.7], dtype=dtype)
    out = run(ctx, {"x": x}, lambda b, x: getattr(b, method)(x))
    assert out.dtype == dtype
    tol = 1e-3 if dtype == np.float16 else 3e-6
    close(out, reference(x.astype(np.float64)), rtol=tol, atol=tol)


def test_elu_alpha_and_softplus_extremes(ctx: webnn.MLContext) -> None:
    x = np.array([-3.0, -0.5, 0.0, 2.0, 100.0, -100.0], np.float32)
    close(
        run(ctx, {"x": x}, lambda b, x: b.elu(x, alpha=0.5)),
        np.where(x >= 0, x, 0.5 * np.expm1(x.astype(np.float64))),
    )
    soft = run(ctx, {"x": x}, lambda b, x: b.softplus(x))
    assert np.isfinite(soft).all() and soft[4] == pytest.approx(100.0)


def test_is_nan_and_is_infinite(ctx: webnn.MLContext) -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 1.5], np.float32)
    out = run(ctx, {"x": x}, lambda b, x: [b.is_nan(x), b.is_infinite(x)])
    assert out[0].dtype == np.uint8
    np.testing.assert_array_equal(out[0], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[1], [0, 1, 1, 0, 0])


@pytest.mark.parametrize("dtype", ["float32", "int32", "int64", "uint8", "uint64"])
def test_not_equal(ctx: webnn.MLContext, dtype: str) -> None:
    a = np.array([1, 2, 3, 4], dtype)
    b = np.array([1, 0, 3, 5], dtype)
    out = run(ctx, {"a": a, "b": b}, lambda bl, a, b: bl.not_equal(a, b))
    np.testing.assert_array_equal(out, [0, 1, 0, 1])
    assert out.dtype == np.uint8


def test_logical_binary(ctx: webnn.MLContext) -> None:
    a = np.array([0, 0, 7, 255], np.uint8)
    b = np.array([0, 3, 0, 1], np.uint8)
    out = run(
        ctx,
        {"a": a, "b": b},
        lambda bl, a, b: [bl.logical_and(a, b), bl.logical_or(a, b), bl.logical_xor(a, b)],
    )
    np.testing.assert_array_equal(out[0], [0, 0, 0, 1])
    np.testing.assert_array_equal(out[1], [0, 1, 1, 1])
    np.testing.assert_array_equal(out[2], [0, 1, 1, 0])


@pytest.mark.parametrize("dtype", ["float32", "float16", "int32", "int64"])
def test_pow(ctx: webnn.MLContext, dtype: str) -> None:
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype)
    b = np.array([2, 3, 0], dtype)
    out = run(ctx, {"a": a, "b": b}, lambda bl, a, b: bl.pow(a, b))
    np.testing.assert_array_equal(out, np.power(a, b))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "uint32", "int64", "uint64"])
def test_integer_division_truncates_and_never_traps(ctx: webnn.MLContext, dtype: str) -> None:
    info = np.iinfo(dtype)
    signed = info.min < 0
    a = np.array([7, -7 if signed else 9, info.max, info.min, 5, 6], dtype)
    b = np.array([2, 2, 0, -1 if signed else 3, 0, 1], dtype)
    out = run(ctx, {"a": a, "b": b}, lambda bl, a, b: bl.div(a, b))
    expected = []
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        if y == 0:
            expected.append(0)  # documented: an integer divided by zero gives 0
        else:
            q = abs(x) // abs(y) * (1 if (x >= 0) == (y >= 0) else -1)
            expected.append(q)
    wrapped = np.array(
        [
            ((v - int(info.min)) % (int(info.max) - int(info.min) + 1)) + int(info.min)
            for v in expected
        ]
    )
    np.testing.assert_array_equal(out, wrapped.astype(dtype))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "uint32", "uint64"])
def test_widened_integer_arithmetic_wraps_like_the_type(ctx: webnn.MLContext, dtype: str) -> None:
    info = np.iinfo(dtype)
    a = np.array([info.max, info.min, 3], dtype)
    b = np.array([2, 1, 4], dtype)
    out = run(
        ctx,
        {"a": a, "b": b},
        lambda bl, a, b: [bl.add(a, b), bl.sub(b, a), bl.mul(a, b), bl.max(a, b)],
    )
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(out[0], a + b)
        np.testing.assert_array_equal(out[1], b - a)
        np.testing.assert_array_equal(out[2], a * b)
    np.testing.assert_array_equal(out[3], np.maximum(a, b))


def test_prelu_float_and_integer(ctx: webnn.MLContext) -> None:
    x = f32(2, 3, 4)
    slope = f32(4)
    close(
        run(ctx, {"x": x, "s": slope}, lambda b, x, s: b.prelu(x, s)),
        np.where(x >= 0, x, x * slope.astype(np.float64)),
    )
    xi = np.array([[-4, 5], [3, -2]], np.int32)
    si = np.array([2, 3], np.int32)
    np.testing.assert_array_equal(
        run(ctx, {"x": xi, "s": si}, lambda b, x, s: b.prelu(x, s)), np.where(xi >= 0, xi, xi * si)
    )


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "float16"])
def test_relu_and_neg_and_abs_on_every_signed_type(ctx: webnn.MLContext, dtype: str) -> None:
    x = np.array([-5, 0, 7, -1], dtype)
    out = run(ctx, {"x": x}, lambda b, x: [b.relu(x), b.neg(x), b.abs(x), b.sign(x)])
    np.testing.assert_array_equal(out[0], np.maximum(x, 0))
    np.testing.assert_array_equal(out[1], -x)
    np.testing.assert_array_equal(out[2], np.abs(x))
    np.testing.assert_array_equal(out[3], np.sign(x))


@pytest.mark.parametrize(
    ("source", "target", "values", "expected"),
    [
        ("float32", "int32", [1.9, -1.9, 0.5, 100.0], [1, -1, 0, 100]),
        ("float32", "uint8", [1.9, 200.7, 0.0, 3.0], [1, 200, 0, 3]),
        ("int32", "float16", [1, -2, 2048, 3], [1, -2, 2048, 3]),
        ("int64", "int8", [1, -2, 127, -128], [1, -2, 127, -128]),
        ("uint8", "int64", [0, 255, 7, 8], [0, 255, 7, 8]),
        ("float16", "float32", [0.5, -1.25, 65504.0, 0.0], [0.5, -1.25, 65504.0, 0.0]),
        ("int32", "uint32", [-1, 5, 0, 7], [4294967295, 5, 0, 7]),
    ],
)
def test_cast(
    ctx: webnn.MLContext, source: str, target: str, values: list[float], expected: list[float]
) -> None:
    out = run(ctx, {"x": np.array(values, source)}, lambda b, x: b.cast(x, target))
    assert out.dtype == np.dtype(target)
    np.testing.assert_array_equal(out, np.array(expected, target))


# ============================================================================ reductions


def test_reduce_l2_and_log_sum_exp(ctx: webnn.MLContext) -> None:
    x = f32(2, 3, 4)
    out = run(
        ctx,
        {"x": x},
        lambda b, x: [
            b.reduce_l2(x, axes=[1, 2]),
            b.reduce_log_sum_exp(x, axes=[0], keep_dimensions=True),
        ],
    )
    x64 = x.astype(np.float64)
    close(out[0], np.sqrt((x64**2).sum(axis=(1, 2))), rtol=1e-6)
    close(out[1], np.log(np.exp(x64).sum(axis=0, keepdims=True)), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["uint32", "uint64", "int8", "uint8", "int64"])
def test_reduce_max_min_keep_unsigned_order(ctx: webnn.MLContext, dtype: str) -> None:
    info = np.iinfo(dtype)
    x = np.array([[info.max, 1, info.min], [2, info.max - 1, 3]], dtype)
    out = run(
        ctx,
        {"x": x},
        lambda b, x: [
            b.reduce_max(x, axes=[1]),
            b.reduce_min(x, axes=[1]),
            b.arg_max(x, 1),
            b.arg_min(x, 0),
        ],
    )
    np.testing.assert_array_equal(out[0], x.max(axis=1))
    np.testing.assert_array_equal(out[1], x.min(axis=1))
    np.testing.assert_array_equal(out[2], x.argmax(axis=1))
    np.testing.assert_array_equal(out[3], x.argmin(axis=0))


@pytest.mark.parametrize("dtype", ["uint32", "uint64", "int32", "int64"])
def test_integer_sums_and_products_wrap(ctx: webnn.MLContext, dtype: str) -> None:
    info = np.iinfo(dtype)
    x = np.array([[info.max, 2, 3], [4, 5, info.max]], dtype)
    out = run(
        ctx,
        {"x": x},
        lambda b, x: [b.reduce_sum(x, axes=[1]), b.reduce_product(x), b.cumulative_sum(x, 1)],
    )
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(out[0], x.sum(axis=1, dtype=dtype))
        np.testing.assert_array_equal(out[1], np.prod(x, dtype=dtype))
        np.testing.assert_array_equal(out[2], np.cumsum(x, axis=1, dtype=dtype))


def test_arg_min_max_options(ctx: webnn.MLContext) -> None:
    x = np.array([[3, 9, 9], [7, 1, 1]], np.float32)
    out = run(
        ctx,
        {"x": x},
        lambda b, x: [
            b.arg_max(x, 1),
            b.arg_min(x, 1, keep_dimensions=True, output_data_type="int64"),
        ],
    )
    assert out[0].dtype == np.int32 and out[1].dtype == np.int64
    np.testing.assert_array_equal(out[0], [1, 0])  # ties pick the first index
    np.testing.assert_array_equal(out[1], [[0], [1]])


@pytest.mark.parametrize(
    ("exclusive", "reversed_"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_cumulative_sum(ctx: webnn.MLContext, exclusive: bool, reversed_: bool) -> None:
    x = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    out = run(
        ctx, {"x": x}, lambda b, x: b.cumulative_sum(x, 1, exclusive=exclusive, reversed=reversed_)
    )
    source = x[:, ::-1] if reversed_ else x
    expected = np.cumsum(source, axis=1)
    if exclusive:
        expected = expected - source
    if reversed_:
        expected = expected[:, ::-1]
    np.testing.assert_array_equal(out, expected)


# ============================================================================ data movement


def test_expand_tile_reverse_pad(ctx: webnn.MLContext) -> None:
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    out = run(
        ctx,
        {"x": x},
        lambda b, x: [
            b.expand(x, [4, 2, 3]),
            b.tile(x, [2, 3]),
            b.reverse(x),
            b.reverse(x, axes=[1]),
            b.pad(x, [1, 0], [0, 2], value=-9),
            b.pad(x, [1, 2], [1, 2], mode="edge"),
            b.pad(x, [1, 2], [0, 1], mode="reflection"),
        ],
    )
    np.testing.assert_array_equal(out[0], np.broadcast_to(x, (4, 2, 3)))
    np.testing.assert_array_equal(out[1], np.tile(x, (2, 3)))
    np.testing.assert_array_equal(out[2], x[::-1, ::-1])
    np.testing.assert_array_equal(out[3], x[:, ::-1])
    np.testing.assert_array_equal(out[4], np.pad(x, ((1, 0), (0, 2)), constant_values=-9))
    scalar = run(ctx, {"x": np.array(2.5, np.float32)}, lambda b, x: b.pad(x, [], []))
    assert scalar.shape == () and scalar == np.float32(2.5)  # ONNX Runtime's Pad refuses 0-D
    np.testing.assert_array_equal(out[5], np.pad(x, ((1, 1), (2, 2)), mode="edge"))
    np.testing.assert_array_equal(out[6], np.pad(x, ((1, 0), (2, 1)), mode="reflect"))


@pytest.mark.parametrize("dtype", ["float32", "int8", "uint64", "float16"])
@pytest.mark.parametrize(
    ("upper", "diagonal"), [(True, 0), (False, 0), (True, 1), (False, -1), (True, -5)]
)
def test_triangular(ctx: webnn.MLContext, dtype: str, upper: bool, diagonal: int) -> None:
    x = (np.arange(2 * 3 * 4) + 1).astype(dtype).reshape(2, 3, 4)
    out = run(ctx, {"x": x}, lambda b, x: b.triangular(x, upper=upper, diagonal=diagonal))
    expected = np.triu(x, diagonal) if upper else np.tril(x, diagonal)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", ["float32", "uint64", "int8"])
def test_where_broadcasts_all_three(ctx: webnn.MLContext, dtype: str) -> None:
    condition = np.array([[1], [0], [2]], np.uint8)
    yes = np.array([1, 2, 3, 4], dtype)
    no = np.array(9, dtype)
    out = run(ctx, {"c": condition, "t": yes, "f": no}, lambda b, c, t, f: b.where(c, t, f))
    np.testing.assert_array_equal(out, np.where(condition != 0, yes, no))


def test_split_equal_and_sized(ctx: webnn.MLContext) -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 12)
    out = run(
        ctx,
        {"x": x},
        lambda b, x: [*b.split(x, 3, axis=1), *b.split(x, [2, 7, 3], axis=1), *b.split(x, 1)],
    )
    expected = [*np.split(x, 3, axis=1), x[:, :2], x[:, 2:9], x[:, 9:], x]
    for actual, wanted in zip(out, expected, strict=True):
        np.testing.assert_array_equal(actual, wanted)


@pytest.mark.parametrize("index_type", ["int32", "uint32", "int64"])
def test_gather_clamps_out_of_range_indices(ctx: webnn.MLContext, index_type: str) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    raw = [[0, 3], [-1, 9]] if index_type != "uint32" else [[0, 3], [2, 9]]
    indices = np.array(raw, index_type)
    out = run(
        ctx,
        {"x": x, "i": indices},
        lambda b, x, i: [b.gather(x, i, axis=1), b.gather(x, i, axis=0)],
    )
    clamped1 = np.clip(indices.astype(np.int64), -4, 3)
    clamped0 = np.clip(indices.astype(np.int64), -3, 2)
    np.testing.assert_array_equal(out[0], np.take(x, clamped1, axis=1))
    np.testing.assert_array_equal(out[1], np.take(x, clamped0, axis=0))


@pytest.mark.parametrize("constant", [False, True])
def test_gather_elements_and_scatter_elements(ctx: webnn.MLContext, constant: bool) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    indices = np.array([[2, 0, 1, 7], [-1, 1, 0, 2]], np.int64)
    updates = np.full((2, 4), -1.0, np.float32)
    out = run(
        ctx,
        {"x": x, "i": indices, "u": updates},
        lambda b, x, i, u: [
            b.gather_elements(x, i, axis=0),
            b.scatter_elements(x, i[:1] if False else i, u, axis=0),
        ],
        constants=constant,
    )
    clamped = np.clip(indices, -3, 2)
    np.testing.assert_array_equal(out[0], np.take_along_axis(x, clamped, axis=0))
    expected = x.copy()
    np.put_along_axis(expected, clamped % 3, updates, axis=0)
    np.testing.assert_array_equal(out[1], expected)


@pytest.mark.parametrize("index_type", ["int32", "int64", "uint32"])
def test_gather_nd_and_scatter_nd(ctx: webnn.MLContext, index_type: str) -> None:
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    indices = np.array([[1, 2], [0, 1], [1, 7]], index_type)
    updates = np.arange(12, dtype=np.int32).reshape(3, 4) * -1
    out = run(
        ctx,
        {"x": x, "i": indices, "u": updates},
        lambda b, x, i, u: [b.gather_nd(x, i), b.scatter_nd(x, i, u)],
    )
    clamped = np.minimum(indices.astype(np.int64), [1, 2])
    np.testing.assert_array_equal(out[0], x[clamped[:, 0], clamped[:, 1]])
    expected = x.copy()
    for row, (i, j) in enumerate(clamped):
        expected[i, j] = updates[row]
    np.testing.assert_array_equal(out[1], expected)


@pytest.mark.parametrize("dtype", ["float32", "int32", "int64", "int8", "uint8"])
def test_scatter_nd_add_sums_repeated_indices(ctx: webnn.MLContext, dtype: str) -> None:
    x = np.arange(15).reshape(5, 3).astype(dtype)
    indices = np.array([[1], [4], [1], [1]], np.int64)
    updates = (np.arange(12).reshape(4, 3) + 1).astype(dtype)
    out = run(
        ctx,
        {"x": x, "i": indices, "u": updates},
        lambda b, x, i, u: b.scatter_nd(x, i, u, reduction="add"),
    )
    expected = x.copy()
    np.add.at(expected, indices[:, 0], updates)  # a fancy-index += would keep one of the 1s
    np.testing.assert_array_equal(out, expected)


def test_scatter_nd_reduction_is_checked(ctx: webnn.MLContext) -> None:
    b = webnn.MLGraphBuilder(ctx)
    i = b.input("i", {"dataType": "int64", "shape": [2, 1]})
    x = b.input("x", {"dataType": "float32", "shape": [4, 2]})
    with pytest.raises(WebNNValidationError, match="reduction must be 'none' or 'add'"):
        b.scatter_nd(x, i, b.input("u", {"dataType": "float32", "shape": [2, 2]}), reduction="max")
    h = b.input("h", {"dataType": "float16", "shape": [4, 2]})
    with pytest.raises(WebNNValidationError, match="not float16"):
        b.scatter_nd(h, i, b.input("v", {"dataType": "float16", "shape": [2, 2]}), reduction="add")


def test_slice_with_strides(ctx: webnn.MLContext) -> None:
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    out = run(ctx, {"x": x}, lambda b, x: b.slice(x, [0, 1, 0], [3, 3, 5], strides=[2, 1, 3]))
    np.testing.assert_array_equal(out, x[0:3:2, 1:4, 0:5:3])


# ============================================================================ matrix


@pytest.mark.parametrize("a_t", [False, True])
@pytest.mark.parametrize("b_t", [False, True])
@pytest.mark.parametrize("c_shape", [None, (), (4,), (3, 1), (3, 4)])
def test_gemm(ctx: webnn.MLContext, a_t: bool, b_t: bool, c_shape: tuple[int, ...] | None) -> None:
    a = f32(5, 3) if a_t else f32(3, 5)
    b = f32(4, 5) if b_t else f32(5, 4)
    inputs = {"a": a, "b": b}
    if c_shape is not None:
        inputs["c"] = f32(*c_shape)

    def body(bl: webnn.MLGraphBuilder, a: Any, b: Any, c: Any = None) -> Any:
        return bl.gemm(a, b, c=c, alpha=0.5, beta=2.0, a_transpose=a_t, b_transpose=b_t)

    out = run(ctx, inputs, body)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    expected = 0.5 * ((a64.T if a_t else a64) @ (b64.T if b_t else b64))
    if c_shape is not None:
        expected = expected + 2.0 * inputs["c"]
    close(out, expected, rtol=1e-5, atol=1e-5)


def test_matmul_broadcasts_batches(ctx: webnn.MLContext) -> None:
    a = f32(2, 1, 3, 4)
    b = f32(5, 4, 2)
    close(
        run(ctx, {"a": a, "b": b}, lambda bl, a, b: bl.matmul(a, b)),
        a.astype(np.float64) @ b,
        rtol=1e-5,
        atol=1e-5,
    )


# ============================================================================ convolution, pooling


@pytest.mark.parametrize(
    ("filter_layout", "input_layout", "groups", "options"),
    [
        ("iohw", "nchw", 1, {}),
        ("hwoi", "nhwc", 1, {"strides": [2, 2], "padding": [1, 0, 0, 1]}),
        ("ohwi", "nchw", 2, {"strides": [2, 3], "output_padding": [1, 2]}),
        ("iohw", "nhwc", 1, {"dilations": [2, 1], "output_sizes": [11, 7], "strides": [2, 2]}),
    ],
)
def test_conv_transpose2d(
    ctx: webnn.MLContext,
    filter_layout: str,
    input_layout: str,
    groups: int,
    options: dict[str, Any],
) -> None:
    x = f32(1, 4, 4, 3)  # nchw
    w = f32(4, 3, 3, 2)  # iohw: [in, out/groups, h, w]
    bias = f32(3 * groups)
    xin = x if input_layout == "nchw" else x.transpose(0, 2, 3, 1)
    win = {"iohw": w, "hwoi": w.transpose(2, 3, 1, 0), "ohwi": w.transpose(1, 2, 3, 0)}[
        filter_layout
    ]
    out = run(
        ctx,
        {"x": np.ascontiguousarray(xin), "w": np.ascontiguousarray(win), "bias": bias},
        lambda b, x, w, bias: b.conv_transpose2d(
            x,
            w,
            bias=bias,
            groups=groups,
            input_layout=input_layout,
            filter_layout=filter_layout,
            **options,
        ),
    )
    strides = tuple(options.get("strides", (1, 1)))
    dilations = tuple(options.get("dilations", (1, 1)))
    pads = tuple(options.get("padding", (0, 0, 0, 0)))
    if "output_sizes" in options:
        sizes = zip((4, 3), strides, (3, 2), dilations, strict=True)
        base = [(s - 1) * st + (k - 1) * d + 1 - pads[2 * i] - pads[2 * i + 1]
                for i, (s, st, k, d) in enumerate(sizes)]  # fmt: skip
        out_pad = tuple(o - b for o, b in zip(options["output_sizes"], base, strict=True))
    else:
        out_pad = tuple(options.get("output_padding", (0, 0)))
    expected = (
        ref.conv_transpose2d_nchw(x, w, pads, strides, dilations, out_pad, groups)
        + bias[None, :, None, None]
    )
    if input_layout == "nhwc":
        expected = expected.transpose(0, 2, 3, 1)
    close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["average", "max", "l2"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"window_dimensions": [2, 2], "strides": [2, 2]},
        {
            "window_dimensions": [3, 3],
            "padding": [1, 1, 1, 1],
            "strides": [2, 2],
            "output_shape_rounding": "ceil",
        },
        {"window_dimensions": [2, 3], "dilations": [2, 1], "layout": "nhwc"},
        # padding as large as the window (ONNX Runtime refuses that: padded explicitly)
        {"window_dimensions": [2, 2], "padding": [2, 0, 0, 2], "dilations": [2, 2]},
        {"window_dimensions": [3, 3], "strides": [2, 2], "output_sizes": [2, 3]},
    ],
)
def test_pools(ctx: webnn.MLContext, kind: str, options: dict[str, Any]) -> None:
    x = f32(1, 2, 5, 6)
    layout = options.get("layout", "nchw")
    xin = x if layout == "nchw" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    method = {"average": "average_pool2d", "max": "max_pool2d", "l2": "l2_pool2d"}[kind]
    out = run(ctx, {"x": xin}, lambda b, x: getattr(b, method)(x, **options))
    window = tuple(options.get("window_dimensions", (5, 6)))
    pads = tuple(options.get("padding", (0, 0, 0, 0)))
    strides = tuple(options.get("strides", (1, 1)))
    dilations = tuple(options.get("dilations", (1, 1)))
    sizes = []
    for i, size in enumerate((5, 6)):
        exact = (
            size + pads[2 * i] + pads[2 * i + 1] - (window[i] - 1) * dilations[i] - 1
        ) / strides[i] + 1
        sizes.append(
            math.ceil(exact)
            if options.get("output_shape_rounding") == "ceil"
            else math.floor(exact)
        )
    if "output_sizes" in options:
        sizes = list(options["output_sizes"])
    expected = ref.pool2d_nchw(x, kind, window, pads, strides, dilations, (sizes[0], sizes[1]))
    if layout == "nhwc":
        expected = expected.transpose(0, 2, 3, 1)
    close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_max_pool_window_of_padding_only_gives_zero(ctx: webnn.MLContext, layout: str) -> None:
    # 5 + 1 + 1 rows in windows of 3 at stride 3, rounded up: the last window starts on the
    # end padding and holds no element (WPT expects 0 there)
    x = f32(1, 2, 5, 5, low=-9.0, high=-1.0)  # all negative: a padded 0 would show up
    xin = x if layout == "nchw" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    options = {"window_dimensions": [3, 3], "padding": [1, 1, 1, 1], "strides": [3, 3]}
    out = run(
        ctx,
        {"x": xin},
        lambda b, x: b.max_pool2d(x, output_shape_rounding="ceil", layout=layout, **options),
    )
    expected = np.zeros((1, 2, 3, 3))
    expected[:, :, :2, :2] = ref.pool2d_nchw(x, "max", (3, 3), (1, 1, 1, 1), (3, 3), (1, 1), (2, 2))
    if layout == "nhwc":
        expected = expected.transpose(0, 2, 3, 1)
    close(out, expected)


def test_conv2d_depthwise_ihwo_and_groups(ctx: webnn.MLContext) -> None:
    x = f32(1, 4, 6, 6)
    w = f32(4, 1, 3, 3)  # oihw for groups=4 (depthwise)
    out = run(
        ctx,
        {"x": x, "w": np.ascontiguousarray(w.transpose(1, 2, 3, 0))},
        lambda b, x, w: b.conv2d(
            x, w, groups=4, filter_layout="ihwo", padding=[1, 1, 0, 2], strides=[1, 2]
        ),
    )
    close(out, ref.conv2d_nchw(x, w, (1, 1, 0, 2), (1, 2), (1, 1), 4), rtol=1e-5, atol=1e-5)


# ============================================================================ resampling


@pytest.mark.parametrize("mode", ["nearest-neighbor", "linear"])
@pytest.mark.parametrize(
    "options",
    [
        {"scales": [2.0, 2.0]},
        {"sizes": [3, 9]},
        {"scales": [0.5, 1.5]},
        {"sizes": [5, 2], "axes": [1, 2]},
        {"sizes": [4, 3], "axes": [3, 1]},
    ],
)
def test_resample2d(ctx: webnn.MLContext, mode: str, options: dict[str, Any]) -> None:
    x = f32(1, 2, 4, 6)
    out = run(ctx, {"x": x}, lambda b, x: b.resample2d(x, mode=mode, **options))
    axes = options.get("axes", [2, 3])
    expected = x.astype(np.float64)
    for i, axis in enumerate(axes):
        if "sizes" in options:
            size = options["sizes"][i]
            scale = size / x.shape[axis]
        else:
            scale = options["scales"][i]
            size = math.floor(x.shape[axis] * scale)
        expected = ref.resample_axis(
            expected, axis, size, scale, "nearest" if mode == "nearest-neighbor" else "linear"
        )
    close(out, expected, rtol=1e-5, atol=1e-5)


# ============================================================================ normalization


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_sign_keeps_nan(ctx: webnn.MLContext, dtype: type) -> None:
    """ONNX Runtime's float16 Sign kernel turns NaN into 0; the lowering runs it widened."""
    x = np.array([np.nan, -2.0, -0.0, 0.0, 3.0, np.inf], dtype=dtype)
    out = run(ctx, {"x": x}, lambda bl, v: bl.sign(v))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.sign(x))


def test_layer_normalization_of_rows_far_from_zero(ctx: webnn.MLContext) -> None:
    """|mean| >> spread: a kernel taking the variance as E[x^2] - E[x]^2 loses it all (ONNX
    Runtime's LayerNormalization was off by 0.47 at a mean of 1e7); the rows are centred first."""
    x = (np.array([[1e5], [1e7]]) + np.array([[-1.5, -0.5, 0.5, 1.5]])).astype(np.float32)
    out = run(ctx, {"x": x}, lambda bl, v: bl.layer_normalization(v, axes=[1], epsilon=1e-5))
    x64 = x.astype(np.float64)
    centred = x64 - x64.mean(axis=1, keepdims=True)
    expected = centred / np.sqrt((centred**2).mean(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize(
    ("axes", "with_scale", "with_bias"),
    [
        (None, True, True),
        ([2], True, False),
        ([1, 2], False, True),
        ([0, 2], True, True),
        ([2, 0], True, True),
        ([], True, True),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_layer_normalization(
    ctx: webnn.MLContext, axes: list[int] | None, with_scale: bool, with_bias: bool, dtype: type
) -> None:
    x = (f32(2, 3, 4) * 3 + 10).astype(dtype)  # an offset mean stresses the variance formula
    chosen = [1, 2] if axes is None else axes
    param_shape = [x.shape[a] for a in chosen]
    scale = f32(*param_shape).astype(dtype)
    bias = f32(*param_shape).astype(dtype)
    inputs = {"x": x}
    if with_scale:
        inputs["s"] = scale
    if with_bias:
        inputs["b"] = bias

    def body(bl: webnn.MLGraphBuilder, x: Any, *params: Any) -> Any:
        p = list(params)
        return bl.layer_normalization(
            x,
            axes=axes,
            scale=p.pop(0) if with_scale else None,
            bias=p.pop(0) if with_bias else None,
            epsilon=1e-3,
        )

    out = run(ctx, inputs, body)
    x64 = x.astype(np.float64)
    t = tuple(chosen)
    mean = x64.mean(axis=t, keepdims=True) if t else x64
    var = ((x64 - mean) ** 2).mean(axis=t, keepdims=True) if t else np.zeros_like(x64)
    expected = (x64 - mean) / np.sqrt(var + 1e-3)
    order = np.argsort(chosen)
    shape = [1] * 3
    for a in chosen:
        shape[a] = x.shape[a]
    if with_scale:
        expected = expected * scale.astype(np.float64).transpose(order).reshape(shape)
    if with_bias:
        expected = expected + bias.astype(np.float64).transpose(order).reshape(shape)
    tol = 4e-3 if dtype == np.float16 else 2e-5
    close(out, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_instance_normalization(ctx: webnn.MLContext, layout: str) -> None:
    x = f32(2, 3, 4, 5) * 2 + 1
    scale, bias = f32(3), f32(3)
    xin = x if layout == "nchw" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = run(
        ctx,
        {"x": xin, "s": scale, "b": bias},
        lambda bl, x, s, b: bl.instance_normalization(x, scale=s, bias=b, layout=layout),
    )
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(2, 3), keepdims=True)
    var = x64.var(axis=(2, 3), keepdims=True)
    expected = (x64 - mean) / np.sqrt(var + 1e-5) * scale[None, :, None, None] + bias[
        None, :, None, None
    ]
    if layout == "nhwc":
        expected = expected.transpose(0, 2, 3, 1)
    close(out, expected, rtol=1e-4, atol=1e-4)
    plain = run(ctx, {"x": xin}, lambda bl, x: bl.instance_normalization(x, layout=layout))
    bare = (x64 - mean) / np.sqrt(var + 1e-5)
    close(plain, bare if layout == "nchw" else bare.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


# ============================================================================ quantization


def test_dequantize_linear_per_tensor_axis_and_blocks(ctx: webnn.MLContext) -> None:
    x = rng.integers(-128, 127, (6, 4)).astype(np.int8)
    cases = [
        (np.array(0.5, np.float32), np.array(3, np.int8)),
        (f32(4), rng.integers(-5, 5, 4).astype(np.int8)),
        (f32(2, 2), rng.integers(-5, 5, (2, 2)).astype(np.int8)),  # blocks of 3 x 2
        (f32(6, 1), rng.integers(-5, 5, (6, 1)).astype(np.int8)),
    ]
    for scale, zero in cases:
        out = run(
            ctx, {"x": x, "s": scale, "z": zero}, lambda b, x, s, z: b.dequantize_linear(x, s, z)
        )
        padded = scale.reshape((1,) * (2 - scale.ndim) + scale.shape)
        blocks = (6 // padded.shape[0], 4 // padded.shape[1])
        s_up = np.repeat(np.repeat(padded, blocks[0], 0), blocks[1], 1)
        z_up = np.repeat(np.repeat(zero.reshape(padded.shape), blocks[0], 0), blocks[1], 1)
        close(out, (x.astype(np.float64) - z_up) * s_up, rtol=1e-6)


@pytest.mark.parametrize("target", ["uint8", "int8", "int32"])
def test_quantize_linear_rounds_half_to_even_and_saturates(
    ctx: webnn.MLContext, target: str
) -> None:
    x = np.array([[0.5, 1.5, 2.5, -0.5], [1000.0, -1000.0, 3.2, 7.0]], np.float32)
    scale = np.array([1.0, 0.5], np.float32).reshape(2, 1)
    zero = np.array([[0], [10]], target)
    out = run(ctx, {"x": x, "s": scale, "z": zero}, lambda b, x, s, z: b.quantize_linear(x, s, z))
    info = np.iinfo(target)
    expected = np.clip(np.round(x.astype(np.float64) / scale) + zero, info.min, info.max).astype(
        target
    )
    assert out.dtype == np.dtype(target)
    np.testing.assert_array_equal(out, expected)


def test_quantize_linear_to_int32_divides_exactly(ctx: webnn.MLContext) -> None:
    # x / scale is about 2.6e7, where float32 steps by 2: the quotient needs float64
    x = np.array([7391419.0, -22405.496], np.float32)
    scale = np.array([0.2800687253475189, 1.1202747821807861], np.float32)
    zero = np.array([-2445234, 32345], np.int32)
    out = run(ctx, {"x": x, "s": scale, "z": zero}, lambda b, x, s, z: b.quantize_linear(x, s, z))
    expected = np.round(x.astype(np.float64) / scale.astype(np.float64)) + zero
    np.testing.assert_array_equal(out, expected.astype(np.int32))
    assert out[0] == 23946213


# ============================================================================ recurrent networks


@pytest.mark.parametrize(
    ("direction", "options"),
    [
        ("forward", {}),
        ("backward", {"return_sequence": True, "reset_after": False}),
        ("both", {"return_sequence": True, "layout": "rzn", "activations": ("sigmoid", "relu")}),
        ("forward", {"return_sequence": True, "initial": True, "bias": True}),
    ],
)
def test_gru(ctx: webnn.MLContext, direction: str, options: dict[str, Any]) -> None:
    steps, batch, size, hidden = 3, 2, 4, 5
    dirs = 2 if direction == "both" else 1
    x, w, r = (
        f32(steps, batch, size),
        f32(dirs, 3 * hidden, size) * 0.5,
        f32(dirs, 3 * hidden, hidden) * 0.5,
    )
    inputs = {
        "x": x,
        "w": w,
        "r": r,
        "b": f32(dirs, 3 * hidden),
        "rb": f32(dirs, 3 * hidden),
        "h0": f32(dirs, batch, hidden),
    }
    keywords = {
        k: v
        for k, v in options.items()
        if k in ("return_sequence", "reset_after", "layout", "activations")
    }
    with_bias = options.get("bias", direction == "both")
    with_initial = options.get("initial", False)

    def body(bl: webnn.MLGraphBuilder, x: Any, w: Any, r: Any, b: Any, rb: Any, h0: Any) -> Any:
        extra = {"bias": b, "recurrent_bias": rb} if with_bias else {}
        if with_initial:
            extra["initial_hidden_state"] = h0
        return bl.gru(x, w, r, steps, hidden, direction=direction, **keywords, **extra)

    out = run(ctx, inputs, body)
    ref_options: dict[str, Any] = dict(keywords)
    if with_bias:
        ref_options.update(bias=inputs["b"], recurrent_bias=inputs["rb"])
    if with_initial:
        ref_options["initial_hidden_state"] = inputs["h0"]
    expected = ref.recurrent("gru", x, w, r, hidden, direction, ref_options)
    assert len(out) == len(expected)
    for actual, wanted in zip(out, expected, strict=True):
        close(actual, wanted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("direction", "options"),
    [
        ("forward", {}),
        ("backward", {"return_sequence": True, "peephole": True}),
        ("both", {"return_sequence": True, "layout": "ifgo", "initial": True, "bias": True}),
    ],
)
def test_lstm(ctx: webnn.MLContext, direction: str, options: dict[str, Any]) -> None:
    steps, batch, size, hidden = 3, 2, 3, 4
    dirs = 2 if direction == "both" else 1
    x, w, r = (
        f32(steps, batch, size),
        f32(dirs, 4 * hidden, size) * 0.5,
        f32(dirs, 4 * hidden, hidden) * 0.5,
    )
    inputs = {
        "x": x, "w": w, "r": r, "b": f32(dirs, 4 * hidden), "rb": f32(dirs, 4 * hidden),
        "p": f32(dirs, 3 * hidden), "h0": f32(dirs, batch, hidden), "c0": f32(dirs, batch, hidden),
    }  # fmt: skip
    keywords = {k: v for k, v in options.items() if k in ("return_sequence", "layout")}

    def body(
        bl: webnn.MLGraphBuilder, x: Any, w: Any, r: Any, b: Any, rb: Any, p: Any, h0: Any, c0: Any
    ) -> Any:
        extra: dict[str, Any] = {}
        if options.get("bias"):
            extra.update(bias=b, recurrent_bias=rb)
        if options.get("peephole"):
            extra["peephole_weight"] = p
        if options.get("initial"):
            extra.update(initial_hidden_state=h0, initial_cell_state=c0)
        return bl.lstm(x, w, r, steps, hidden, direction=direction, **keywords, **extra)

    out = run(ctx, inputs, body)
    ref_options: dict[str, Any] = dict(keywords)
    if options.get("bias"):
        ref_options.update(bias=inputs["b"], recurrent_bias=inputs["rb"])
    if options.get("peephole"):
        ref_options["peephole_weight"] = inputs["p"]
    if options.get("initial"):
        ref_options.update(initial_hidden_state=inputs["h0"], initial_cell_state=inputs["c0"])
    expected = ref.recurrent("lstm", x, w, r, hidden, direction, ref_options)
    assert len(out) == len(expected)
    for actual, wanted in zip(out, expected, strict=True):
        close(actual, wanted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("constant_weights", [False, True])
def test_gru_cell_and_lstm_cell(ctx: webnn.MLContext, constant_weights: bool) -> None:
    batch, size, hidden = 2, 3, 4
    x, h, c = f32(batch, size), f32(batch, hidden), f32(batch, hidden)
    w3, r3, b3 = f32(3 * hidden, size), f32(3 * hidden, hidden), f32(3 * hidden)
    w4, r4, b4, p = f32(4 * hidden, size), f32(4 * hidden, hidden), f32(4 * hidden), f32(3 * hidden)
    builder = webnn.MLGraphBuilder(ctx)

    def operand(name: str, array: Array, weight: bool = False) -> Any:
        descriptor = {"dataType": "float32", "shape": list(array.shape)}
        if weight and constant_weights:
            return builder.constant(descriptor, array)
        return builder.input(name, descriptor)

    feeds = {"x": x, "h": h, "c": c}
    names = {"w3": w3, "r3": r3, "b3": b3, "w4": w4, "r4": r4, "b4": b4, "p": p}
    ops = {k: operand(k, v) for k, v in feeds.items()}
    ops.update({k: operand(k, v, weight=True) for k, v in names.items()})
    if not constant_weights:
        feeds.update(names)
    gru = builder.gru_cell(
        ops["x"],
        ops["w3"],
        ops["r3"],
        ops["h"],
        hidden,
        bias=ops["b3"],
        layout="rzn",
        reset_after=False,
    )
    lstm_h, lstm_c = builder.lstm_cell(
        ops["x"],
        ops["w4"],
        ops["r4"],
        ops["h"],
        ops["c"],
        hidden,
        recurrent_bias=ops["b4"],
        peephole_weight=ops["p"],
        layout="ifgo",
    )
    graph = builder.build({"gru": gru, "h": lstm_h, "c": lstm_c})
    out = ctx.compute(graph, feeds)
    close(
        out["gru"],
        ref.gru_cell(x, w3, r3, h, hidden, b3, None, False, "rzn", ("sigmoid", "tanh")),
        rtol=1e-5,
        atol=1e-5,
    )
    want_h, want_c = ref.lstm_cell(
        x, w4, r4, h, c, hidden, None, b4, p, "ifgo", ("sigmoid", "tanh", "tanh")
    )
    close(out["h"], want_h, rtol=1e-5, atol=1e-5)
    close(out["c"], want_c, rtol=1e-5, atol=1e-5)


# ============================================================================ float16 end to end


def test_float16_block_matches_float32_within_half_precision(ctx: webnn.MLContext) -> None:
    x = f32(4, 8)
    w = f32(8, 8) * 0.3

    def body(b: webnn.MLGraphBuilder, x: Any, w: Any) -> Any:
        return b.softmax(b.gelu(b.layer_normalization(b.matmul(x, w), axes=[1])), 1)

    full = run(ctx, {"x": x, "w": w}, body)
    half = run(ctx, {"x": x.astype(np.float16), "w": w.astype(np.float16)}, body)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), full, rtol=2e-2, atol=2e-3)


def test_transformer_block_matches_numpy(
    ctx: webnn.MLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmark's encoder block, small, against a float64 numpy forward pass."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "webnn.py"
    monkeypatch.syspath_prepend(str(path.parent))  # its helpers import from beside it
    spec = importlib.util.spec_from_file_location("webnn_benchmark", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    batch, seq, hidden, heads = 2, 8, 16, 4
    weights = bench.make_weights(hidden, seed=3)
    graph = bench.transformer_block(ctx, weights, batch, seq, hidden, heads)
    x = f32(batch, seq, hidden)
    out = ctx.compute(graph, {"x": x})["y"]

    w = [a.astype(np.float64) for a in weights]

    def norm(v: Array, scale: Array, bias: Array) -> Array:
        mean = v.mean(-1, keepdims=True)
        return (v - mean) / np.sqrt(v.var(-1, keepdims=True) + 1e-5) * scale + bias

    def heads_of(v: Array) -> Array:
        return v.reshape(batch, seq, heads, hidden // heads).transpose(0, 2, 1, 3)

    h = norm(x.astype(np.float64), w[0], w[1])
    q, k, v = (heads_of(h @ w[i] + w[i + 1]) for i in (2, 4, 6))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hidden // heads)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    attended = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
    x1 = x + attended @ w[8] + w[9]
    mlp = ref.gelu(norm(x1, w[10], w[11]) @ w[12] + w[13]) @ w[14] + w[15]
    close(out, x1 + mlp, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("shapes", "body"),
    [
        (
            [(2, 1, 3), (2, 12, 3), (2, 12, 4)],
            lambda b, x, w, r: b.gru(x, w, r, 2, 4, direction="both", return_sequence=True),
        ),
        (
            [(2, 1, 3), (1, 16, 3), (1, 16, 4)],
            lambda b, x, w, r: b.lstm(x, w, r, 2, 4, return_sequence=True),
        ),
        ([(1, 2, 3, 3), (2, 2, 2, 2)], lambda b, x, w: b.conv_transpose2d(x, w, strides=[2, 2])),
        ([(1, 2, 3, 3)], lambda b, x: b.resample2d(x, mode="linear", scales=[2.0, 1.5])),
        ([(1, 3, 3, 2)], lambda b, x: b.instance_normalization(x, layout="nhwc")),
        ([(2, 3, 4)], lambda b, x: b.reduce_log_sum_exp(x, axes=[0, 2])),
    ],
)
def test_float16_matches_float32(
    ctx: webnn.MLContext, shapes: list[tuple[int, ...]], body: Callable[..., Any]
) -> None:
    arrays = {f"in{i}": f32(*shape) * 0.5 for i, shape in enumerate(shapes)}
    full = run(ctx, arrays, body)
    half = run(ctx, {k: v.astype(np.float16) for k, v in arrays.items()}, body)
    for a, b in zip(
        half if isinstance(half, list) else [half],
        full if isinstance(full, list) else [full],
        strict=True,
    ):
        assert a.dtype == np.float16
        np.testing.assert_allclose(a.astype(np.float32), b, rtol=1e-2, atol=1e-2)
