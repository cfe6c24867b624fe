"""The CPU backend's fused kernels against the composed numpy operations they replace (float64
references, within 1e-6), on odd shapes: attention written in the merged-heads layout, layer
norm and softmax scaling rows by reciprocals, the unclipped erf/GELU polynomial, and the
int8 linear that scales the product instead of the weight."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.hal.cpu import _math, _quantized
from ipfs_accelerate.quantization import quantize

RNG = np.random.default_rng(1234)


def _softmax64(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive", "causal"])
@pytest.mark.parametrize(
    ("batch", "heads", "length", "source", "dim"),
    # numpy's row reductions; the short-row path (>= 4,096 scores, rows <= 64) in place on the
    # scores; rows longer than 64 in place; one query and key
    [(3, 5, 7, 9, 11), (4, 3, 29, 37, 16), (2, 2, 33, 70, 8), (2, 1, 1, 1, 3)],
)
def test_attention_equals_composed_ops_and_merges_heads_without_a_copy(
    mask_kind: str, batch: int, heads: int, length: int, source: int, dim: int
) -> None:
    if mask_kind == "causal":
        source = length
    q = RNG.standard_normal((batch, heads, length, dim)).astype(np.float32)
    k = RNG.standard_normal((batch, heads, source, dim)).astype(np.float32)
    v = RNG.standard_normal((batch, heads, source, dim)).astype(np.float32)
    scale = 1 / math.sqrt(dim)
    scores = q.astype(np.float64) @ np.swapaxes(k, -1, -2).astype(np.float64) * scale
    mask = None
    if mask_kind == "bool":
        allowed = RNG.random((batch, 1, 1, source)) < 0.7
        allowed[..., 0] = True  # every row attends somewhere
        mask = ia.tensor(allowed)
        scores = np.where(allowed, scores, -np.inf)
    elif mask_kind == "additive":
        bias = RNG.standard_normal((1, heads, length, source)).astype(np.float32)
        mask = ia.tensor(bias)
        scores = scores + bias
    elif mask_kind == "causal":
        scores = np.where(np.tri(length, source, dtype=bool), scores, -np.inf)
    reference = _softmax64(scores) @ v.astype(np.float64)
    got = ops.scaled_dot_product_attention(
        ia.tensor(q), ia.tensor(k), ia.tensor(v), attn_mask=mask, is_causal=mask_kind == "causal"
    )
    assert got.shape == (batch, heads, length, dim)
    np.testing.assert_allclose(got.numpy(), reference, rtol=1e-6, atol=1e-6)
    merged = got.permute(0, 2, 1, 3).reshape(batch, length, heads * dim)
    # the merge of heads is a view of the attention's own output, not a copy of it
    assert np.shares_memory(merged.numpy(), got.numpy())
    np.testing.assert_allclose(
        merged.numpy(), reference.transpose(0, 2, 1, 3).reshape(batch, length, -1), atol=1e-6
    )


@pytest.mark.parametrize("rows", [4099, 3])  # the many-rows BLAS path, and numpy's
@pytest.mark.parametrize("width", [37, 768])
def test_layer_norm_equals_composed_ops(rows: int, width: int) -> None:
    x = (RNG.standard_normal((rows, width)) * 3 + 1).astype(np.float32)
    x[0] = 0.25  # a row of one repeated value centres to exactly 0
    w = RNG.standard_normal(width).astype(np.float32)
    b = RNG.standard_normal(width).astype(np.float32)
    x64 = x.astype(np.float64)
    centred = x64 - x64.mean(axis=-1, keepdims=True)
    reference = centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + 1e-12) * w + b
    got = ops.layer_norm(ia.tensor(x), width, ia.tensor(w), ia.tensor(b), 1e-12).numpy()
    np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(got[0], b)


@pytest.mark.parametrize("width", [2, 13, 64])
def test_short_row_softmax_equals_composed_ops(width: int) -> None:
    x = (RNG.standard_normal((4099, width)) * 5).astype(np.float32)
    got = ops.softmax(ia.tensor(x), axis=-1).numpy()
    np.testing.assert_allclose(got, _softmax64(x.astype(np.float64)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("width", [13, 64, 65])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_in_place_equals_the_new_array_and_leaves_views_alone(
    width: int, log: bool
) -> None:
    from ipfs_accelerate.hal.cpu._backend import _softmax

    x = (RNG.standard_normal((3, 5, 71, width)) * 5).astype(np.float32)
    expected = _softmax(x, -1, log)
    scores = x.copy()
    got = _softmax(scores, -1, log, overwrite=True)
    assert np.shares_memory(got, scores)  # written over the caller's scores
    np.testing.assert_array_equal(got, expected)
    view = x.copy().transpose(0, 2, 1, 3)  # not C-contiguous: a new array, the input untouched
    before = view.copy()
    np.testing.assert_array_equal(
        _softmax(view, -1, log, overwrite=True), _softmax(before, -1, log)
    )
    np.testing.assert_array_equal(view, before)


def _clipped_tanh_poly(x: np.ndarray, coefficients: tuple[float, ...], clip: float) -> np.ndarray:
    """The kernel as it was, clipping its argument first."""
    f = np.float32
    z = np.clip(x, f(-clip), f(clip), dtype=np.float32)
    s = z * z
    p = s * f(coefficients[-1])
    p += f(coefficients[-2])
    for c in reversed(coefficients[:-2]):
        p *= s
        p += f(c)
    p *= z
    return np.tanh(p)


def test_unclipped_erf_polynomial_equals_the_clipped_one_bit_for_bit() -> None:
    special = [0.0, -0.0, 1e4, -1e4, 7e3, 3e38, -3e38, np.inf, -np.inf, np.nan, 1e-40]
    x = np.concatenate(
        [np.linspace(-40, 40, 400_001), RNG.standard_normal(10_001) * 1e3, special]
    ).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overflow to inf is expected and silent
        for coefficients, clip in (
            (_math._ERF_TANH_P, 4.5),
            (_math._GELU_HALF_P, 4.5 / math.sqrt(2.0)),  # gelu polynomial in x / 2
        ):
            got = _math._tanh_poly(x, coefficients)
            np.testing.assert_array_equal(got, _clipped_tanh_poly(x, coefficients, clip))
        big = np.array([1e4, -1e4, 7e3, 3e38, np.inf], np.float32)
        np.testing.assert_array_equal(_math.gelu(big), big * (big > 0))  # x, or exactly 0


@pytest.mark.parametrize(("out", "inp"), [(37, 29), (1, 5), (96, 64)])
@pytest.mark.parametrize(
    ("bits", "axis", "block", "symmetric", "output_scaled"),
    [
        (8, 0, None, True, True),  # per output row: the product's columns are scaled
        (8, None, None, True, True),  # one scale: the same path
        (4, 0, None, True, True),
        (8, 0, None, False, False),  # zero points: the tile is scaled
        (8, 1, None, True, False),  # per input column: the tile is scaled
        (4, 1, 32, True, False),  # blocks along the columns
        (4, 0, 32, False, False),  # blocks along the rows, per column
    ],
)
def test_int8_linear_equals_dequantize_then_matmul_on_every_tiling_path(
    out: int, inp: int, bits: int, axis: int | None, block: int | None, symmetric: bool,
    output_scaled: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    if block is not None and (inp if axis == 1 else out) % block:
        if axis == 1:
            inp = block * 2
        else:
            out = block * 2
    w = RNG.standard_normal((out, inp)).astype(np.float32)
    x = RNG.standard_normal((3, 5, inp)).astype(np.float32)
    b = RNG.standard_normal(out).astype(np.float32)
    q = quantize(ia.tensor(w), bits=bits, axis=axis, block_size=block, symmetric=symmetric)
    layout = q.prepared("cpu", _quantized._Layout)
    assert (layout.output_scales is not None) is output_scaled
    reference = x.astype(np.float64) @ q.dequantize_numpy().astype(np.float64).T + b
    for tile_bytes in (_quantized.TILE_BYTES, 16 * inp * 4 + 4):  # one tile; uneven tiles
        monkeypatch.setattr(_quantized, "TILE_BYTES", tile_bytes)
        got = ops.linear(ia.tensor(x), q, ia.tensor(b)).numpy()
        assert got.shape == (3, 5, out)
        np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 2, 7, 32, 33, 100])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("batch_dims", [(), (3,)])
def test_linear_of_a_few_rows_equals_the_float64_product(
    rows: int, with_bias: bool, batch_dims: tuple[int, ...]
) -> None:
    """2 to 32 rows take the W @ X^T path (its result transposed back, with the bias); one row
    and more than 32 the X @ W^T one: every count gives the product in the input's layout,
    batch dimensions kept, a transposed (non-contiguous) weight too."""
    w = RNG.standard_normal((48, 20)).astype(np.float32)
    b = RNG.standard_normal(48).astype(np.float32)
    x = RNG.standard_normal((*batch_dims, rows, 20)).astype(np.float32)
    reference = x.astype(np.float64) @ w.astype(np.float64).T + (b if with_bias else 0.0)
    for weight in (w, np.asfortranarray(w)):
        got = ops.linear(ia.tensor(x), ia.tensor(weight), ia.tensor(b) if with_bias else None)
        array = got.numpy()
        assert array.shape == (*batch_dims, rows, 48) and array.flags.c_contiguous
        np.testing.assert_allclose(array, reference, rtol=1e-5, atol=1e-5)
