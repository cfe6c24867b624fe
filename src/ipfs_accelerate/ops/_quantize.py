"""WebNN's quantizeLinear / dequantizeLinear, composed from existing ops (no new kernels).

``scale`` and ``zero_point`` have the input's rank (fewer dims are left-padded with 1, as
numpy broadcasts) and each of their sizes divides the input's size on that axis: size 1
broadcasts, the full size is per-axis, anything between is blockwise (each value covers
``input_size / size`` consecutive elements), as the WebNN spec and ONNX define it.
"""

from __future__ import annotations

from typing import Any

from ipfs_accelerate.errors import DtypeError, ShapeError
from ipfs_accelerate.ops._core import as_tensor, describe, same_backend
from ipfs_accelerate.ops._elementwise import add, clamp, div, mul, round, sub
from ipfs_accelerate.ops._shape import astype, broadcast_to, reshape
from ipfs_accelerate.tensor._dtype import float16, float32, int8, int32, uint8
from ipfs_accelerate.tensor._tensor import Tensor

__all__ = ["dequantize_linear", "quantize_linear"]

_RANGES = {int8: (-128, 127), uint8: (0, 255)}


def _blocks(op: str, what: str, param: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``param`` repeated over its blocks so that it broadcasts against ``shape``."""
    if param.ndim > len(shape):
        raise ShapeError(
            f"{op}: {what} of rank {param.ndim} exceeds the input's rank {len(shape)} "
            f"({describe(param)}, input shape {shape})"
        )
    dims = (1,) * (len(shape) - param.ndim) + param.shape
    for axis, (size, full) in enumerate(zip(dims, shape, strict=True)):
        if size == 0 or full % size:
            raise ShapeError(
                f"{op}: {what} size {size} on axis {axis} does not divide the input's size "
                f"{full} (input shape {shape}, {what} shape {param.shape})"
            )
    if all(size in (1, full) for size, full in zip(dims, shape, strict=True)):
        return param  # plain broadcasting covers per-tensor and per-axis
    interleaved = tuple(n for size in dims for n in (size, 1))
    spread = tuple(n for size, full in zip(dims, shape, strict=True) for n in (size, full // size))
    return reshape(broadcast_to(reshape(param, interleaved), spread), shape)


def _operands(op: str, x: Any, scale: Any, zero_point: Any) -> tuple[Tensor, Tensor, Tensor]:
    x = as_tensor(x, op=op)
    scale = as_tensor(scale, op=op, like=x)
    zero_point = as_tensor(zero_point, op=op, like=x)
    same_backend(op, (x, scale, zero_point))
    if scale.dtype not in (float32, float16):
        raise DtypeError(f"{op}: scale must be float32 or float16, got {describe(scale)}")
    if zero_point.shape != scale.shape:
        raise ShapeError(
            f"{op}: zero_point shape {zero_point.shape} differs from scale shape {scale.shape}"
        )
    return x, scale, zero_point


def quantize_linear(x: Any, scale: Any, zero_point: Any) -> Tensor:
    """``clamp(round_half_even(x / scale) + zero_point)`` in zero_point's dtype (int8/uint8).

    ``x`` and ``scale`` share a float dtype; the result has ``x``'s shape.
    """
    op = "quantize_linear"
    x, scale, zero_point = _operands(op, x, scale, zero_point)
    if x.dtype is not scale.dtype:
        raise DtypeError(f"{op}: input {describe(x)} and scale {describe(scale)} differ in dtype")
    if zero_point.dtype not in _RANGES:
        raise DtypeError(f"{op}: zero_point must be int8 or uint8, got {describe(zero_point)}")
    low, high = _RANGES[zero_point.dtype]
    scaled = round(div(x, _blocks(op, "scale", scale, x.shape)))
    shifted = add(scaled, astype(_blocks(op, "zero_point", zero_point, x.shape), x.dtype))
    return astype(clamp(shifted, low, high), zero_point.dtype)


def dequantize_linear(x: Any, scale: Any, zero_point: Any) -> Tensor:
    """``(x - zero_point) * scale`` in scale's dtype; ``x`` and zero_point share an integer
    dtype (int8, uint8 or int32)."""
    op = "dequantize_linear"
    x, scale, zero_point = _operands(op, x, scale, zero_point)
    if x.dtype not in (int8, uint8, int32):
        raise DtypeError(f"{op}: input must be int8, uint8 or int32, got {describe(x)}")
    if zero_point.dtype is not x.dtype:
        raise DtypeError(
            f"{op}: zero_point {describe(zero_point)} and input {describe(x)} differ in dtype"
        )
    # the difference in float32: exact for int8/uint8, and int32 beyond float16's 2048
    zero = astype(_blocks(op, "zero_point", zero_point, x.shape), float32)
    wide = mul(sub(astype(x, float32), zero), astype(_blocks(op, "scale", scale, x.shape), float32))
    return wide if scale.dtype is float32 else astype(wide, scale.dtype)
