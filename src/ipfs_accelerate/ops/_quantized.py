"""Linear layers with quantized weights: ``ops.linear(x, q)`` and ``ops.matmul(x, q)`` where
``q`` is a :class:`~ipfs_accelerate.quantization.QuantizedTensor`.

``activations="float"`` (the default) keeps ``x`` in float: the product is
``x @ dequantize(q).T``, which a backend computes in its own way (the CPU dequantizes tiles of
rows into the BLAS product, WebGPU unpacks the integers inside its matmul shader, WebNN emits
``dequantizeLinear`` + ``matmul``). ``activations="int8"`` also quantizes ``x`` on the fly, as
ONNX's DynamicQuantizeLinear does: uint8 with one scale and zero point for the whole tensor,
from the range [min(x, 0), max(x, 0)]. A backend with an integer matrix product runs that
(WebNN: ONNX Runtime's integer kernels); elsewhere the same rounding is applied to ``x`` in
float, so every backend gives the same result up to float rounding.

``activations="int8_row"`` quantizes each row of ``x`` (each token of a transformer's
activations: every index of the leading axes) on its own, with the same rule per row::

    low = min(min(row), 0);  high = max(max(row), 0)
    scale = max((high - low) / 255, TINY);  zero = clamp(round_even(-low / scale), 0, 255)
    q = clamp(round_even(row / scale) + zero, 0, 255)          (uint8)
    row ~ (q - zero) * scale

so a row of small values keeps its resolution beside a row with an outlier. It is asymmetric
uint8, not symmetric int8: the inputs of a transformer's FFN (GELU outputs, and layer-norm
outputs with a few outlier channels) are lopsided around 0, and a symmetric per-row scale
wasted half the levels there (MiniLM's mean cosine fell under the 0.998 gate, docs/models.md).
A backend lists ``row_quantized_linear`` in ``fused`` to run the integer product (WebNN:
ONNX Runtime's MatMulIntegerToFloat, docs/webnn.md); elsewhere ``x`` is rounded in float.

``activations="int8_block"`` is for blockwise weights (int4 with blocks along
``in_features``): each row of ``x`` is cut into the weight's blocks and each block rounded to
symmetric int8 on its own, as ONNX Runtime's MatMulNBits computes with ``accuracy_level`` 4::

    scale = max(max(|block|) / 127, TINY);  q = round_even(block / scale)   (int8, |q| <= 127)
    block ~ q * scale

The integer dot products then read the packed 4-bit weight directly (VNNI/AMX where the CPU
has them). A backend lists ``block_quantized_linear`` in ``fused`` for that kernel (WebNN:
MatMulNBits, accuracy level 4); elsewhere ``x`` is rounded in float the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ipfs_accelerate.errors import DeviceMismatchError, DtypeError, InvalidArgumentError, ShapeError
from ipfs_accelerate.ops import _elementwise as ew
from ipfs_accelerate.ops import _reduce as red
from ipfs_accelerate.ops._core import as_tensor, cast_to, describe, run
from ipfs_accelerate.tensor._autograd import is_grad_enabled
from ipfs_accelerate.tensor._dtype import as_dtype, float32, result_type
from ipfs_accelerate.tensor._tensor import Tensor

if TYPE_CHECKING:
    from ipfs_accelerate.quantization import QuantizedTensor

__all__ = [
    "ACTIVATIONS",
    "block_fake_quantize",
    "dynamic_fake_quantize",
    "quantized_linear",
    "quantized_matmul",
    "row_fake_quantize",
]

#: what ``activations=`` accepts
ACTIVATIONS = ("float", "int8", "int8_row", "int8_block")
#: the fused backend op that runs each integer activation mode
_FUSED_OPS = {
    "int8": "dynamic_quantized_linear",
    "int8_row": "row_quantized_linear",
    "int8_block": "block_quantized_linear",
}
#: the smallest normal float32: the scale of an all-zero activation (every q is the zero point)
_TINY = 1.1754943508222875e-38


def is_quantized(value: Any) -> bool:
    """Whether ``value`` is a QuantizedTensor; every matmul and linear asks, so a Tensor
    answers before the (lazy) quantization import is looked up."""
    if isinstance(value, Tensor):
        return False
    from ipfs_accelerate.quantization import QuantizedTensor

    return isinstance(value, QuantizedTensor)


def dynamic_fake_quantize(x: Tensor) -> Tensor:
    """``x`` rounded as DynamicQuantizeLinear + DequantizeLinear would round it (uint8, one
    scale and zero point for the tensor), computed in float on ``x``'s device."""
    wide = cast_to(x, float32)
    low = ew.minimum(red.min(wide), 0.0)
    high = ew.maximum(red.max(wide), 0.0)
    scale = ew.maximum(ew.div(ew.sub(high, low), 255.0), _TINY)
    zero = ew.clamp(ew.round(ew.neg(ew.div(low, scale))), 0.0, 255.0)
    q = ew.clamp(ew.add(ew.round(ew.div(wide, scale)), zero), 0.0, 255.0)
    return cast_to(ew.mul(ew.sub(q, zero), scale), x.dtype)


def row_fake_quantize(x: Tensor) -> Tensor:
    """``x`` rounded as ``activations="int8_row"`` rounds it (uint8, one scale and zero point
    per row: per index of every axis but the last), computed in float on ``x``'s device."""
    wide = cast_to(x, float32)
    low = ew.minimum(red.min(wide, axis=-1, keepdims=True), 0.0)
    high = ew.maximum(red.max(wide, axis=-1, keepdims=True), 0.0)
    scale = ew.maximum(ew.div(ew.sub(high, low), 255.0), _TINY)
    zero = ew.clamp(ew.round(ew.neg(ew.div(low, scale))), 0.0, 255.0)
    q = ew.clamp(ew.add(ew.round(ew.div(wide, scale)), zero), 0.0, 255.0)
    return cast_to(ew.mul(ew.sub(q, zero), scale), x.dtype)


def block_fake_quantize(x: Tensor, block: int) -> Tensor:
    """``x`` rounded as ``activations="int8_block"`` rounds it (symmetric int8, one scale per
    row and block of ``block`` values along the last axis), computed in float on ``x``'s
    device."""
    wide = cast_to(x, float32)
    blocks = wide.reshape(*x.shape[:-1], x.shape[-1] // block, block)
    peak = red.max(ew.abs(blocks), axis=-1, keepdims=True)
    scale = ew.maximum(ew.div(peak, 127.0), _TINY)
    q = ew.clamp(ew.round(ew.div(blocks, scale)), -127.0, 127.0)
    return cast_to(ew.mul(q, scale).reshape(*x.shape), x.dtype)


def _activation_block(weight: QuantizedTensor, activations: str) -> int:
    """The block ``activations="int8_block"`` rounds ``x`` in: the weight's own blocks along
    in_features (typed error for a weight without them)."""
    block = weight.block_size
    if block is None or weight.axis != 1:
        raise InvalidArgumentError(
            f"linear: activations={activations!r} needs a blockwise weight with blocks along "
            f"in_features (int4 weights are; this one has block_size={block}, axis="
            f"{weight.axis}); use 'int8' or 'int8_row' for per-channel weights"
        )
    return int(block)


def quantized_linear(
    x: Any, weight: QuantizedTensor, bias: Any = None, activations: str = "float"
) -> Tensor:
    """``x @ dequantize(weight).T + bias`` with ``weight`` a 2-D (out_features, in_features)
    QuantizedTensor on ``x``'s device; see the module docstring for ``activations``."""
    if activations not in ACTIVATIONS:
        raise InvalidArgumentError(
            f"linear: activations must be one of {', '.join(map(repr, ACTIVATIONS))}, got "
            f"{activations!r}"
        )
    x = as_tensor(x, op="linear", like=None)
    if weight.ndim != 2:
        raise ShapeError(
            f"linear: quantized weight must be 2-D (out_features, in_features), got shape "
            f"{weight.shape}"
        )
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"linear: input {describe(x)} does not end in in_features={weight.shape[1]} "
            f"of quantized weight {weight.shape}"
        )
    if weight.device != x.device:
        raise DeviceMismatchError(
            f"linear: the quantized weight is on {weight.device!r} and the input on "
            f"{x.device!r}; move the weight with weight.to({x.device!r}) first"
        )
    if x.dtype.name == "bool":
        raise DtypeError("linear: not defined for bool tensors")
    dtype = result_type(x.dtype, as_dtype(weight.dtype), op="linear")
    x = cast_to(x, dtype)
    if bias is not None:
        bias = as_tensor(bias, op="linear", like=x)
        if bias.device != x.device:
            raise DeviceMismatchError(
                f"linear: bias is on {bias.device!r} and the input on {x.device!r}"
            )
        if bias.shape != (weight.shape[0],):
            raise ShapeError(
                f"linear: bias must have shape ({weight.shape[0]},), got {describe(bias)}"
            )
        bias = cast_to(bias, dtype)
    backend = x._backend
    shape = (*x.shape[:-1], weight.shape[0])
    block = _activation_block(weight, activations) if activations == "int8_block" else 0
    if activations != "float":
        fused = _FUSED_OPS[activations]
        # the integer kernels have no backward rule: an input that requires grad is rounded
        # by the composed ops below, differentiable as they are (as before cpu had a kernel)
        if fused in backend.fused and not (x._requires_grad and is_grad_enabled()):
            return run(backend, fused, (x, weight, bias), shape, dtype)
        if activations == "int8":
            x = dynamic_fake_quantize(x)
        elif activations == "int8_row":
            x = row_fake_quantize(x)
        else:
            x = block_fake_quantize(x, block)
    if "quantized_linear" in backend.fused:
        return run(backend, "quantized_linear", (x, weight, bias), shape, dtype)
    from ipfs_accelerate.ops._nn import linear

    return linear(x, cast_to(weight.dequantize(x.device), dtype), bias)


def quantized_matmul(a: Any, b: QuantizedTensor, activations: str = "float") -> Tensor:
    """``a @ dequantize(b)`` for a 2-D (K, N) quantized ``b``: the linear kernels on ``b.T``."""
    if b.ndim != 2:
        raise ShapeError(f"matmul: a quantized operand must be 2-D, got shape {b.shape}")
    a = as_tensor(a, op="matmul")
    if a.ndim == 0:
        raise ShapeError(f"matmul: operands must be at least 1-D, got {describe(a)}")
    if a.shape[-1] != b.shape[0]:
        raise ShapeError(
            f"matmul: inner dimensions differ: {a.shape} @ {b.shape} "
            f"({a.shape[-1]} != {b.shape[0]})"
        )
    return quantized_linear(a, b.transpose(), None, activations)
