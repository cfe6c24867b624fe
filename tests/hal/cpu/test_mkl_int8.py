"""The cpu backend's integer products (hal/cpu/_mkl.py's int8_gemm, hal/cpu/_quantized.py's
row_quantized_linear): exact int32 sums in every layout, per-row uint8 activations times
int8 weights within float rounding of the same quantized operands in float64, the default
int8 policy on cpu only where MKL multiplies in integers, and the float fallback elsewhere."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops
from ipfs_accelerate.hal.cpu import _mkl
from ipfs_accelerate.hal.cpu import _quantized as cpu_quantized
from ipfs_accelerate.ops._quantized import row_fake_quantize
from ipfs_accelerate.quantization import quantize

needs_int8 = pytest.mark.skipif(
    not (_mkl._library_paths() and _mkl._dot_product_cpu()),
    reason="the mkl extra is not installed or the CPU has no 8-bit dot products",
)

#: |integer path - float64 product of the same quantized operands| / max |that product|: the
#: int32 sums are exact; what is left is float32 rounding of the int32 -> float conversion
#: (sums past 2^24), the two scale passes and the zero-point correction (measured <= 3e-7)
TOLERANCE = 2e-6


@needs_int8
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_int8_gemm_is_exact_in_every_layout(
    blas_setting: Any, trans_a: bool, trans_b: bool, accumulate: bool
) -> None:
    blas_setting("mkl")
    rng = np.random.default_rng(0)
    # the last shape is past SPLIT_MACS: one part per core outside a sharded run
    for rows, inner, cols in [(1, 5, 3), (70, 33, 17), (128, 384, 96), (300, 260, 520)]:
        a = rng.integers(0, 256, (inner, rows) if trans_a else (rows, inner), dtype=np.uint8)
        b = rng.integers(-128, 128, (cols, inner) if trans_b else (inner, cols), dtype=np.int8)
        a_view, b_view = (a.T if trans_a else a), (b.T if trans_b else b)
        wide = rng.integers(-1000, 1000, (rows, cols + 9), dtype=np.int32)
        before = wide.copy()
        out = wide[:, 4 : 4 + cols]  # a column window: a row stride of its own
        assert _mkl.int8_gemm(a_view, b_view, out, accumulate=accumulate)
        expected = a_view.astype(np.int64) @ b_view.astype(np.int64)
        if accumulate:
            expected += before[:, 4 : 4 + cols]
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(wide[:, :4], before[:, :4])
        np.testing.assert_array_equal(wide[:, 4 + cols :], before[:, 4 + cols :])


@needs_int8
def test_int8_gemm_sums_do_not_saturate(blas_setting: Any) -> None:
    """The extremes over the longest accepted inner dimension: 255 x -128 x 2^16 is one step
    inside int32 (a 16-bit pair sum, as pre-VNNI kernels use, would saturate at once)."""
    blas_setting("mkl")
    inner = 1 << 16
    a = np.full((2, inner), 255, dtype=np.uint8)
    b = np.full((inner, 3), -128, dtype=np.int8)
    b[:, 1] = 127
    out = np.empty((2, 3), dtype=np.int32)
    assert _mkl.int8_gemm(a, b, out)
    low, high = -255 * 128 * inner, 255 * 127 * inner
    np.testing.assert_array_equal(out, [[low, high, low]] * 2)
    # one longer could pass int32: refused, nothing written
    longer = np.full((inner + 1, 3), 1, dtype=np.int8)
    out[:] = 7
    assert not _mkl.int8_gemm(np.ones((2, inner + 1), np.uint8), longer, out)
    assert (out == 7).all()


@needs_int8
def test_int8_gemm_refuses_other_dtypes_and_the_numpy_setting(blas_setting: Any) -> None:
    blas_setting("mkl")
    a = np.ones((4, 8), np.uint8)
    b = np.ones((8, 3), np.int8)
    out = np.zeros((4, 3), np.int32)
    assert not _mkl.int8_gemm(a.view(np.int8), b, out)  # signed left operand
    assert not _mkl.int8_gemm(a, b.view(np.uint8), out)  # unsigned right operand
    assert not _mkl.int8_gemm(a, b, out.astype(np.float32))
    assert not _mkl.int8_gemm(a, np.ones((7, 3), np.int8), out)  # inner sizes differ
    assert (out == 0).all()
    blas_setting("numpy")
    assert not _mkl.int8_enabled()
    assert not _mkl.int8_gemm(a, b, out)
    assert not hal.get_backend("cpu").integer_kernel("row_quantized_linear")


def _reference(x: np.ndarray, q: Any, bias: np.ndarray | None) -> np.ndarray:
    """The product of the same quantized operands in float64: per-row uint8 codes, zero
    points and scales as quantize_rows gives them, times the int8 weight and its scales."""
    codes, scales, zeros = cpu_quantized.quantize_rows(x.reshape(-1, x.shape[-1]))
    rows = (codes.astype(np.float64) - zeros[:, None]) * scales[:, None]
    weight = q.int_values().astype(np.float64) * q.scales.astype(np.float64)
    out = rows @ weight.T + (0.0 if bias is None else bias)
    return out.reshape(*x.shape[:-1], q.shape[0])


@needs_int8
@pytest.mark.parametrize(("rows", "inner", "outs"), [(1, 8, 3), (70, 384, 96), (270, 96, 600)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_row_quantized_linear_in_integers_matches_the_quantized_operands(
    blas_setting: Any, rows: int, inner: int, outs: int, with_bias: bool
) -> None:
    blas_setting("mkl")
    rng = np.random.default_rng(rows + inner)
    x = rng.standard_normal((rows, inner)).astype(np.float32)
    x[:, : inner // 4] += 3.0  # lopsided rows: zero points away from the middle
    x[0, 1] = 25.0  # an outlier in one row only
    if rows > 2:
        x[2] = np.abs(x[2])  # no negative value: zero point 0
    w = (rng.standard_normal((outs, inner)) * 0.05).astype(np.float32)
    q = quantize(w, bits=8, axis=0)
    bias = rng.standard_normal(outs).astype(np.float32) if with_bias else None
    calls: list[int] = []
    real = _mkl._integer_product

    def counted(a: Any, b: Any, out: Any, beta: float) -> None:
        calls.append(a.shape[0])
        real(a, b, out, beta)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_mkl, "_integer_product", counted)
        got = cpu_quantized.row_quantized_linear(x, q, bias)
    assert calls  # the integer GEMM ran
    expected = _reference(x, q, bias)
    assert got.dtype == np.float32 and got.shape == (rows, outs)
    assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()
    # and through ops.linear on the cpu backend, leading axes kept
    through_ops = ops.linear(
        ia.tensor(x.reshape(1, rows, inner)),
        q,
        None if bias is None else ia.tensor(bias),
        activations="int8_row",
    ).numpy()
    np.testing.assert_array_equal(through_ops.reshape(rows, outs), got)


@needs_int8
def test_row_quantized_linear_rows_are_independent_and_non_finite_rows_give_nan(
    blas_setting: Any,
) -> None:
    blas_setting("mkl")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 64)).astype(np.float32)
    q = quantize((rng.standard_normal((32, 64)) * 0.1).astype(np.float32), bits=8, axis=0)
    whole = cpu_quantized.row_quantized_linear(x, q, None)
    np.testing.assert_array_equal(cpu_quantized.row_quantized_linear(x[2:3], q, None), whole[2:3])
    x[4, 7] = np.nan
    x[1, 0] = np.inf
    got = cpu_quantized.row_quantized_linear(x, q, None)
    assert np.isnan(got[[1, 4]]).all()
    np.testing.assert_array_equal(got[[0, 2, 3, 5]], whole[[0, 2, 3, 5]])


@pytest.mark.parametrize("setting", ["numpy", "mkl"])
def test_weights_the_integer_product_does_not_take_round_rows_in_float(
    blas_setting: Any, setting: str
) -> None:
    """Without MKL (every weight), and with it for int4/blockwise/zero-point weights: the rows
    rounded in float as ops.row_fake_quantize rounds them, then the weight-only product."""
    if setting == "mkl" and not _mkl._library_paths():
        pytest.skip("the mkl extra is not installed")
    blas_setting(setting)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 5, 64)).astype(np.float32)
    w = (rng.standard_normal((48, 64)) * 0.1).astype(np.float32)
    b = rng.standard_normal(48).astype(np.float32)
    weights = [
        quantize(w, bits=4, axis=1, block_size=32),
        quantize(w, bits=8, axis=0, symmetric=False),
    ]
    if setting == "numpy":
        weights.append(quantize(w, bits=8, axis=0))
    xt, bt = ia.tensor(x), ia.tensor(b)
    for q in weights:
        assert not cpu_quantized.integer_ready(q)
        got = ops.linear(xt, q, bt, activations="int8_row").numpy()
        expected = ops.linear(row_fake_quantize(xt), q, bt).numpy()
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("setting", ["numpy", "mkl"])
def test_the_default_int8_policy_on_cpu_follows_the_integer_kernel(
    blas_setting: Any, setting: str, tmp_path: Any
) -> None:
    """int8 models take per-row integer activations on cpu only where MKL multiplies them;
    elsewhere they stay weight-only (the same numbers as with the policy turned off)."""
    if setting == "mkl" and not (_mkl._library_paths() and _mkl._dot_product_cpu()):
        pytest.skip("the mkl extra is not installed or the CPU has no 8-bit dot products")
    from ipfs_accelerate.models import TextEmbedder
    from tests.models._checkpoints import make_bert

    blas_setting(setting)
    directory = make_bert(tmp_path)
    embedder = TextEmbedder.from_pretrained(directory, "cpu", dtype="int8", sharing=False)
    modes = {
        path: module.activations
        for path, module in embedder.model.named_modules()
        if hasattr(module, "activations")
    }
    integer = {path for path, mode in modes.items() if mode == "int8_row"}
    if setting == "mkl":
        assert integer and all(".layer." in path for path in integer)
    else:
        assert not integer
        sentences = ["a short one", "and a somewhat longer sentence than the first"]
        before = embedder.embed(sentences)
        embedder.model.set_int8_activations("none")
        np.testing.assert_array_equal(embedder.embed(sentences), before)


def test_an_input_that_requires_grad_takes_the_composed_rounding() -> None:
    """The integer kernel has no backward rule: with grad on, int8_row inputs are rounded by
    the composed ops (differentiable as they are), so backward runs instead of raising."""
    rng = np.random.default_rng(7)
    q = quantize((rng.standard_normal((8, 16)) * 0.2).astype(np.float32), bits=8, axis=0)
    data = rng.standard_normal((4, 16)).astype(np.float32)
    x, same = ia.tensor(data, requires_grad=True), ia.tensor(data, requires_grad=True)
    ops.sum(ops.linear(x, q, activations="int8_row") ** 2).backward()
    ops.sum(ops.linear(row_fake_quantize(same), q) ** 2).backward()
    assert x.grad is not None and same.grad is not None
    np.testing.assert_array_equal(x.grad.numpy(), same.grad.numpy())
    assert np.abs(x.grad.numpy()).max() > 0  # through the scales' min/max elements
