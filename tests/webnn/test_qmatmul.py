"""WebNN graphs built by hand with the quantized-matmul patterns run ONNX Runtime's integer
kernels (checked with its profiler), and give the numpy model's results; layouts no kernel
takes stay correct through the plain lowering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.webnn.quantized_kernels import fake_quant, kernels, profiled, row_fake_quant

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.webnn

K, N, M = 64, 96, 10
TINY = 1.1754943508222875e-38


@pytest.fixture
def ctx() -> Any:
    from ipfs_accelerate import webnn

    return webnn.create_context()


def _weight(
    bits: int, block: int | None, signed: bool = True, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A (K, N) weight's integers, scales and zero points (blocks along K, or per column)
    and its dequantized value."""
    rng = np.random.default_rng(seed)
    rows = K // block if block else 1
    high = (1 << bits) - 1 if not signed else (1 << (bits - 1)) - 1
    low = 0 if not signed else -high
    values = rng.integers(low, high + 1, size=(K, N)).astype(np.int8 if signed else np.uint8)
    scale = rng.uniform(0.01, 0.1, size=(rows, N)).astype(np.float32)
    if signed:
        zero = np.zeros((rows, N), values.dtype)
    else:
        zero = rng.integers(0, high + 1, size=(rows, N)).astype(np.uint8)
    expanded = np.repeat(scale, K // rows, axis=0), np.repeat(zero, K // rows, axis=0)
    dense = (values.astype(np.float32) - expanded[1]) * expanded[0]
    return values, scale, zero, dense


def _dequantized(b: Any, values: np.ndarray, scale: np.ndarray, zero: np.ndarray, kind: str) -> Any:
    return b.dequantize_linear(
        b.constant({"dataType": kind, "shape": list(values.shape)}, values),
        b.constant({"dataType": "float32", "shape": list(scale.shape)}, scale),
        b.constant({"dataType": kind, "shape": list(zero.shape)}, zero),
    )


def _dynamic(b: Any, x: Any, levels: float = 255.0) -> Any:
    """The DynamicQuantizeLinear pattern of docs/webnn.md ("Quantized matmul")."""
    nought = b.constant("float32", 0.0)
    low = b.min(b.reduce_min(x), nought)
    high = b.max(nought, b.reduce_max(x))  # either operand order
    scale = b.max(
        b.div(b.sub(high, low), b.constant("float32", levels)), b.constant("float32", TINY)
    )
    zero = b.cast(
        b.clamp(b.round_even(b.neg(b.div(low, scale))), min_value=0, max_value=255), "uint8"
    )
    return b.dequantize_linear(b.quantize_linear(x, scale, zero), scale, zero)


def _run(ctx: Any, build: Any, x: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Any:
    from ipfs_accelerate import webnn

    b = webnn.MLGraphBuilder(ctx)
    inp = b.input("x", {"dataType": "float32", "shape": list(x.shape)})
    outputs = build(b, inp)
    with profiled(monkeypatch, tmp):
        graph = b.build(outputs)
    result = ctx.compute(graph, {"x": x})
    return result, kernels(graph), [node.op_type for node in graph._lowered.model.graph.node]


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((M, K)).astype(np.float32)


def _weight_only(
    ctx: Any, weight: tuple[np.ndarray, ...], kind: str, seed: int,
    monkeypatch: pytest.MonkeyPatch, tmp: Path,
) -> set[str]:  # fmt: skip
    """Runs x @ W for a weight of :func:`_weight`, checks the values; the kernels that ran."""
    values, scale, zero, dense = weight
    x = _x(seed)
    got, ran, _ = _run(
        ctx,
        lambda b, inp: {"y": b.matmul(inp, _dequantized(b, values, scale, zero, kind))},
        x,
        monkeypatch,
        tmp,
    )
    np.testing.assert_allclose(got["y"], x @ dense, rtol=1e-5, atol=1e-4)
    return ran


@pytest.mark.parametrize("signed", [True, False])
def test_int4_blockwise_weight_runs_matmulnbits(
    ctx: Any, signed: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values, scale, zero, dense = _weight(4, 32, signed)
    x = _x()
    kind = "int4" if signed else "uint4"
    bias = np.linspace(-1, 1, N, dtype=np.float32)

    def build(b: Any, inp: Any) -> dict[str, Any]:
        product = b.matmul(inp, _dequantized(b, values, scale, zero, kind))
        return {"y": b.add(product, b.constant({"dataType": "float32", "shape": [N]}, bias))}

    got, ran, lowered = _run(ctx, build, x, monkeypatch, tmp_path)
    assert "MatMulNBits" in ran and not ran & {"MatMul", "Gemm", "Add"}
    assert lowered == ["MatMulNBits"]  # the dequantization and the bias went into the kernel
    np.testing.assert_allclose(got["y"], x @ dense + bias, rtol=1e-5, atol=1e-4)


def test_per_column_int4_weight_picks_a_block_along_k(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran = _weight_only(ctx, _weight(4, None), "int4", 2, monkeypatch, tmp_path)
    assert "MatMulNBits" in ran and "MatMul" not in ran


def test_dynamic_int8_pattern_runs_dynamicquantizematmul(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values, scale, zero, dense = _weight(8, None)
    x = _x(3)
    bias = np.linspace(-1, 1, N, dtype=np.float32)

    def build(b: Any, inp: Any) -> dict[str, Any]:
        product = b.matmul(_dynamic(b, inp), _dequantized(b, values, scale, zero, "int8"))
        return {"y": b.add(b.constant({"dataType": "float32", "shape": [1, N]}, bias), product)}

    got, ran, lowered = _run(ctx, build, x, monkeypatch, tmp_path)
    assert ran == {"DynamicQuantizeMatMul"}
    assert lowered == ["DynamicQuantizeMatMul"]  # the scale computation is the kernel's own
    np.testing.assert_allclose(got["y"], fake_quant(x) @ dense + bias, rtol=1e-4, atol=2e-2)
    assert np.abs(got["y"] - (x @ dense + bias)).max() > 1e-3  # x really was quantized


def test_products_of_one_input_quantize_it_once(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Attention's q, k and v: three dynamic patterns of one x (as the webnn backend emits
    them, one per Linear) become one DynamicQuantizeLinear and three MatMulIntegerToFloat,
    with the results of three DynamicQuantizeMatMul."""
    weights = [_weight(8, None, seed=seed) for seed in (0, 1, 2)]
    x = _x(4)
    bias = np.linspace(-1, 1, N, dtype=np.float32)

    def products(b: Any, inp: Any, which: list[int]) -> dict[str, Any]:
        found = {}
        for index in which:
            values, scale, zero, _ = weights[index]
            product = b.matmul(_dynamic(b, inp), _dequantized(b, values, scale, zero, "int8"))
            found[f"y{index}"] = product
        if 0 in which:  # one with a bias (the kernel's bias input)
            found["y0"] = b.add(
                found["y0"], b.constant({"dataType": "float32", "shape": [N]}, bias)
            )
        return found

    got, ran, lowered = _run(
        ctx, lambda b, inp: products(b, inp, [0, 1, 2]), x, monkeypatch, tmp_path
    )
    assert sorted(lowered) == [
        "DynamicQuantizeLinear",
        *["MatMulIntegerToFloat"] * 3,
    ]
    assert {"DynamicQuantizeLinear", "MatMulIntegerToFloat"} <= ran
    assert not ran & {"DynamicQuantizeMatMul", "MatMul", "ReduceMin", "ReduceMax"}
    for index, (_, _, _, dense) in enumerate(weights):
        expected = fake_quant(x) @ dense + (bias if index == 0 else 0)
        np.testing.assert_allclose(got[f"y{index}"], expected, rtol=1e-4, atol=2e-2)
        # the same values as the product alone (one DynamicQuantizeMatMul)
        alone, ran_alone, _ = _run(
            ctx, lambda b, inp, i=index: products(b, inp, [i]), x, monkeypatch, tmp_path
        )
        assert "DynamicQuantizeMatMul" in ran_alone
        np.testing.assert_allclose(got[f"y{index}"], alone[f"y{index}"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", ["other-levels", "fixed-scale"])
def test_other_activation_quantization_runs_matmulintegertofloat(
    ctx: Any, variant: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values, scale, zero, dense = _weight(8, None, signed=False, seed=4)
    x = _x(4)

    def build(b: Any, inp: Any) -> dict[str, Any]:
        if variant == "other-levels":  # not DynamicQuantizeLinear's: no DynamicQuantizeMatMul
            a = _dynamic(b, inp, levels=200.0)
        else:
            s, z = b.constant("float32", 0.03), b.constant("uint8", 128)
            a = b.dequantize_linear(b.quantize_linear(inp, s, z), s, z)
        return {"y": b.matmul(a, _dequantized(b, values, scale, zero, "uint8"))}

    got, ran, _ = _run(ctx, build, x, monkeypatch, tmp_path)
    assert "MatMulIntegerToFloat" in ran and not ran & {"MatMul", "DynamicQuantizeMatMul"}
    if variant == "fixed-scale":
        q = np.clip(np.rint(x / np.float32(0.03)) + 128, 0, 255)
        a = ((q - 128) * np.float32(0.03)).astype(np.float32)
    else:
        low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        s = np.float32((high - low) / 200)
        z = np.clip(np.rint(-low / s), 0, 255)
        a = ((np.clip(np.rint(x / s) + z, 0, 255) - z) * s).astype(np.float32)
    np.testing.assert_allclose(got["y"], a @ dense, rtol=1e-4, atol=2e-2)


def _per_row(b: Any, x: Any) -> Any:
    """Per-row DynamicQuantizeLinear of a 2-D x (docs/webnn.md): (M, 1) scale and zero point."""
    from ipfs_accelerate.hal.webnn._quantized import row_quantize

    return row_quantize(b, x)


@pytest.mark.parametrize(("signed", "seed"), [(True, 7), (False, 8)])
def test_per_row_activations_run_matmulintegertofloat(
    ctx: Any, signed: bool, seed: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values, scale, zero, dense = _weight(8, None, signed=signed, seed=seed)
    if not signed:
        # near each column's middle, as an asymmetric quantizer puts it: few correction rows
        zero = np.rint(values.mean(axis=0, keepdims=True)).astype(np.uint8)
        dense = (values.astype(np.float32) - zero) * scale
    x = _x(seed)
    x[4, 7] = 40.0  # one row with an outlier
    x[6] = np.abs(x[6])  # one row without negative values
    bias = np.linspace(-1, 1, N, dtype=np.float32)
    kind = "int8" if signed else "uint8"

    def build(b: Any, inp: Any) -> dict[str, Any]:
        product = b.matmul(_per_row(b, inp), _dequantized(b, values, scale, zero, kind))
        return {"y": b.add(product, b.constant({"dataType": "float32", "shape": [N]}, bias))}

    got, ran, lowered = _run(ctx, build, x, monkeypatch, tmp_path)
    assert "MatMulIntegerToFloat" in ran
    assert not ran & {"MatMul", "Gemm", "DequantizeLinear", "DynamicQuantizeMatMul"}
    # (one QuantizeLinear for the rows, one for their zero points)
    assert lowered.count("QuantizeLinear") == 2 and "Concat" in lowered
    np.testing.assert_allclose(got["y"], row_fake_quant(x) @ dense + bias, rtol=1e-4, atol=2e-2)
    per_tensor = fake_quant(x) @ dense + bias
    calm = np.arange(M) != 4
    exact = (x @ dense + bias)[calm]
    assert np.abs(got["y"][calm] - exact).max() < 0.2 * np.abs(per_tensor[calm] - exact).max()


def test_per_row_quantization_is_one_block_per_row(ctx: Any) -> None:
    """The per-row QuantizeLinear is emitted blocked along K (one block a row), the form whose
    rows ONNX Runtime splits over its threads (its per-axis kernel runs them on one)."""
    import onnx

    from ipfs_accelerate import webnn

    values, scale, zero, dense = _weight(8, None, signed=True, seed=3)
    b = webnn.MLGraphBuilder(ctx)
    inp = b.input("x", {"dataType": "float32", "shape": [M, K]})
    graph = b.build({"y": b.matmul(_per_row(b, inp), _dequantized(b, values, scale, zero, "int8"))})
    (node,) = [
        n
        for n in graph._lowered.model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] == "x"
    ]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attributes == {"axis": 1, "block_size": K}
    x = _x(11)
    got = ctx.compute(graph, {"x": x})["y"]
    np.testing.assert_allclose(got, row_fake_quant(x) @ dense, rtol=1e-4, atol=2e-2)


def test_one_row_per_row_activations_are_the_per_tensor_kernel(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A decode step's product has one row, whose per-row quantization is the whole
    tensor's: it runs DynamicQuantizeMatMul, the scale computed by the kernel (not a chain
    of reductions, divisions and a QuantizeLinear), with the same values."""
    values, scale, zero, dense = _weight(8, None, seed=9)
    x = _x(9)[:1]

    def build(b: Any, inp: Any) -> dict[str, Any]:
        return {"y": b.matmul(_per_row(b, inp), _dequantized(b, values, scale, zero, "int8"))}

    got, ran, lowered = _run(ctx, build, x, monkeypatch, tmp_path)
    assert ran == {"DynamicQuantizeMatMul"}, ran
    assert lowered == ["DynamicQuantizeMatMul"], lowered
    np.testing.assert_allclose(got["y"], row_fake_quant(x) @ dense, rtol=1e-4, atol=2e-2)
    assert np.abs(got["y"] - x @ dense).max() > 1e-3  # x really was quantized


def _row_rule(b: Any, x: Any, floor: float) -> Any:
    """The per-row pattern with the scale's floor ``floor`` (a floor above TINY is not
    DynamicQuantizeLinear's rule, so the compiler keeps the pattern's own arithmetic)."""
    nought = b.constant("float32", 0.0)
    low = b.min(b.reduce_min(x, axes=[1], keep_dimensions=True), nought)
    high = b.max(b.reduce_max(x, axes=[1], keep_dimensions=True), nought)
    spread = b.div(b.sub(high, low), b.constant("float32", 255.0))
    scale = b.max(spread, b.constant("float32", floor))
    zero = b.cast(
        b.clamp(b.round_even(b.neg(b.div(low, scale))), min_value=0, max_value=255), "uint8"
    )
    return b.dequantize_linear(b.quantize_linear(x, scale, zero), scale, zero)


def test_per_row_products_of_one_input_quantize_it_once(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """q, k and v (three products, each Linear with its own copy of the per-row pattern):
    the compiler computes the row scales and zero points itself, once for the three (two
    reductions, one QuantizeLinear of the rows, one of their zero points, one set of
    zero-point columns for the product that needs the most), none of the pattern's
    Round/Clip/Cast; bit for bit the values of the pattern's arithmetic lowered op by op."""
    from ipfs_accelerate import webnn

    rng = np.random.default_rng(12)
    weights = []
    for low, high in ((-127, 128), (-40, 100), (-100, 40)):  # different correction rows
        values = rng.integers(low, high, (K, N)).astype(np.int8)
        weights.append((values, rng.uniform(0.01, 0.1, (1, N)).astype(np.float32)))
    x = _x(12)
    x[4, 7] = 40.0
    x[6] = np.abs(x[6])
    x[7] = -np.abs(x[7])
    x[8] = 0.0  # a row of zeros: the scale's floor

    def build(b: Any, inp: Any, floor: float) -> dict[str, Any]:
        outputs = {}
        for index, (values, scale) in enumerate(weights):
            zero = np.zeros((1, N), np.int8)
            row = _row_rule(b, b.reshape(inp, [M, K]), floor)  # a copy per Linear
            outputs[f"y{index}"] = b.matmul(row, _dequantized(b, values, scale, zero, "int8"))
        return outputs

    got, ran, lowered = _run(ctx, lambda b, inp: build(b, inp, TINY), x, monkeypatch, tmp_path)
    assert ran >= {"MatMulIntegerToFloat", "QuantizeLinear"}
    counts = {op: lowered.count(op) for op in ("ReduceMin", "ReduceMax", "QuantizeLinear")}
    assert counts == {"ReduceMin": 1, "ReduceMax": 1, "QuantizeLinear": 2}, lowered
    assert lowered.count("Concat") == 1 and lowered.count("MatMulIntegerToFloat") == 3
    assert not {"Round", "Clip", "Cast"} & set(lowered), lowered
    b = webnn.MLGraphBuilder(ctx)
    inp = b.input("x", {"dataType": "float32", "shape": [M, K]})
    graph = b.build(build(b, inp, 2 * TINY))
    kept = [node.op_type for node in graph._lowered.model.graph.node]
    assert "Round" in kept and "MatMulIntegerToFloat" in kept  # the pattern's own arithmetic
    as_built = ctx.compute(graph, {"x": x})
    for name, value in got.items():
        np.testing.assert_array_equal(value, as_built[name])
        index = int(name[1:])
        dense = weights[index][0] * weights[index][1]
        rows = np.arange(M) != 8  # (the numpy model has no floor: its row of zeros is NaN)
        expected = row_fake_quant(x[rows]) @ dense
        np.testing.assert_allclose(value[rows], expected, rtol=1e-4, atol=2e-2)
        assert not value[8].any()


@pytest.mark.parametrize("signed", [True, False])
def test_row_corrected_weight_makes_the_zero_points_a_product_term(signed: bool) -> None:
    from ipfs_accelerate.webnn._onnx._qmatmul import correction_rows, row_corrected_weight

    rng = np.random.default_rng(9)
    low, high = (-127, 128) if signed else (0, 256)
    values = rng.integers(low, high, size=(K, N)).astype(np.int8 if signed else np.uint8)
    values[:, 0] = 127 if signed else 255  # a column sum as large as the type allows
    zeros = np.zeros(N, values.dtype) if signed else rng.integers(1, 255, N).astype(np.uint8)
    corrected = row_corrected_weight(values, zeros)
    extra = corrected.shape[0] - K
    assert corrected.dtype == values.dtype and extra == correction_rows(values, zeros) > 0
    if signed:
        assert extra == K  # the all-127 column: K * 127 in rows of at most -128
    np.testing.assert_array_equal(corrected[:K], values)
    q = rng.integers(0, 256, size=(M, K)).astype(np.int64)
    z = rng.integers(0, 256, size=(M, 1)).astype(np.int64)
    appended = np.concatenate([q, np.repeat(z, extra, axis=1)], axis=1)
    got = appended @ (corrected.astype(np.int64) - zeros)
    np.testing.assert_array_equal(got, (q - z) @ (values.astype(np.int64) - zeros))


def test_per_row_weight_needing_too_many_correction_rows_stays_correct(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = np.full((K, N), 127, np.int8)  # every column needs K rows: the product doubles
    scale = np.full((1, N), 0.01, np.float32)
    x = _x(11)

    def build(b: Any, inp: Any) -> dict[str, Any]:
        weight = _dequantized(b, values, scale, np.zeros((1, N), np.int8), "int8")
        return {"y": b.matmul(_per_row(b, inp), weight)}

    got, ran, _ = _run(ctx, build, x, monkeypatch, tmp_path)
    assert "MatMulIntegerToFloat" not in ran
    np.testing.assert_allclose(got["y"], row_fake_quant(x) @ (values * scale), rtol=1e-4, atol=2e-2)


def test_per_row_weight_zero_point_at_the_range_edge_stays_correct(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ipfs_accelerate.webnn._onnx._qmatmul import correction_rows

    values, scale, _, _ = _weight(8, None, signed=False, seed=10)
    zero = np.zeros((1, N), np.uint8)  # no correction row could subtract a positive sum
    assert correction_rows(values, zero[0]) is None
    dense = values.astype(np.float32) * scale
    x = _x(10)

    def build(b: Any, inp: Any) -> dict[str, Any]:
        return {"y": b.matmul(_per_row(b, inp), _dequantized(b, values, scale, zero, "uint8"))}

    got, ran, _ = _run(ctx, build, x, monkeypatch, tmp_path)
    assert "MatMulIntegerToFloat" not in ran
    np.testing.assert_allclose(got["y"], row_fake_quant(x) @ dense, rtol=1e-4, atol=2e-2)


def test_layouts_without_an_integer_kernel_stay_correct(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    values = rng.integers(-127, 128, size=(K, N)).astype(np.int8)
    per_row = rng.uniform(0.01, 0.1, size=(K, 1)).astype(np.float32)  # scales vary along K
    x = _x(5)

    def build(b: Any, inp: Any) -> dict[str, Any]:
        weight = _dequantized(b, values, per_row, np.zeros((K, 1), np.int8), "int8")
        return {"y": b.matmul(_dynamic(b, inp), weight), "w": weight}

    got, ran, _ = _run(ctx, build, x, monkeypatch, tmp_path)
    assert "MatMul" in ran and not ran & {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
    dense = values * per_row
    np.testing.assert_allclose(got["w"], dense, rtol=1e-6)
    np.testing.assert_allclose(got["y"], fake_quant(x) @ dense, rtol=1e-4, atol=2e-2)


def test_int8_weight_only_is_a_folded_float_matmul(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran = _weight_only(ctx, _weight(8, None, seed=6), "int8", 6, monkeypatch, tmp_path)
    # ONNX Runtime folds the constant dequantization: one float MatMul, nothing per call
    assert ran == {"MatMul"}


@pytest.mark.parametrize(("signed", "block"), [(True, None), (False, 32), (True, 16)])
def test_8bit_matmulnbits_layout(
    ctx: Any, signed: bool, block: int | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MatMulNBits' 8-bit weights (off by default, slower than the folded float weight on
    ONNX Runtime 1.31) give the same values."""
    from ipfs_accelerate.webnn._onnx import _qmatmul

    monkeypatch.setattr(_qmatmul, "NBITS_FOR_8BIT", True)
    kind = "int8" if signed else "uint8"
    ran = _weight_only(ctx, _weight(8, block, signed, seed=7), kind, 7, monkeypatch, tmp_path)
    assert "MatMulNBits" in ran and "MatMul" not in ran


def test_a_weight_also_read_elsewhere_is_still_computed(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values, scale, zero, dense = _weight(4, 32, seed=8)
    x = _x(8)

    def build(b: Any, inp: Any) -> dict[str, Any]:
        weight = _dequantized(b, values, scale, zero, "int4")
        product = b.matmul(inp, weight)
        return {"y": product, "z": b.add(product, b.constant("float32", 1.0)), "w": weight}

    got, ran, _ = _run(ctx, build, x, monkeypatch, tmp_path)
    assert "MatMulNBits" in ran
    np.testing.assert_allclose(got["w"], dense, rtol=1e-6)
    np.testing.assert_allclose(got["y"], x @ dense, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got["z"], x @ dense + 1, rtol=1e-5, atol=1e-4)


def test_graphs_over_one_weight_share_its_kernel_layout(ctx: Any) -> None:
    from ipfs_accelerate import webnn

    values, scale, zero, _ = _weight(4, 32, seed=9)
    values.flags.writeable = False  # referenced, not copied, by every graph
    found = []
    for rows in (3, 5):
        b = webnn.MLGraphBuilder(ctx)
        inp = b.input("x", {"dataType": "float32", "shape": [rows, K]})
        graph = b.build({"y": b.matmul(inp, _dequantized(b, values, scale, zero, "int4"))})
        packed = [a for a in graph._lowered.external.values() if a.dtype == np.uint8]
        found.append(packed[0])
    assert found[0] is found[1]
