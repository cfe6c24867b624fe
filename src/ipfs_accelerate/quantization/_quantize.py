"""quantize(): float weights to int8/int4 with per-tensor, per-axis or blockwise scales."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ipfs_accelerate.errors import AxisError, DtypeError, InvalidArgumentError, ShapeError
from ipfs_accelerate.quantization._tensor import ErrorStats, QuantizedTensor, pack_int4
from ipfs_accelerate.tensor._tensor import Tensor

__all__ = ["quantize"]

BLOCK_SIZES = (32, 64, 128)

# Symmetric ranges leave out -128 / -8 so that the range is symmetric around the zero
# point: q and -q both exist, max|w| maps to exactly +-qmax, and int8 x uint8 dot products
# (VNNI's vpdpbusd, x86's pmaddubsw) cannot saturate on -128 * 255 pairs.
_SYMMETRIC = {8: 127, 4: 7}
_ASYMMETRIC = {8: 255, 4: 15}


def _host(weight: Tensor | np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], str]:
    if isinstance(weight, Tensor):
        if not weight.dtype.is_floating:
            raise DtypeError(f"quantize: weight must be a float tensor, got {weight.dtype}")
        return weight.numpy(), weight.device
    if isinstance(weight, np.ndarray):
        if weight.dtype.kind != "f":
            raise DtypeError(f"quantize: weight must be a float array, got {weight.dtype}")
        return weight, "cpu"
    raise DtypeError(f"quantize: weight must be a Tensor or numpy array, got {type(weight)}")


def _check(
    array: np.ndarray[Any, Any], bits: int, axis: int | None, block_size: int | None
) -> int | None:
    """Validates the arguments; returns the normalised (non-negative) axis."""
    if isinstance(bits, bool) or bits not in (4, 8):
        raise InvalidArgumentError(f"quantize: bits must be 8 or 4, got {bits!r}")
    if array.size == 0:
        raise ShapeError(f"quantize: weight of shape {array.shape} is empty")
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)].flat[0]
        raise InvalidArgumentError(f"quantize: weight holds a non-finite value ({bad})")
    if axis is None:
        if block_size is not None:
            raise InvalidArgumentError("quantize: block_size needs an axis to block along")
        return None
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise AxisError(f"quantize: axis must be an int or None, got {axis!r}")
    if not -array.ndim <= axis < array.ndim:
        raise AxisError(f"quantize: axis {axis} is out of range for shape {array.shape}")
    axis %= array.ndim
    if block_size is not None:
        if isinstance(block_size, bool) or block_size not in BLOCK_SIZES:
            raise InvalidArgumentError(
                f"quantize: block_size must be None, 32, 64 or 128, got {block_size!r}"
            )
        # no padding: a padded block would need the padded length stored and undone later
        if array.shape[axis] % block_size:
            raise ShapeError(
                f"quantize: block_size {block_size} does not divide axis {axis} of size "
                f"{array.shape[axis]} (shape {array.shape})"
            )
    return axis


def _blocked(
    array: np.ndarray[Any, Any], axis: int | None, block_size: int | None
) -> tuple[np.ndarray[Any, Any], tuple[int, ...]]:
    """``array`` reshaped so each scale's elements share the reduction axes, and the shape
    of the scales (same rank as ``array``)."""
    if axis is None:
        return array.reshape(1, -1), (1,) * array.ndim
    shape = array.shape
    block = block_size or shape[axis]
    if block_size is None:
        scale_shape = tuple(n if i == axis else 1 for i, n in enumerate(shape))
    else:
        scale_shape = tuple(n // block if i == axis else n for i, n in enumerate(shape))
    if block_size is None:
        moved = np.moveaxis(array, axis, 0).reshape(shape[axis], -1)
        return moved, scale_shape
    split = (*shape[:axis], shape[axis] // block, block, *shape[axis + 1 :])
    moved = np.moveaxis(array.reshape(split), axis + 1, -1)
    return moved.reshape(-1, block), scale_shape


def _restore(
    groups: np.ndarray[Any, Any], shape: tuple[int, ...], axis: int | None, block: int | None
) -> np.ndarray[Any, Any]:
    """The inverse of :func:`_blocked` for the quantized values."""
    if axis is None:
        return groups.reshape(shape)
    if block is None:
        rest = tuple(n for i, n in enumerate(shape) if i != axis)
        return np.moveaxis(groups.reshape(shape[axis], *rest), 0, axis)
    split = (*shape[:axis], shape[axis] // block, *shape[axis + 1 :], block)
    return np.moveaxis(groups.reshape(split), -1, axis + 1).reshape(shape)


def _scales(
    low: np.ndarray[Any, Any], high: np.ndarray[Any, Any], levels: int, scale_dtype: Any
) -> np.ndarray[Any, Any]:
    wide = ((high - low) / levels).astype(np.float32)
    wide[wide == 0] = 1.0  # an all-zero group: any positive scale, every q is the zero point
    scales = wide.astype(scale_dtype)
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise InvalidArgumentError(
            f"quantize: scales such as {float(wide.flat[0]):.3g} do not fit {scale_dtype} "
            "(use scale_dtype='float32')"
        )
    return scales


def quantize(
    weight: Tensor | np.ndarray[Any, Any],
    bits: int = 8,
    axis: int | None = 0,
    block_size: int | None = None,
    symmetric: bool = True,
    scale_dtype: str = "float32",
) -> QuantizedTensor:
    """Quantize a float weight to int8 or int4.

    ``axis=None``: one scale for the tensor; ``axis=k``: one scale per index of axis k (per
    output channel of a Linear weight with ``axis=0``); ``axis=k, block_size=b``: one scale
    per ``b`` consecutive elements along axis k (and per index of every other axis).
    Symmetric: zero point 0 and values in [-127, 127] (int8) or [-7, 7] (int4); asymmetric:
    values in [0, 255] or [0, 15] with a per-scale zero point so the group's [min, max]
    (widened to hold 0) fills the range. Rounding is half to even, as WebNN/ONNX round.
    """
    array, device = _host(weight)
    axis = _check(array, bits, axis, block_size)
    if scale_dtype not in ("float32", "float16"):
        raise DtypeError(f"quantize: scale_dtype must be float32 or float16, got {scale_dtype!r}")
    groups, scale_shape = _blocked(array.astype(np.float32), axis, block_size)
    low = np.minimum(groups.min(axis=1), 0.0)
    high = np.maximum(groups.max(axis=1), 0.0)
    if symmetric:
        qmax = _SYMMETRIC[bits]
        peak = np.maximum(-low, high)
        scales = _scales(-peak, peak, 2 * qmax, scale_dtype)
        q = np.clip(np.rint(groups / scales.astype(np.float32)[:, None]), -qmax, qmax)
        zero_points = None
        values = q
    else:
        qmax = _ASYMMETRIC[bits]
        scales = _scales(low, high, qmax, scale_dtype)
        wide = scales.astype(np.float32)
        zero = np.clip(np.rint(-low / wide), 0, qmax)
        q = np.clip(np.rint(groups / wide[:, None]) + zero[:, None], 0, qmax)
        zero_points = zero.astype(np.uint8).reshape(scale_shape)
        values = q - zero[:, None]
    restored = values * scales.astype(np.float32)[:, None]
    diff = restored.astype(np.float64) - groups
    error = ErrorStats(float(np.abs(diff).max()), float(math.sqrt(np.mean(diff * diff))))
    ints = _restore(q, array.shape, axis, block_size)
    signed = zero_points is None
    if bits == 8:
        data = ints.astype(np.int8 if signed else np.uint8)
    else:
        data = pack_int4(ints, signed=signed)
    return QuantizedTensor(
        data,
        scales.reshape(scale_shape),
        zero_points,
        shape=tuple(array.shape),
        bits=bits,
        axis=axis,
        block_size=block_size,
        dtype=str(array.dtype),
        device=device,
        error=error,
    )
