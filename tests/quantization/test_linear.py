"""ops.linear / ops.matmul with a QuantizedTensor weight, on every backend, against numpy on
the dequantized weight (weight-only) and on numpy models of DynamicQuantizeLinear (int8
activations, one scale per tensor) and of its per-row version (int8_row)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import DeviceMismatchError, DtypeError, InvalidArgumentError, ShapeError
from ipfs_accelerate.quantization import quantize

LAYOUTS = [
    # (bits, axis, block_size, symmetric)
    (8, 0, None, True),
    (8, None, None, True),
    (8, 1, None, False),
    (8, 0, None, False),
    (4, 1, 32, True),
    (4, 1, 32, False),
    (4, 0, 32, True),
    (4, 0, None, True),
]


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((96, 64)).astype(np.float32)
    x = rng.standard_normal((3, 5, 64)).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float32)
    return w, x, b


def _fake_quant(x: np.ndarray) -> np.ndarray:
    """What DynamicQuantizeLinear then DequantizeLinear give back (uint8, per tensor)."""
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = np.float32((high - low) / 255)
    zero = np.clip(np.rint(-low / scale), 0, 255)
    q = np.clip(np.rint(x / scale) + zero, 0, 255)
    return ((q - zero) * scale).astype(np.float32)


def _row_fake_quant(x: np.ndarray) -> np.ndarray:
    """The same rule applied to each row of ``x`` (every index of the leading axes)."""
    low = np.minimum(x.min(axis=-1, keepdims=True), 0.0)
    high = np.maximum(x.max(axis=-1, keepdims=True), 0.0)
    scale = np.maximum((high - low) / np.float32(255), np.float32(1.1754943508222875e-38))
    zero = np.clip(np.rint(-low / scale), 0, 255)
    q = np.clip(np.rint(x / scale) + zero, 0, 255)
    return ((q - zero) * scale).astype(np.float32)


@pytest.mark.parametrize(("bits", "axis", "block_size", "symmetric"), LAYOUTS)
def test_linear_matches_the_dequantized_weight(
    device: str, bits: int, axis: int | None, block_size: int | None, symmetric: bool
) -> None:
    w, x, b = _data()
    q = quantize(w, bits=bits, axis=axis, block_size=block_size, symmetric=symmetric).to(device)
    dense = q.dequantize_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no backend falls back to the CPU
        got = ops.linear(ia.tensor(x, device=device), q, ia.tensor(b, device=device))
    assert got.device == device and got.shape == (3, 5, 96) and got.dtype is ia.float32
    np.testing.assert_allclose(got.numpy(), x @ dense.T + b, rtol=1e-5, atol=1e-4)
    # the weight was really quantized: the float weight gives a visibly different answer
    assert np.abs(got.numpy() - (x @ w.T + b)).max() > 1e-3


@pytest.mark.parametrize(("bits", "axis", "block_size", "symmetric"), LAYOUTS[:5])
def test_matmul_takes_a_quantized_right_operand(
    device: str, bits: int, axis: int | None, block_size: int | None, symmetric: bool
) -> None:
    w, x, _ = _data(1)
    k_by_n = np.ascontiguousarray(w.T)  # (64, 96)
    q = quantize(k_by_n, bits=bits, axis=axis, block_size=block_size, symmetric=symmetric)
    q = q.to(device)
    got = ops.matmul(ia.tensor(x, device=device), q)
    np.testing.assert_allclose(got.numpy(), x @ q.dequantize_numpy(), rtol=1e-5, atol=1e-4)
    vector = ops.matmul(ia.tensor(x[0, 0], device=device), q)
    assert vector.shape == (96,)
    np.testing.assert_allclose(vector.numpy(), x[0, 0] @ q.dequantize_numpy(), atol=1e-4)
    assert (ia.tensor(x, device=device) @ q).shape == (3, 5, 96)


def test_transpose_keeps_the_values_and_swaps_the_axis() -> None:
    w, _, _ = _data(2)
    for bits, block in ((8, None), (4, 32)):
        q = quantize(w, bits=bits, axis=1, block_size=block)
        t = q.T
        assert t.shape == (64, 96) and t.axis == 0 and t.bits == bits
        np.testing.assert_array_equal(t.dequantize_numpy(), q.dequantize_numpy().T)
        assert q.T is t  # built once


@pytest.mark.parametrize("bits", [8, 4])
def test_int8_activations_round_like_dynamic_quantize_linear(device: str, bits: int) -> None:
    w, x, b = _data(3)
    q = quantize(w, bits=bits, axis=0 if bits == 8 else 1, block_size=None if bits == 8 else 32)
    q = q.to(device)
    got = ops.linear(
        ia.tensor(x, device=device), q, ia.tensor(b, device=device), activations="int8"
    )
    expected = _fake_quant(x) @ q.dequantize_numpy().T + b
    # an integer kernel and the float model of it differ only by float rounding; one
    # activation step (scale * max|w| * in_features) bounds any rounding-boundary flip
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=2e-2)
    weight_only = x @ q.dequantize_numpy().T + b
    assert np.abs(got.numpy() - weight_only).max() > 1e-3  # the activations were rounded


@pytest.mark.parametrize(("bits", "symmetric"), [(8, True), (8, False), (4, True)])
def test_int8_row_activations_round_each_row_on_its_own(
    device: str, bits: int, symmetric: bool
) -> None:
    w, x, b = _data(6)
    x[1, 2] *= 40  # one token with an outlier: per tensor it would coarsen every row
    x[2] = np.abs(x[2]) + 0.5  # rows without negative values (zero point 0)
    block = None if bits == 8 else 32
    q = quantize(w, bits=bits, axis=0 if bits == 8 else 1, block_size=block, symmetric=symmetric)
    q = q.to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no backend falls back to the CPU
        got = ops.linear(
            ia.tensor(x, device=device), q, ia.tensor(b, device=device), activations="int8_row"
        ).numpy()
    dense = q.dequantize_numpy()
    expected = _row_fake_quant(x) @ dense.T + b
    # an integer kernel and the float model of it differ by float rounding and at most one
    # activation step of the row at a rounding boundary
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-2)
    per_tensor = _fake_quant(x) @ dense.T + b
    exact = x @ dense.T + b
    calm = np.ones(x.shape[:-1], bool)
    calm[1, 2] = False
    # away from the outlier's row, per-row rounding is far closer than one scale per tensor
    row_error = np.abs(got - exact)[calm].max()
    assert 1e-4 < row_error < 0.2 * np.abs(per_tensor - exact)[calm].max()
    # a row's result does not depend on the other rows
    alone = ops.linear(ia.tensor(x[0, :1], device=device), q, ia.tensor(b, device=device),
                       activations="int8_row").numpy()  # fmt: skip
    np.testing.assert_allclose(alone, got[0, :1], rtol=1e-5, atol=1e-4)


def test_all_zero_activations_give_the_bias(device: str) -> None:
    w, _, b = _data(4)
    q = quantize(w).to(device)
    for activations in ("int8", "int8_row"):
        got = ops.linear(ia.zeros((2, 64), device=device), q, ia.tensor(b, device=device),
                         activations=activations)  # fmt: skip
        np.testing.assert_allclose(got.numpy(), np.broadcast_to(b, (2, 96)), atol=1e-6)


def test_bad_input_is_named() -> None:
    w, x, b = _data(5)
    q = quantize(w)
    xt = ia.tensor(x)
    with pytest.raises(ShapeError, match="in_features=64"):
        ops.linear(ia.tensor(x[..., :32]), q)
    with pytest.raises(ShapeError, match=r"bias must have shape \(96,\)"):
        ops.linear(xt, q, ia.tensor(b[:5]))
    modes = "'float', 'int8', 'int8_row', 'int8_block', got 'int4'"
    with pytest.raises(InvalidArgumentError, match=modes):
        ops.linear(xt, q, activations="int4")
    with pytest.raises(InvalidArgumentError, match="needs a QuantizedTensor weight"):
        ops.linear(xt, ia.tensor(w), activations="int8_row")
    with pytest.raises(InvalidArgumentError, match="needs a QuantizedTensor weight"):
        ops.linear(xt, ia.tensor(w), activations="int8")
    with pytest.raises(DtypeError, match="only the second operand"):
        ops.matmul(q, xt)
    with pytest.raises(ShapeError, match="inner dimensions differ"):
        ops.matmul(xt, q)  # (.., 64) @ (96, 64)
    with pytest.raises(ShapeError, match="must be 2-D"):
        ops.linear(xt, quantize(np.ones((2, 96, 64), np.float32)))
    with pytest.raises(DtypeError, match="bool"):
        ops.linear(ia.tensor(np.ones((2, 64), bool)), q)


def test_a_weight_on_another_device_is_refused(device: str) -> None:
    if device == "cpu":
        pytest.skip("needs a second device")
    w, x, _ = _data(6)
    q = quantize(w)  # bound to cpu
    with pytest.raises(DeviceMismatchError, match=rf"weight.to\('{device}'\)"):
        ops.linear(ia.tensor(x, device=device), q)
    moved = q.to(device)
    assert moved.device == device and q.device == "cpu" and moved.data is q.data


def test_integer_input_is_promoted_to_float() -> None:
    w, _, _ = _data(7)
    q = quantize(w)
    x = np.arange(128, dtype=np.int32).reshape(2, 64)
    got = ops.linear(ia.tensor(x), q)
    assert got.dtype is ia.float32
    np.testing.assert_allclose(got.numpy(), x @ q.dequantize_numpy().T, rtol=1e-5, atol=1e-2)


def test_cpu_tiles_cover_a_weight_larger_than_one_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipfs_accelerate.hal.cpu import _quantized

    monkeypatch.setattr(_quantized, "TILE_BYTES", 16 * 64 * 4)  # 16 rows per tile
    w, x, b = _data(8)
    for bits, axis, block in ((8, 0, None), (4, 1, 32), (4, 0, 32), (8, None, None)):
        q = quantize(w, bits=bits, axis=axis, block_size=block, symmetric=bits == 8)
        got = ops.linear(ia.tensor(x), q, ia.tensor(b)).numpy()
        np.testing.assert_allclose(got, x @ q.dequantize_numpy().T + b, rtol=1e-5, atol=1e-4)


def test_cpu_int4_rows_that_straddle_a_byte() -> None:
    rng = np.random.default_rng(9)
    w = rng.standard_normal((33, 35)).astype(np.float32)  # odd row length: rows share bytes
    x = rng.standard_normal((4, 35)).astype(np.float32)
    for axis in (None, 0, 1):
        q = quantize(w, bits=4, axis=axis)
        got = ops.linear(ia.tensor(x), q).numpy()
        np.testing.assert_allclose(got, x @ q.dequantize_numpy().T, rtol=1e-5, atol=1e-5)
