"""ops.linear with a QuantizedTensor on the webnn backend: the weight is a set of graph
constants built once, the product runs ONNX Runtime's integer kernels (checked with its
profiler) and equals the numpy model of the same math."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops
from ipfs_accelerate.quantization import quantize
from tests.webnn.quantized_kernels import (
    block_fake_quant,
    fake_quant,
    kernels,
    profiled,
    row_fake_quant,
)

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.webnn

DEVICE = "webnn"


@pytest.fixture
def backend() -> Any:
    """The webnn backend, with its compiled graphs (the tests read the newest one)."""
    found = hal.get_backend(DEVICE, fallback=False)
    assert found.name == DEVICE
    return found


def _data(seed: int) -> tuple[np.ndarray, np.ndarray, ia.Tensor]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((96, 64)).astype(np.float32)
    x = rng.standard_normal((4, 6, 64)).astype(np.float32)
    bias = ia.tensor(rng.standard_normal(96).astype(np.float32), device=DEVICE)
    hal.mark_parameter(bias)  # a model's bias: a graph constant the kernel absorbs
    return w, x, bias


def _linear(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp: Path, x: np.ndarray, q: Any, bias: Any,
    activations: str,
) -> tuple[np.ndarray, set[str]]:  # fmt: skip
    with profiled(monkeypatch, tmp), warnings.catch_warnings():
        warnings.simplefilter("error")  # no CPU fallback
        got = ops.linear(ia.tensor(x, device=DEVICE), q, bias, activations=activations).numpy()
    compiled = next(reversed(backend._cache.values()))
    return got, kernels(compiled.graph)


@pytest.mark.parametrize(
    ("bits", "axis", "block", "activations", "kernel"),
    [
        (8, 0, None, "int8", "DynamicQuantizeMatMul"),
        (8, None, None, "int8", "DynamicQuantizeMatMul"),
        (4, 1, 32, "float", "MatMulNBits"),
        (4, 1, 32, "int8", "MatMulNBits"),  # (x rounded by DynamicQuantizeLinear first)
        (4, 1, 32, "int8_row", "MatMulNBits"),  # (x rounded per row first, op by op)
    ],
)
def test_quantized_linear_runs_the_integer_kernel(
    backend: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    bits: int,
    axis: int | None,
    block: int | None,
    activations: str,
    kernel: str,
) -> None:
    w, x, bias = _data(bits + (axis or 0))
    q = quantize(w, bits=bits, axis=axis, block_size=block).to(DEVICE)
    got, ran = _linear(backend, monkeypatch, tmp_path, x, q, bias, activations)
    assert kernel in ran
    assert not ran & {"MatMul", "Gemm"}  # no float product
    if activations != "int8_row":  # (its row scales' arithmetic has Adds)
        assert "Add" not in ran  # the bias went into the kernel
    dense = q.dequantize_numpy()
    if activations != "float":
        rounded = fake_quant(x) if activations == "int8" else row_fake_quant(x)
        expected = rounded @ dense.T + bias.numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-2)
    else:
        np.testing.assert_allclose(got, x @ dense.T + bias.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("symmetric", [True, False])
def test_int8_row_activations_run_matmulintegertofloat(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, symmetric: bool
) -> None:
    w, x, bias = _data(23)
    x[2, 3] *= 30  # an outlier token: per-row scales keep the other tokens' resolution
    q = quantize(w, bits=8, axis=0, symmetric=symmetric).to(DEVICE)
    got, ran = _linear(backend, monkeypatch, tmp_path, x, q, bias, "int8_row")
    # the integer product; the float work left is per-row scale arithmetic, the row-scale Mul
    # and the bias Add over the output
    assert {"QuantizeLinear", "MatMulIntegerToFloat"} <= ran
    assert not ran & {"MatMul", "Gemm", "DequantizeLinear", "DynamicQuantizeMatMul"}
    expected = row_fake_quant(x) @ q.dequantize_numpy().T + bias.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-2)
    assert np.abs(got - (x @ q.dequantize_numpy().T + bias.numpy())).max() > 1e-3


def test_int8_weight_only_folds_to_one_float_matmul(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    w, x, bias = _data(20)
    q = quantize(w, bits=8, axis=0).to(DEVICE)
    got, ran = _linear(backend, monkeypatch, tmp_path, x, q, bias, "float")
    # faster than MatMulNBits(bits=8) on ONNX Runtime 1.31 (docs/webnn.md): nothing is
    # dequantized per call
    assert ran & {"MatMul", "Gemm"} and not ran & {"DequantizeLinear", "Cast", "Mul", "MatMulNBits"}
    np.testing.assert_allclose(got, x @ q.dequantize_numpy().T + bias.numpy(), rtol=1e-5, atol=1e-4)


def test_the_weight_is_built_once_and_each_shape_compiles_once(backend: Any) -> None:
    w, x, bias = _data(21)
    q = quantize(w, bits=4, axis=1, block_size=32).to(DEVICE)
    backend.stats.reset()
    for rows in (2, 3, 2, 3):
        got = ops.linear(ia.tensor(x[0, :rows], device=DEVICE), q, bias, activations="int8")
        np.testing.assert_allclose(
            got.numpy(), fake_quant(x[0, :rows]) @ q.dequantize_numpy().T + bias.numpy(),
            rtol=1e-4, atol=2e-2,
        )  # fmt: skip
    assert backend.stats.compilations == 2 and backend.stats.cache_hits == 2
    resident = q.prepared("webnn", lambda _: None)
    assert resident is not None and resident.values.shape == (64, 96)  # (K, N) for matmul
    assert all(node.param for node in resident.nodes)


def test_float16_input_and_one_vector(backend: Any) -> None:
    w, x, _ = _data(22)
    q = quantize(w.astype(np.float16), bits=8, axis=0, scale_dtype="float16").to(DEVICE)
    half = ia.tensor(x[0].astype(np.float16), device=DEVICE)
    got = ops.linear(half, q, activations="int8")
    assert got.dtype is ia.float16
    expected = fake_quant(x[0].astype(np.float16).astype(np.float32)) @ q.dequantize_numpy().T
    np.testing.assert_allclose(got.numpy().astype(np.float32), expected, rtol=2e-3, atol=3e-2)
    vector = ops.matmul(ia.tensor(x[0, 0], device=DEVICE), q.T)
    assert vector.shape == (96,)
    expected = x[0, 0].astype(np.float16).astype(np.float32) @ q.dequantize_numpy().T
    np.testing.assert_allclose(vector.numpy().astype(np.float32), expected, rtol=2e-3, atol=2e-2)


def test_int8_block_activations_run_matmulnbits_at_accuracy_level_4(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:

    w, x, bias = _data(31)
    x[1, 2, 5] *= 40  # an outlier: only its own block's scale grows
    q = quantize(w, bits=4, axis=1, block_size=32).to(DEVICE)
    got, ran = _linear(backend, monkeypatch, tmp_path, x, q, bias, "int8_block")
    # the explicit rounding is gone: MatMulNBits rounds its input per block itself
    assert "MatMulNBits" in ran
    assert not ran & {"MatMul", "Gemm", "QuantizeLinear", "DequantizeLinear", "ReduceMax"}
    levels = _accuracy_levels(backend)
    assert levels == [4]
    _assert_block_rounded(got, x, q.dequantize_numpy(), bias.numpy(), 1e-3)
    # and the cpu backend's rounding in float is the same rule
    cpu = ops.linear(ia.tensor(x), quantize(w, bits=4, axis=1, block_size=32), bias.numpy(),
                     activations="int8_block").numpy()  # fmt: skip
    np.testing.assert_allclose(cpu, got, rtol=1e-4, atol=2e-3)


def test_8bit_block_weight_with_block_rounded_inputs_runs_matmulnbits_level_4(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Whisper's int8 vocabulary projection: 8-bit weights in blocks of 32 along in_features
    and block-rounded inputs. A decode step's few rows multiply in integers (MatMulNBits,
    bits 8, level 4); many rows (a prefill) keep the folded float weight (8-bit MatMulNBits
    at level 1 is slower than it); both equal the float model of the same rounding."""
    w, x, bias = _data(33)
    q = quantize(w, bits=8, axis=1, block_size=32).to(DEVICE)
    dense = q.dequantize_numpy()
    got, ran = _linear(backend, monkeypatch, tmp_path, x, q, bias, "int8_block")
    assert "MatMulNBits" in ran and not ran & {"MatMul", "Gemm", "QuantizeLinear"}
    assert _accuracy_levels(backend) == [4]
    _assert_block_rounded(got, x, dense, bias.numpy(), 1e-4)
    many = np.random.default_rng(34).standard_normal((40, 64)).astype(np.float32)
    got, ran = _linear(backend, monkeypatch, tmp_path, many, q, bias, "int8_block")
    assert "MatMulNBits" not in ran and ran & {"MatMul", "Gemm"}
    expected = block_fake_quant(many, 32) @ dense.T + bias.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-3)
    # float inputs on the same weight: the folded float product, no 8-bit MatMulNBits
    got, ran = _linear(backend, monkeypatch, tmp_path, x, q, bias, "float")
    assert "MatMulNBits" not in ran
    np.testing.assert_allclose(got, x @ dense.T + bias.numpy(), rtol=1e-4, atol=2e-3)


def _assert_block_rounded(
    got: np.ndarray, x: np.ndarray, dense: np.ndarray, bias: np.ndarray, away: float
) -> None:
    """``got`` is the product of ``x`` rounded to int8 per block of 32 (the int8_block rule)
    with ``dense`` plus ``bias``, and differs from the float product by more than ``away``
    (the rounding really happened)."""
    expected = block_fake_quant(x, 32) @ dense.T + bias
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-3)
    assert np.abs(got - (x @ dense.T + bias)).max() > away


def _accuracy_levels(backend: Any) -> list[int]:
    """MatMulNBits' accuracy_level in each such node of the backend's latest graph."""
    import onnx

    compiled = next(reversed(backend._cache.values()))
    model = onnx.load_from_string(compiled.graph.export_onnx())
    return [
        attr.i
        for node in model.graph.node
        if node.op_type == "MatMulNBits"
        for attr in node.attribute
        if attr.name == "accuracy_level"
    ]


def test_int8_block_needs_a_blockwise_weight() -> None:
    from ipfs_accelerate.errors import InvalidArgumentError

    w, x, _ = _data(32)
    per_channel = quantize(w, bits=8, axis=0)
    with pytest.raises(InvalidArgumentError, match="int8_block.*blockwise"):
        ops.linear(ia.tensor(x), per_channel, activations="int8_block")


def test_int8_block_activations_of_many_rows_are_rounded_op_by_op_at_accuracy_level_1(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A prefill's many rows: the blocks are rounded by the lowered ops and MatMulNBits
    multiplies the rounded values in float (level 1, faster there); the same product."""

    from ipfs_accelerate.webnn._onnx._qmatmul import ACCURACY_4_MAX_ROWS

    w, _, bias = _data(33)
    rows = ACCURACY_4_MAX_ROWS + 8
    x = np.random.default_rng(34).standard_normal((1, rows, 64)).astype(np.float32)
    x[0, 3, 5] *= 40
    q = quantize(w, bits=4, axis=1, block_size=32).to(DEVICE)
    got, ran = _linear(backend, monkeypatch, tmp_path, x, q, bias, "int8_block")
    assert "MatMulNBits" in ran and "ReduceMax" in ran
    levels = _accuracy_levels(backend)
    assert levels == [1]
    _assert_block_rounded(got, x, q.dequantize_numpy(), bias.numpy(), 1e-3)


def test_many_rows_of_int8_block_activations_are_rounded_once_per_input(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A prefill's q, k and v products of one input: its blocks rounded once, by a blocked
    QuantizeLinear (no DequantizeLinear, no Round/Clip chain), read by three MatMulNBits at
    accuracy level 1; each product equal to the numpy model of the rounding."""
    import onnx

    from ipfs_accelerate.webnn._onnx._qmatmul import ACCURACY_4_MAX_ROWS

    rng = np.random.default_rng(35)
    rows = ACCURACY_4_MAX_ROWS + 8
    x = rng.standard_normal((1, rows, 64)).astype(np.float32)
    x[0, 3, 5] *= 40  # an outlier: only its own block's scale grows
    x[0, 7, 32:] = 0.0  # an all-zero block: the scale's floor, zeros back
    weights = [rng.standard_normal((96, 64)).astype(np.float32) for _ in range(3)]
    quantized = [quantize(w, bits=4, axis=1, block_size=32).to(DEVICE) for w in weights]
    with profiled(monkeypatch, tmp_path), warnings.catch_warnings():
        warnings.simplefilter("error")  # no CPU fallback
        flat = ia.tensor(x, device=DEVICE)
        products = [ops.linear(flat, q, activations="int8_block") for q in quantized]
        got = ops.concat(products, axis=-1).numpy()
    compiled = next(reversed(backend._cache.values()))
    ran = kernels(compiled.graph)
    assert "MatMulNBits" in ran and not ran & {"DequantizeLinear", "Round", "Clip"}, ran
    model = onnx.load_from_string(compiled.graph.export_onnx())
    types = [node.op_type for node in model.graph.node]
    assert types.count("QuantizeLinear") == 1 and types.count("MatMulNBits") == 3, types
    assert _accuracy_levels(backend) == [1, 1, 1]
    rounded = block_fake_quant(x, 32)
    expected = np.concatenate([rounded @ q.dequantize_numpy().T for q in quantized], axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-3)
    assert (
        np.abs(got - np.concatenate([x @ q.dequantize_numpy().T for q in quantized], -1)).max()
        > 1e-3
    )


@pytest.mark.parametrize("activations", ["float", "int8", "int8_block"])
def test_int4_product_of_leading_axes_runs_without_reshapes(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, activations: str
) -> None:
    """(B, L, K) activations: MatMulNBits reads them and writes (B, L, N) itself, so neither
    the flattening to rows nor the reshape back is in the graph; the same product."""
    import onnx

    w, x, bias = _data(36)
    q = quantize(w, bits=4, axis=1, block_size=32).to(DEVICE)
    got, ran = _linear(backend, monkeypatch, tmp_path, x, q, bias, activations)
    compiled = next(reversed(backend._cache.values()))
    model = onnx.load_from_string(compiled.graph.export_onnx())
    nbits = [node for node in model.graph.node if node.op_type == "MatMulNBits"]
    assert len(nbits) == 1 and "Reshape" not in ran, ran
    assert not any(node.op_type == "Reshape" for node in model.graph.node)
    assert nbits[0].output[0] == model.graph.output[0].name
    rounded = {"float": x, "int8": fake_quant(x), "int8_block": block_fake_quant(x, 32)}
    expected = rounded[activations] @ q.dequantize_numpy().T + bias.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-3)
