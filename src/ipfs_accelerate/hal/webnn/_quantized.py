"""Quantized linear layers on the webnn backend: the weight as graph constants, the product as
the WebNN ``dequantizeLinear`` (+ ``quantizeLinear``) + ``matmul`` pattern.

The WebNN-to-ONNX compiler turns that pattern into ONNX Runtime's integer kernels
(``webnn/_onnx/_qmatmul.py``); which layout becomes which kernel is in docs/webnn.md.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.hal.webnn._graph import Node, leaf

if TYPE_CHECKING:
    from ipfs_accelerate.hal.webnn._emit import TraceEmitter
    from ipfs_accelerate.quantization import QuantizedTensor
    from ipfs_accelerate.webnn import MLGraphBuilder, MLOperand

__all__ = [
    "ResidentWeight",
    "block_quantize",
    "dynamic_quantize",
    "emit_quantized_linear",
    "resident",
    "row_quantize",
]


class ResidentWeight:
    """A quantized (out, in) weight as three parameter leaves of the (K, N) = (in, out) matrix
    that ``matmul`` takes: the integers (int8/uint8, or int4/uint4 one value per byte), the
    float32 scales and the zero points, both with the blockwise broadcast shape."""

    __slots__ = ("scales", "values", "zeros")

    def __init__(self, q: QuantizedTensor) -> None:
        signed = q.symmetric
        kind = ("int" if signed else "uint") + str(q.bits)
        ints = np.ascontiguousarray(q.int_values().T)
        self.values = leaf(ints.astype(np.int8 if signed else np.uint8, copy=False), kind)
        # float16 scales widen exactly; the product is float32 in any case
        scales = np.ascontiguousarray(q.scales.T.astype(np.float32))
        self.scales = leaf(scales, "float32", param=True)
        if q.zero_points is None:
            zeros = np.zeros(scales.shape, dtype=ints.dtype)
        else:
            zeros = np.ascontiguousarray(q.zero_points.T.astype(ints.dtype))
        self.zeros = leaf(zeros, kind)
        self.values.make_parameter()
        self.zeros.make_parameter()

    @property
    def nodes(self) -> tuple[Node, Node, Node]:
        return self.values, self.scales, self.zeros


def resident(q: QuantizedTensor) -> ResidentWeight:
    """The weight's leaves, built once per weight and kept with it."""
    return q.prepared("webnn", ResidentWeight)


def dynamic_quantize(b: MLGraphBuilder, x: MLOperand) -> MLOperand:
    """``x`` (float32) through uint8 and back, with DynamicQuantizeLinear's scale and zero
    point computed in the graph: the exact pattern the compiler turns into
    DynamicQuantizeMatMul (``_qmatmul.is_dynamic_quantization``)."""
    from ipfs_accelerate.webnn._onnx._qmatmul import TINY

    zero_f = b.constant("float32", 0.0)
    low = b.min(b.reduce_min(x), zero_f)
    high = b.max(b.reduce_max(x), zero_f)
    scale = b.max(
        b.div(b.sub(high, low), b.constant("float32", 255.0)), b.constant("float32", TINY)
    )
    zero_point = b.round_even(b.neg(b.div(low, scale)))
    zero = b.cast(b.clamp(zero_point, min_value=0, max_value=255), "uint8")
    return b.dequantize_linear(b.quantize_linear(x, scale, zero), scale, zero)


def row_quantize(b: MLGraphBuilder, x: MLOperand) -> MLOperand:
    """A 2-D float32 ``x`` through uint8 and back with one scale and zero point per row (the
    rule of DynamicQuantizeLinear applied to each row, ``ops.linear(activations="int8_row")``):
    (rows, 1) scale and zero point, broadcast over each row by ``quantize_linear``'s blockwise
    rule. The compiler turns the product over it into MatMulIntegerToFloat
    (``_qmatmul.per_row_activations``)."""
    from ipfs_accelerate.webnn._onnx._qmatmul import TINY

    zero_f = b.constant("float32", 0.0)
    low = b.min(b.reduce_min(x, axes=[1], keep_dimensions=True), zero_f)
    high = b.max(b.reduce_max(x, axes=[1], keep_dimensions=True), zero_f)
    scale = b.max(
        b.div(b.sub(high, low), b.constant("float32", 255.0)), b.constant("float32", TINY)
    )
    zero_point = b.round_even(b.neg(b.div(low, scale)))
    zero = b.cast(b.clamp(zero_point, min_value=0, max_value=255), "uint8")
    return b.dequantize_linear(b.quantize_linear(x, scale, zero), scale, zero)


def block_quantize(b: MLGraphBuilder, x: MLOperand, block: int) -> MLOperand:
    """A 2-D float32 ``x`` (M, K) through int8 and back with one symmetric scale per row and
    block of ``block`` values along K (``ops.linear(activations="int8_block")``): the pattern
    the compiler turns into MatMulNBits with accuracy level 4, which rounds the blocks itself
    (``_qmatmul.block_quantized_activations``)."""
    from ipfs_accelerate.webnn._onnx._qmatmul import TINY

    rows, k = x.shape
    blocks = b.reshape(x, [rows, k // block, block])
    peak = b.reduce_max(b.abs(blocks), axes=[2], keep_dimensions=True)
    scale = b.max(b.div(peak, b.constant("float32", 127.0)), b.constant("float32", TINY))
    grid = [rows, k // block, 1]
    zero = b.constant({"dataType": "int8", "shape": grid}, np.zeros(grid, dtype=np.int8))
    rounded = b.dequantize_linear(b.quantize_linear(blocks, scale, zero), scale, zero)
    return b.reshape(rounded, [rows, k])


def emit_quantized_linear(em: TraceEmitter, node: Node, args: list[Any]) -> MLOperand:
    """``x @ dequantize(W) + bias`` for a ``quantized_linear`` node (inputs: x, the weight's
    three leaves, the bias if any; attrs: activations, has_bias)."""
    activations, has_bias = node.attrs
    b = em.b
    x = em.widen(args[0])
    rows = [math.prod(x.shape[:-1]), x.shape[-1]]
    flat = x if list(x.shape) == rows else b.reshape(x, rows)
    if activations == "int8":
        flat = dynamic_quantize(b, flat)
    elif activations == "int8_row":
        flat = row_quantize(b, flat)
    elif activations == "int8_block":
        # the weight's scales are (K / block, N): the activation blocks are the weight's
        flat = block_quantize(b, flat, rows[1] // args[2].shape[0])
    weight = b.dequantize_linear(args[1], args[2], args[3])
    out = b.matmul(flat, weight)
    if has_bias:
        out = b.add(out, em.widen(args[4]))
    if list(out.shape) != list(node.shape):
        out = b.reshape(out, list(node.shape))
    return em.narrow(out, node.dtype)
