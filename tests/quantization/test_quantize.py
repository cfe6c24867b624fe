"""quantize() and QuantizedTensor against a numpy reference of the same rounding rules."""

from __future__ import annotations

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.errors import AxisError, DtypeError, InvalidArgumentError, ShapeError
from ipfs_accelerate.quantization import QuantizedTensor, quantize


def _weight(shape: tuple[int, ...] = (6, 64), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _reference_symmetric(w: np.ndarray, qmax: int, scales: np.ndarray) -> np.ndarray:
    full = scales
    for axis, (size, n) in enumerate(zip(scales.shape, w.shape, strict=True)):
        if size not in (1, n):
            full = np.repeat(full, n // size, axis=axis)
    return np.clip(np.rint(w / full), -qmax, qmax)


@pytest.mark.parametrize(
    ("axis", "block_size", "scale_shape"),
    [(None, None, (1, 1)), (0, None, (6, 1)), (1, None, (1, 64)), (1, 32, (6, 2)),
     (-1, 64, (6, 1))],
)  # fmt: skip
@pytest.mark.parametrize("bits", [8, 4])
def test_symmetric_matches_reference(
    axis: int | None, block_size: int | None, scale_shape: tuple[int, ...], bits: int
) -> None:
    w = _weight()
    q = quantize(ia.from_numpy(w), bits=bits, axis=axis, block_size=block_size)
    qmax = 127 if bits == 8 else 7
    assert q.scales.shape == scale_shape and q.scales.dtype == np.float32
    assert q.zero_points is None and q.symmetric
    assert (q.shape, q.bits, q.block_size) == ((6, 64), bits, block_size)
    # each group's largest magnitude maps to exactly qmax
    ints = q.int_values()
    assert ints.min() >= -qmax and ints.max() <= qmax
    np.testing.assert_array_equal(ints, _reference_symmetric(w, qmax, q.scales))
    expected_scales = np.abs(w).max(axis=_reduced(axis, block_size), keepdims=True) / qmax
    if block_size is None:
        np.testing.assert_allclose(q.scales, expected_scales, rtol=1e-6)
    back = q.dequantize().numpy()
    assert back.dtype == np.float32 and back.shape == w.shape
    assert np.abs(back - w).max() <= q.scales.max() / 2 * (1 + 1e-5)
    diff = back.astype(np.float64) - w
    assert q.error.max_abs == pytest.approx(np.abs(diff).max(), rel=1e-5)
    assert q.error.rms == pytest.approx(np.sqrt(np.mean(diff**2)), rel=1e-4)


def _reduced(axis: int | None, block_size: int | None) -> tuple[int, ...] | None:
    if axis is None:
        return None
    return tuple(i for i in range(2) if i != axis % 2)


def test_int8_data_and_nbytes() -> None:
    w = _weight((4, 32))
    q = quantize(w, bits=8, axis=0)
    assert q.data.dtype == np.int8 and q.data.shape == (4, 32)
    assert q.nbytes == 4 * 32 + 4 * 4  # int8 values + 4 float32 scales
    assert q.device == "cpu" and q.dtype == "float32"


def test_int4_packs_two_per_byte_low_nibble_first() -> None:
    w = np.array([[7.0, -7.0, 1.0, 0.0, -1.0]], dtype=np.float32)
    q = quantize(w, bits=4, axis=None)
    assert q.scales.item() == pytest.approx(1.0)
    # values 7, -7, 1, 0, -1 -> nibbles 0x7, 0x9, 0x1, 0x0, 0xF (+ a zero pad nibble)
    assert q.data.tolist() == [0x97, 0x01, 0x0F]
    assert q.nbytes == 3 + 4
    np.testing.assert_array_equal(q.int_values(), [[7, -7, 1, 0, -1]])
    np.testing.assert_array_equal(q.dequantize().numpy(), w)


def test_int4_is_an_eighth_of_float32_plus_scales() -> None:
    q = quantize(_weight((16, 128)), bits=4, axis=1, block_size=32)
    assert q.data.nbytes == 16 * 128 // 2
    assert q.nbytes == 16 * 128 // 2 + 16 * 4 * 4


@pytest.mark.parametrize("bits", [8, 4])
def test_asymmetric_uses_the_unsigned_range_with_zero_points(bits: int) -> None:
    w = np.abs(_weight((3, 64))) + 0.5  # all positive: a symmetric scale would waste half
    q = quantize(w, bits=bits, axis=0, symmetric=False)
    qmax = 255 if bits == 8 else 15
    assert not q.symmetric and q.zero_points is not None
    assert q.zero_points.shape == (3, 1) and q.zero_points.dtype == np.uint8
    ints = q.int_values()
    assert ints.min() >= 0 and ints.max() == qmax
    zp = q.zero_points.astype(np.float32)
    np.testing.assert_allclose((ints - zp) * q.scales, q.dequantize().numpy(), rtol=1e-6)
    symmetric = quantize(w, bits=bits, axis=0)
    assert q.error.max_abs < symmetric.error.max_abs


def test_asymmetric_keeps_zero_exact() -> None:
    w = np.array([[-1.0, 0.0, 3.0, 2.5]], dtype=np.float32)
    back = quantize(w, axis=None, symmetric=False).dequantize().numpy()
    assert back[0, 1] == 0.0


def test_all_zero_group_and_float16_scales() -> None:
    w = _weight((3, 32))
    w[1] = 0.0
    q = quantize(w, axis=0, scale_dtype="float16")
    assert q.scales.dtype == np.float16
    np.testing.assert_array_equal(q.dequantize().numpy()[1], 0.0)
    assert np.abs(q.dequantize().numpy() - w).max() <= q.error.max_abs + 1e-7


def test_float16_weight_dequantizes_to_float16() -> None:
    w = _weight((2, 32)).astype(np.float16)
    q = quantize(ia.from_numpy(w), axis=0)
    assert q.dequantize().dtype == ia.float16


def test_dequantize_on_another_device() -> None:
    q = quantize(_weight((2, 32)))
    assert q.dequantize(device="cpu").device == "cpu"
    assert isinstance(q, QuantizedTensor) and "bits=8" in repr(q)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bits": 2}, InvalidArgumentError, "bits must be 8 or 4, got 2"),
        ({"bits": True}, InvalidArgumentError, "bits"),
        ({"axis": 2}, AxisError, "axis 2 is out of range"),
        ({"axis": "0"}, AxisError, "axis must be an int"),
        ({"axis": 1, "block_size": 16}, InvalidArgumentError, "block_size must be"),
        ({"axis": 0, "block_size": 32}, ShapeError, "does not divide axis 0 of size 4"),
        ({"axis": None, "block_size": 32}, InvalidArgumentError, "needs an axis"),
        ({"scale_dtype": "float64"}, DtypeError, "scale_dtype"),
    ],
)
def test_bad_arguments_raise_typed_errors(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        quantize(_weight((4, 64)), **kwargs)  # type: ignore[arg-type]


def test_non_float_and_non_finite_input_raise() -> None:
    with pytest.raises(DtypeError, match="float tensor, got int32"):
        quantize(ia.from_numpy(np.ones((2, 2), dtype=np.int32)))
    with pytest.raises(DtypeError, match="float array, got int8"):
        quantize(np.ones((2, 2), dtype=np.int8))
    with pytest.raises(DtypeError, match="Tensor or numpy array"):
        quantize([[1.0]])  # type: ignore[arg-type]
    bad = _weight((2, 4))
    bad[1, 2] = np.nan
    with pytest.raises(InvalidArgumentError, match="non-finite value"):
        quantize(bad)
    with pytest.raises(ShapeError, match="empty"):
        quantize(np.zeros((0, 4), dtype=np.float32))


def test_scales_that_underflow_float16_raise() -> None:
    w = np.full((1, 32), 1e-9, dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match="do not fit float16"):
        quantize(w, scale_dtype="float16")


def test_a_quantized_tensor_built_by_hand_is_checked() -> None:
    good = quantize(_weight(), bits=8, axis=0)
    parts = {
        "shape": good.shape, "bits": 8, "axis": 0, "block_size": None, "dtype": "float32",
        "device": "cpu", "error": good.error,
    }  # fmt: skip
    QuantizedTensor(good.data, good.scales, None, **parts)  # the parts quantize() made
    negative = good.scales.copy()
    negative[2, 0] = -0.5
    with pytest.raises(InvalidArgumentError, match=r"finite and positive, got -0\.5"):
        QuantizedTensor(good.data, negative, None, **parts)
    with pytest.raises(InvalidArgumentError, match="finite and positive, got nan"):
        QuantizedTensor(good.data, np.full_like(good.scales, np.nan), None, **parts)
    with pytest.raises(ShapeError, match=r"scales of shape \(4, 1\) do not divide"):
        QuantizedTensor(good.data, good.scales[:4], None, **parts)
    with pytest.raises(DtypeError, match="384 int8 values"):
        QuantizedTensor(good.data[:-1], good.scales, None, **parts)
    with pytest.raises(DtypeError, match="uint8"):  # asymmetric values are unsigned
        QuantizedTensor(good.data, good.scales, np.zeros((6, 1), np.uint8), **parts)
    with pytest.raises(InvalidArgumentError, match="bits must be 8 or 4, got 2"):
        QuantizedTensor(good.data, good.scales, None, **{**parts, "bits": 2})
    four = quantize(_weight(), bits=4, axis=1, block_size=32, symmetric=False)
    assert four.zero_points is not None
    with pytest.raises(InvalidArgumentError, match=r"in \[0, 15\]"):
        QuantizedTensor(
            four.data, four.scales, four.zero_points + 16,
            **{**parts, "bits": 4, "axis": 1, "block_size": 32},
        )  # fmt: skip
