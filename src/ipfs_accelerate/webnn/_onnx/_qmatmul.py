"""Quantized matrix products: WebNN ``dequantize_linear`` (+ ``quantize_linear``) + ``matmul``
patterns over constant integer weights, lowered to ONNX Runtime's integer kernels.

The op-by-op lowering of these patterns (Cast/Sub/Mul, then MatMul) is correct but leaves ONNX
Runtime only a float MatMul: it folds the constant dequantization into a float weight. Before
lowering, :func:`match_quantized` finds the patterns; each becomes one contrib op:

* ``matmul(dequantize_linear(quantize_linear(x, s, z), s, z), W)`` with (s, z) computed from x
  as ONNX DynamicQuantizeLinear does (:func:`is_dynamic_quantization`), ``W`` an 8-bit weight
  with per-column or per-tensor scales: ``DynamicQuantizeMatMul``;
  several such products of one ``x`` (attention's q, k and v): one ``DynamicQuantizeLinear``
  of ``x`` and a ``MatMulIntegerToFloat`` per product, as in onnxruntime's own quantized export;
* the same with any other scalar (s, z): ``QuantizeLinear`` + ``MatMulIntegerToFloat``;
* ``matmul(dequantize_linear(quantize_linear(x, s, z), s, z), W)`` with a 2-D ``x`` (M, K) and
  a uint8 (s, z) per row, shape (M, 1): ``QuantizeLinear`` (axis 1, one block per row:
  ONNX Runtime threads it by rows) + ``MatMulIntegerToFloat``
  + ``Mul`` by the row scales (:func:`row_corrected_weight` says how the per-row zero points,
  which no ONNX Runtime CPU integer kernel takes, are folded into the product);
* ``matmul(a, W)`` with ``W`` 4-bit whose scales are constant over power-of-two blocks along
  K: ``MatMulNBits`` (float arithmetic, ``accuracy_level`` 1: weight-only semantics);
  ``matmul(reshape(dequantize_linear(quantize_linear(blocks, s, 0), s, 0)), W)`` where
  ``blocks`` is ``x`` (M, K) cut into W's blocks and ``s`` their symmetric int8 scales
  (:func:`block_quantized_activations`): ``MatMulNBits`` with ``accuracy_level`` 4 on ``x``,
  which rounds the blocks the same way itself and multiplies in integers, for at most
  :data:`ACCURACY_4_MAX_ROWS` rows (decode steps); more rows (a prefill) are rounded by a
  blocked ``QuantizeLinear`` (+ Cast and Mul back), once per input for all the products that
  read it, and multiplied at ``accuracy_level`` 1, which is faster there. An
  8-bit ``W`` with float activations stays DequantizeLinear + MatMul, which ONNX Runtime folds
  into a float weight (faster than its 8-bit MatMulNBits, see :data:`NBITS_FOR_8BIT`).

``W`` is ``dequantize_linear(constant, constant scale, constant zero point)`` of shape (K, N).
An ``add`` of a constant (N,) bias that is the product's only consumer becomes the kernel's
bias input. Nodes that only fed a fused kernel are not lowered (``_plan``). Which pattern
becomes which kernel, and why, is in docs/webnn.md ("Quantized matmul").
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ipfs_accelerate.webnn._onnx._base import LoweringBase
from ipfs_accelerate.webnn._onnx._emitter import Emitter
from ipfs_accelerate.webnn._onnx._match import MICROSOFT as _MICROSOFT
from ipfs_accelerate.webnn._onnx._match import producer as _producer
from ipfs_accelerate.webnn._operand import CONSTANT, MLOperand, Node

__all__ = [
    "ACCURACY_4_MAX_ROWS",
    "MAX_CORRECTION_ROWS",
    "NBITS_FOR_8BIT",
    "TINY",
    "Fusion",
    "QuantizedMatMulLowering",
    "correction_rows",
    "is_dynamic_quantization",
    "match_quantized",
    "row_corrected_weight",
]

Array = np.ndarray[Any, Any]

#: the smallest normal float32: the floor of a dynamic activation scale (all-zero activations)
TINY: Final = 1.1754943508222875e-38
_INTEGER: Final = frozenset({"int8", "uint8", "int4", "uint4"})
_BITS: Final = {"int8": 8, "uint8": 8, "int4": 4, "uint4": 4}
#: whether 8-bit weights with float activations go to MatMulNBits (bits=8, float arithmetic).
#: ONNX Runtime 1.31's CPU kernel ran them at 0.7-0.9x its float MatMul on the weight it
#: folds from dequantize_linear (docs/webnn.md), so they stay the plain pattern
NBITS_FOR_8BIT: Final = False
#: the most zero-point correction rows (:func:`row_corrected_weight`) a per-row product may
#: append, as a fraction of K: past that the integer product costs 1.5x and more
MAX_CORRECTION_ROWS: Final = 0.5
#: the most rows of block-rounded activations (int8_block) that MatMulNBits rounds itself
#: (accuracy level 4); past it the rounding is lowered op by op and the kernel multiplies the
#: rounded floats (level 1), the same values. ONNX Runtime 1.31's level 4 ran (K 576, N 1536,
#: one thread) 3x faster at 1 row, even at 32, and 1.35x / 1.5x slower at 128 / 512 rows than
#: the rounding ops + level 1: decode steps keep level 4, prefills get level 1
ACCURACY_4_MAX_ROWS: Final = 32
#: MatMulNBits block sizes (along K) tried for weights whose scales do not vary along K
_BLOCKS: Final = (128, 64, 32, 16)


@dataclass(slots=True)
class Fusion:
    """One quantized product lowered as one kernel.

    ``kind``: "dynamic" (DynamicQuantizeMatMul), "integer" (QuantizeLinear +
    MatMulIntegerToFloat), "rows" (per-row QuantizeLinear + MatMulIntegerToFloat + Mul) or
    "nbits" (MatMulNBits). ``head`` is the node whose place in the
    graph the kernel takes (the matmul, or the bias add after it), ``output`` its result.
    """

    kind: str
    head: Node
    output: MLOperand
    #: the float activations the kernel reads (before quantization for dynamic/integer)
    a: MLOperand
    #: the weight's dequantize_linear node (its three inputs are constants)
    weight: Node
    #: the activations' scale and zero point ("integer" and "rows")
    a_scale: MLOperand | None = None
    a_zero: MLOperand | None = None
    bias: MLOperand | None = None
    #: "nbits" only: ``a`` goes through DynamicQuantizeLinear + DequantizeLinear first
    #: (the pattern's float model of int8 activations, as two kernels instead of a dozen)
    round_trip: bool = False
    #: "nbits" only: MatMulNBits' accuracy_level (4: ``a`` rounded to int8 per block inside)
    accuracy_level: int = 1
    #: "dynamic" only: other dynamic products read the same ``a`` (attention's q, k and v),
    #: so it is quantized once (DynamicQuantizeLinear) for all of them
    shared: bool = False
    #: "nbits" at accuracy level 1 only: ``a`` is rounded to symmetric int8 per row and block
    #: of this many values along K first (:func:`block_quantized_activations`), by
    #: :meth:`QuantizedMatMulLowering._block_rounded`, once per input for all its products
    rounded_block: int = 0
    #: "rows" only: the scale's floor where ``a_scale``/``a_zero`` are DynamicQuantizeLinear's
    #: rule per row of ``a`` (:func:`row_dynamic_floor`): the kernel then computes them itself
    #: from ``a`` (:meth:`QuantizedMatMulLowering._row_quantized`), once per input for all the
    #: products that read it, and the pattern's own arithmetic is left out
    row_floor: float | None = None
    #: "rows" with ``row_floor``: the zero-point columns appended to the quantized ``a``, the
    #: most any product of the same input needs (``_plan`` sets it for a shared input)
    row_columns: int = 0

    def reads(self) -> list[MLOperand]:
        """The operands the kernel reads from the rest of the graph."""
        if self.row_floor is not None:
            return [operand for operand in (self.a, self.bias) if operand is not None]
        found = [self.a, self.a_scale, self.a_zero, self.bias]
        return [operand for operand in found if operand is not None]


def _constant(operand: MLOperand | None) -> Array | None:
    if operand is None or operand._kind != CONSTANT:
        return None
    return operand._value


def match_quantized(
    matmul: Node, consumers: Mapping[int, list[Node]], graph_outputs: set[int]
) -> Fusion | None:
    """The fusion of a quantized product whose ``matmul`` node this is, if the pattern fits."""
    a, b = matmul.inputs
    weight = _producer(b, "dequantize_linear")
    if a is None or b is None or weight is None or b.rank != 2 or a.data_type != "float32":
        return None
    values, scale, zero = weight.inputs
    if any(_constant(operand) is None for operand in (values, scale, zero)):
        return None
    assert values is not None and scale is not None and zero is not None
    if values.data_type not in _INTEGER or scale.data_type != "float32":
        return None
    head, output, bias = _bias(matmul, consumers, graph_outputs)
    per_column = _scale_grid(scale)[0] == 1
    rows = _row_quantized_activations(a)
    if rows is not None and per_column and _BITS[values.data_type] == 8:
        columns = _correction_columns(zero, values)
        if columns is None:
            return None
        fusion = Fusion("rows", head, output, rows[0], weight, rows[1], rows[2], bias)
        fusion.row_floor = row_dynamic_floor(*rows)
        fusion.row_columns = columns
        return fusion
    # (per-row activations over a 4-bit weight: rounded op by op, then MatMulNBits below)
    activations = _quantized_activations(a)
    if activations is not None and per_column and _BITS[values.data_type] == 8:
        x, a_scale, a_zero = activations
        if is_dynamic_quantization(x, a_scale, a_zero):
            return Fusion("dynamic", head, output, x, weight, bias=bias)
        return Fusion("integer", head, output, x, weight, a_scale, a_zero, bias)
    block = _nbits_block(scale, b.shape)
    if block is None:
        return None
    # 8-bit weights go to MatMulNBits only at accuracy level 4 (integer products on
    # block-rounded activations: a decode step's vocabulary projection reads a quarter of
    # the float weight's bytes); at level 1 its 8-bit kernel is slower than the folded float
    eight_bit = _BITS[values.data_type] == 8 and not NBITS_FOR_8BIT
    blocked = block_quantized_activations(a, block)
    if blocked is not None and blocked.shape[0] <= ACCURACY_4_MAX_ROWS:
        fusion = Fusion("nbits", head, output, blocked, weight, bias=bias, accuracy_level=4)
        return _unflattened(fusion, consumers, graph_outputs)
    if eight_bit:
        return None
    if activations is not None and is_dynamic_quantization(*activations):
        fusion = Fusion("nbits", head, output, activations[0], weight, bias=bias, round_trip=True)
        return _unflattened(fusion, consumers, graph_outputs)
    if blocked is not None:
        # more rows (a prefill): the blocks rounded by a blocked QuantizeLinear +
        # DequantizeLinear pair, then the float kernel on them
        return Fusion("nbits", head, output, blocked, weight, bias=bias, rounded_block=block)
    return _unflattened(
        Fusion("nbits", head, output, a, weight, bias=bias), consumers, graph_outputs
    )


def _unflattened(
    fusion: Fusion, consumers: Mapping[int, list[Node]], graph_outputs: set[int]
) -> Fusion:
    """A MatMulNBits fusion that reads the (..., K) activations before their flattening to
    rows and writes the (..., N) result the product is reshaped back to, when that reshape is
    the result's only reader: the kernel takes leading axes itself, so the two Reshapes around
    each product (a decode step's largest share of nodes) are left out."""
    flat = fusion.a
    flatten = _producer(flat, "reshape")
    source = flatten.inputs[0] if flatten is not None else None
    if source is None or flat.rank != 2 or source.rank < 3 or source.shape[-1] != flat.shape[1]:
        return fusion
    readers = consumers.get(fusion.output._id, [])
    if len(readers) != 1 or readers[0].op != "reshape" or fusion.output._id in graph_outputs:
        return fusion
    restored = readers[0].outputs[0]
    if restored.shape != (*source.shape[:-1], fusion.output.shape[-1]):
        return fusion
    fusion.a, fusion.head, fusion.output = source, readers[0], restored
    return fusion


def block_quantized_activations(a: MLOperand, block: int) -> MLOperand | None:
    """``x`` when ``a`` is ``x`` (M, K) rounded to symmetric int8 per row and block of
    ``block`` values, built as (hal/webnn/_quantized.py ``block_quantize``)::

        blocks = reshape(x, (M, K / block, block))
        s = max(reduce_max(abs(blocks), axes=[2]) / 127, TINY)      (M, K / block, 1)
        a = reshape(dequantize_linear(quantize_linear(blocks, s, 0), s, 0), (M, K))

    with an int8 all-zero constant zero point: exactly what MatMulNBits' accuracy level 4
    does to its input (and nothing else is accepted, so no other rounding is replaced)."""
    reshaped = _producer(a, "reshape")
    dequantize = _producer(reshaped.inputs[0] if reshaped else None, "dequantize_linear")
    found = _operands(dequantize, 3)
    if found is None or block <= 0:
        return None
    quantized, scale, zero = found
    quantize = _operands(_producer(quantized, "quantize_linear"), 3)
    if quantize is None or quantize[1] is not scale or quantize[2] is not zero:
        return None
    blocks = quantize[0]
    zeros = _constant(zero)
    if zero.data_type != "int8" or zeros is None or zeros.any() or scale.data_type != "float32":
        return None
    source = _producer(blocks, "reshape")
    x = source.inputs[0] if source is not None else None
    if x is None or x.rank != 2 or a.shape != x.shape or x.data_type != "float32":
        return None
    rows, k = x.shape
    if k % block or blocks.shape != (rows, k // block, block):
        return None
    if scale.shape != (rows, k // block, 1) or zero.shape != scale.shape:
        return None
    ratio = _operands(
        _producer(_with_constant(_producer(scale, "max"), lambda v: 0.0 < v <= TINY), "div"), 2
    )
    if ratio is None or _scalar_constant(ratio[1]) != 127.0:
        return None
    peak = _producer(ratio[0], "reduce_max")
    if peak is None or list(peak.attrs.get("axes", ())) != [2]:
        return None
    magnitude = _producer(peak.inputs[0], "abs")
    return x if magnitude is not None and magnitude.inputs[0] is blocks else None


def _bias(
    matmul: Node, consumers: Mapping[int, list[Node]], graph_outputs: set[int]
) -> tuple[Node, MLOperand, MLOperand | None]:
    """The node the kernel replaces, its output, and the bias it absorbs (if any)."""
    product = matmul.outputs[0]
    users = consumers.get(product._id, [])
    if len(users) == 1 and users[0].op == "add" and product._id not in graph_outputs:
        add = users[0]
        other = add.inputs[1] if add.inputs[0] is product else add.inputs[0]
        columns = product.shape[-1]
        if (
            other is not None
            and other is not product
            and _constant(other) is not None
            and other.data_type == "float32"
            and other.shape in ((columns,), (1, columns))
            and add.outputs[0].shape == product.shape
        ):
            return add, add.outputs[0], other
    return matmul, product, None


def _scale_grid(scale: MLOperand) -> tuple[int, int]:
    """How many distinct scales a (K, N) weight has along K and along N."""
    padded = (1,) * (2 - scale.rank) + scale.shape
    return padded[0], padded[1]


def _nbits_block(scale: MLOperand, weight: tuple[int, ...]) -> int | None:
    """MatMulNBits' block size (along K) for this weight, or None where none fits: the
    scales must be constant over each block, a power of two of at least 16."""
    along_k = _scale_grid(scale)[0]
    k = weight[0]
    if along_k > 1:
        block = k // along_k
        return block if block >= 16 and block & (block - 1) == 0 else None
    return next((block for block in _BLOCKS if k % block == 0), None)


def _round_trip(a: MLOperand) -> tuple[MLOperand, MLOperand, MLOperand] | None:
    """(x, s, z) when ``a`` is dequantize_linear(quantize_linear(x, s, z), s, z) with a uint8
    z and a float32 s."""
    dequantize = _producer(a, "dequantize_linear")
    if dequantize is None:
        return None
    quantized, scale, zero = dequantize.inputs
    quantize = _producer(quantized, "quantize_linear")
    if quantize is None or scale is None or zero is None:
        return None
    x, q_scale, q_zero = quantize.inputs
    if q_scale is not scale or q_zero is not zero or x is None:
        return None
    if zero.data_type != "uint8" or scale.data_type != "float32":
        return None
    return x, scale, zero


def _quantized_activations(a: MLOperand) -> tuple[MLOperand, MLOperand, MLOperand] | None:
    """(x, scale, zero) of a round trip with one scale and zero point for the whole tensor."""
    found = _round_trip(a)
    return found if found is not None and math.prod(found[1].shape) == 1 else None


def _row_quantized_activations(a: MLOperand) -> tuple[MLOperand, MLOperand, MLOperand] | None:
    """(x, scale, zero) of a round trip of a 2-D ``x`` (M, K) with a scale and zero point of
    shape (M, 1): one per row (M > 1; one row is the per-tensor case)."""
    found = _round_trip(a)
    if found is None:
        return None
    x, scale, zero = found
    if x.rank != 2 or x.shape[0] < 2 or scale.shape != (x.shape[0], 1):
        return None
    return found if zero.shape == scale.shape else None


def _correction_columns(zero: MLOperand, values: MLOperand) -> int | None:
    """How many rows :func:`row_corrected_weight` appends to this weight, where that is at most
    :data:`MAX_CORRECTION_ROWS` x K (every zero point strictly inside its type's range, or no
    correction row could move the sum both ways); else None."""
    zeros, array = _constant(zero), _constant(values)
    assert zeros is not None and array is not None
    flat = np.ascontiguousarray(_expanded(zeros, 1, array.shape[1])[0])
    rows = _DERIVED.get(array, ("rows-count", flat.tobytes()), lambda: correction_rows(array, flat))
    if rows is None or rows > MAX_CORRECTION_ROWS * array.shape[0]:
        return None
    return rows


def _scalar_constant(operand: MLOperand | None) -> float | None:
    value = _constant(operand)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))


def _operands(node: Node | None, count: int) -> list[MLOperand] | None:
    if node is None or len(node.inputs) != count or any(o is None for o in node.inputs):
        return None
    return [operand for operand in node.inputs if operand is not None]


def _with_constant(node: Node | None, test: Callable[[float], bool]) -> MLOperand | None:
    """For a binary ``node`` with one scalar constant operand passing ``test``: the other."""
    operands = _operands(node, 2)
    if operands is None:
        return None
    for this, other in (operands, operands[::-1]):
        value = _scalar_constant(this)
        if value is not None and test(value):
            return other
    return None


def _reduces_all(operand: MLOperand | None, op: str, x: MLOperand) -> bool:
    """Whether ``operand`` is ``op`` of ``x`` over all of it: every axis longer than one is
    reduced (a per-row reduction of a one-row ``x``, a decode step's, is the whole tensor's)."""
    node = _producer(operand, op)
    if node is None or node.inputs[0] is not x:
        return False
    axes = {axis % x.rank for axis in node.attrs.get("axes", range(x.rank))}
    return all(axis in axes for axis in range(x.rank) if x.shape[axis] != 1)


def is_dynamic_quantization(x: MLOperand, scale: MLOperand, zero: MLOperand) -> bool:
    """Whether ``scale`` and ``zero`` are ONNX DynamicQuantizeLinear's of ``x``, built as::

        low = min(reduce_min(x), 0);  high = max(reduce_max(x), 0)
        scale = max((high - low) / 255, TINY)
        zero = cast(clamp(round_even(-(low / scale)), 0, 255), "uint8")

    (``reduce_*`` over every axis; min/max/the constants' side either way round; any floor
    in (0, TINY]). This is the graph the webnn backend emits for int8 activations.
    """
    return _dynamic_floor(x, scale, zero, _reduces_all) is not None


def row_dynamic_floor(x: MLOperand, scale: MLOperand, zero: MLOperand) -> float | None:
    """The floor (in (0, TINY]) of ``scale`` where ``scale`` and ``zero`` are
    DynamicQuantizeLinear's rule applied to each row of a 2-D ``x`` (M, K), as
    :func:`is_dynamic_quantization` writes it with the reductions over axis 1, dimension kept
    (``hal/webnn/_quantized.row_quantize``); else None."""
    if x.rank != 2:
        return None
    return _dynamic_floor(x, scale, zero, _reduces_rows)


def _dynamic_floor(
    x: MLOperand,
    scale: MLOperand,
    zero: MLOperand,
    reduces: Callable[[MLOperand | None, str, MLOperand], bool],
) -> float | None:
    cast = _producer(zero, "cast")
    clamp = _producer(cast.inputs[0] if cast else None, "clamp")
    if cast is None or cast.attrs.get("to") != "uint8" or clamp is None:
        return None
    if clamp.attrs.get("min") != 0 or clamp.attrs.get("max") != 255:
        return None
    rounded = _producer(clamp.inputs[0], "round_even")
    negated = _producer(rounded.inputs[0] if rounded else None, "neg")
    ratio = _operands(_producer(negated.inputs[0] if negated else None, "div"), 2)
    if ratio is None or ratio[1] is not scale:
        return None
    low = ratio[0]
    floors: list[float] = []

    def is_floor(value: float) -> bool:
        floors.append(value)
        return 0.0 < value <= TINY

    step = _with_constant(_producer(scale, "max"), is_floor)
    spread = _with_constant(_producer(step, "div"), lambda v: v == 255.0)
    difference = _operands(_producer(spread, "sub"), 2)
    if difference is None or difference[1] is not low:
        return None
    high = difference[0]
    at_zero: Callable[[float], bool] = lambda v: v == 0.0  # noqa: E731
    low_source = _with_constant(_producer(low, "min"), at_zero)
    high_source = _with_constant(_producer(high, "max"), at_zero)
    if reduces(low_source, "reduce_min", x) and reduces(high_source, "reduce_max", x):
        return floors[-1]
    return None


def _reduces_rows(operand: MLOperand | None, op: str, x: MLOperand) -> bool:
    """Whether ``operand`` is ``op`` of the 2-D ``x`` over axis 1 with the dimension kept."""
    node = _producer(operand, op)
    if node is None or node.inputs[0] is not x or operand is None:
        return False
    axes = [axis % 2 for axis in node.attrs.get("axes", (0, 1))]
    return axes == [1] and operand.shape == (x.shape[0], 1)


# ====================================================================== weights


def _expanded(grid: Array, rows: int, columns: int) -> Array:
    """Per-group values (2-D, possibly fewer rows/columns) repeated to (rows, columns)."""
    grid = grid.reshape((1,) * (2 - grid.ndim) + grid.shape)
    grid = np.repeat(grid, rows // grid.shape[0], axis=0)
    return np.repeat(grid, columns // grid.shape[1], axis=1)


def _pack_pairs(values: Array) -> Array:
    """4-bit values (uint8, last axis even) two per byte, the first in the low nibble."""
    return np.ascontiguousarray(values[..., 0::2] | (values[..., 1::2] << 4)).astype(np.uint8)


def nbits_weight(
    values: Array, scale: Array, zero: Array, bits: int, signed: bool, block: int
) -> tuple[Array, Array, Array | None]:
    """MatMulNBits' B (N, blocks, bytes per block), scales (N, blocks) and zero points (None
    when all are the kernel's default 2**(bits-1)) from a (K, N) integer weight."""
    k, n = values.shape
    blocks = k // block
    offset = 1 << (bits - 1) if signed else 0
    unsigned = (values.T.astype(np.int16) + offset).astype(np.uint8).reshape(n, blocks, block)
    packed = _pack_pairs(unsigned) if bits == 4 else unsigned
    scales = np.ascontiguousarray(_expanded(scale.astype(np.float32), blocks, n).T)
    zeros = (_expanded(zero, blocks, n).T.astype(np.int16) + offset).astype(np.uint8)
    if np.all(zeros == 1 << (bits - 1)):
        return packed, scales, None
    if bits == 4:
        if blocks % 2:
            zeros = np.concatenate([zeros, np.zeros((n, 1), np.uint8)], axis=1)
        zeros = _pack_pairs(zeros)
    return packed, scales, np.ascontiguousarray(zeros)


def _type_range(values: Array) -> tuple[int, int]:
    return (-128, 127) if values.dtype == np.int8 else (0, 255)


def correction_rows(values: Array, zero: Array) -> int | None:
    """How many rows :func:`row_corrected_weight` appends to a (K, N) weight with (N,) zero
    points ``zero``; None where a zero point sits on its type's range edge."""
    low, high = _type_range(values)
    zeros = zero.astype(np.int64)
    down, up = zeros - low, high - zeros  # the most one row can subtract / add
    if np.any(down == 0) or np.any(up == 0):
        return None
    needed = -(values.astype(np.int64) - zeros).sum(axis=0)
    steps = np.where(needed > 0, -(-needed // up), -(needed // down))
    return int(steps.max(initial=0))


def row_corrected_weight(values: Array, zero: Array) -> Array:
    """The (K + J, N) weight that makes a per-row zero point a product term.

    MatMulIntegerToFloat takes one zero point for its uint8 A, but per-row activations have
    one per row: ``sum_k (q[m, k] - z[m]) w'[k, n] = sum_k q[m, k] w'[k, n] - z[m] c[n]``
    with ``w' = W - Wz`` and ``c[n] = sum_k w'[k, n]``. The second term is itself a product:
    append J columns holding z[m] to A and J rows to W whose w' sum to -c[n] (each row in
    W's integer range, so J = ceil(max |c| / 127) for a symmetric int8 weight, a few per cent
    of K for trained weights). The integer kernel then computes the exact zero-point
    correction with the product, instead of extra passes over the (M, N) output.
    ``zero`` is the weight's (N,) zero points, strictly inside the type's range."""
    low, high = _type_range(values)
    zeros = zero.astype(np.int64)
    remaining = -(values.astype(np.int64) - zeros).sum(axis=0)
    rows = []
    while np.any(remaining):
        step = np.clip(remaining, low - zeros, high - zeros)
        rows.append(step + zeros)
        remaining -= step
    if not rows:
        return values
    extra = np.stack(rows).astype(values.dtype)
    return np.ascontiguousarray(np.concatenate([values, extra], axis=0))


def _padded_rows(corrected: Array, zeros: Array, count: int) -> Array:
    """``corrected`` (K + J, N) with ``count`` more rows holding the (N,) zero points."""
    more = np.broadcast_to(zeros.astype(corrected.dtype), (count, corrected.shape[1]))
    return np.ascontiguousarray(np.concatenate([corrected, more], axis=0))


class _DerivedCache:
    """Kernel layouts derived from a constant array, kept while the array lives: every graph
    compiled over the same weight (one per input shape) shares one copy of its layout."""

    def __init__(self) -> None:
        self._entries: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def get(self, source: Array, what: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        owner: Any = source
        while isinstance(owner, np.ndarray) and owner.base is not None:
            owner = owner.base
        pointer = source.__array_interface__["data"][0]
        key = (id(owner), pointer, source.shape, source.strides, source.dtype.str, *what)
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[0]() is owner:
                return found[1]
        value = build()

        def forget(_: object) -> None:
            # (no lock: the collector may run this inside a locked block; pop is atomic)
            self._entries.pop(key, None)

        try:
            ref = weakref.ref(owner, forget)
        except TypeError:  # an owner without weak references (bytes): not kept
            return value
        with self._lock:
            self._entries[key] = (ref, value)
        return value


_DERIVED = _DerivedCache()


class QuantizedMatMulLowering(LoweringBase):
    """Emits the kernel of a :class:`Fusion`."""

    def __init__(self, emitter: Emitter, output_names: dict[int, str]) -> None:
        super().__init__(emitter, output_names)
        # what is emitted once per input for all the products that read it, by operand id:
        # block-rounded rows (and block), DynamicQuantizeLinear's outputs, and per-row
        # quantized rows with their scales (and zero-point columns, floor)
        self._rounded_a: dict[tuple[int, int], str] = {}
        self._quantized_a: dict[int, tuple[str, str, str]] = {}
        self._rows_a: dict[tuple[int, int, float], tuple[str, str]] = {}

    def lower_fusion(self, fusion: Fusion) -> None:
        values_op, scale_op, zero_op = fusion.weight.inputs
        assert values_op is not None and scale_op is not None and zero_op is not None
        values, scale, zero = (_constant(op) for op in (values_op, scale_op, zero_op))
        assert values is not None and scale is not None and zero is not None
        k, n = values.shape
        out = self.out(fusion.output)
        bias = [] if fusion.bias is None else [self.reshape_const_or_node(fusion.bias, [n])]
        if fusion.kind == "nbits":
            bits = _BITS[values_op.data_type]
            block = _nbits_block(scale_op, (k, n))
            assert block is not None
            signed = values_op.data_type in ("int8", "int4")
            packed, scales, zeros = _DERIVED.get(
                values,
                ("nbits", scale.tobytes(), zero.tobytes(), block),
                lambda: nbits_weight(values, scale, zero, bits, signed, block),
            )
            a = self.value(fusion.a)
            if fusion.rounded_block:
                a = self._block_rounded(fusion.a, fusion.rounded_block)
            if fusion.round_trip:
                a = self.e.one("DequantizeLinear", self.e.node("DynamicQuantizeLinear", [a], 3))
            names = [a, self.e.const(packed, share=True)]
            names.append(self.e.const(scales, share=True))
            names.append("" if zeros is None else self.e.const(zeros, share=True))
            if bias:
                names += ["", bias[0]]  # (g_idx unused)
            while names[-1] == "":
                names.pop()
            self.e.node(
                "MatMulNBits", names, [out], domain=_MICROSOFT,
                K=k, N=n, bits=bits, block_size=block, accuracy_level=fusion.accuracy_level,
            )  # fmt: skip
            return
        # per-column (or per-tensor) 8-bit weight: scales and zero points as (N,) vectors
        column_scale = self.e.const(np.ascontiguousarray(_expanded(scale, 1, n)[0]), share=True)
        column_zero = self.e.const(np.ascontiguousarray(_expanded(zero, 1, n)[0]), share=True)
        weight = self.e.const(values, share=True)
        if fusion.kind == "dynamic" and fusion.shared:
            quantized, a_scale, a_zero = self._dynamic_quantized(fusion.a)
            names = [quantized, weight, a_scale, column_scale, a_zero, column_zero, *bias]
            self.e.node("MatMulIntegerToFloat", names, [out], domain=_MICROSOFT)
            return
        if fusion.kind == "dynamic":
            names = [self.value(fusion.a), weight, column_scale, column_zero, *bias]
            self.e.node("DynamicQuantizeMatMul", names, [out], domain=_MICROSOFT)
            return
        if fusion.kind == "rows":
            self._lower_rows(fusion, values, zero, column_scale, column_zero, bias, out)
            return
        assert fusion.a_scale is not None and fusion.a_zero is not None
        a_scale, a_zero = (self._scalar(operand) for operand in (fusion.a_scale, fusion.a_zero))
        quantized = self.e.one("QuantizeLinear", [self.value(fusion.a), a_scale, a_zero])
        names = [quantized, weight, a_scale, column_scale, a_zero, column_zero, *bias]
        self.e.node("MatMulIntegerToFloat", names, [out], domain=_MICROSOFT)

    def _block_rounded(self, x: MLOperand, block: int) -> str:
        """``x`` (M, K) rounded to int8 and back with one symmetric scale per row and block of
        ``block`` values (the int8_block pattern's values): the scales from the block peaks,
        then ONNX's blocked QuantizeLinear + DequantizeLinear, two kernels where the plain
        lowering of the pattern runs a dozen elementwise passes over (M, K). Emitted once per
        ``x`` and block (q, k and v read one)."""
        cache = self._rounded_a
        found = cache.get((x._id, block))
        if found is not None:
            return found
        rows, k = x.shape
        grid = [rows, k // block, 1]
        blocks = self.e.one("Reshape", [self.value(x), self.e.ints([rows, k // block, block])])
        peak = self.e.one("ReduceMax", [self.e.one("Abs", [blocks]), self.e.ints([2])])
        ratio = self.e.one("Div", [peak, self.e.scalar(127.0, "float32")])
        scale = self.e.one("Max", [ratio, self.e.scalar(TINY, "float32")])
        zero = self.e.const(np.zeros(grid, np.int8))
        rounded = self.e.one("QuantizeLinear", [blocks, scale, zero], axis=2, block_size=block)
        # back to float as Cast + Mul, not DequantizeLinear: ONNX Runtime's optimizer copies
        # a DequantizeLinear per reader (q, k and v) and its blocked kernel is slower
        restored = self.e.one("Mul", [self.e.cast(rounded, "float32"), scale])
        found = self.e.one("Reshape", [restored, self.e.ints([rows, k])])
        cache[(x._id, block)] = found
        return found

    def _dynamic_quantized(self, a: MLOperand) -> tuple[str, str, str]:
        """DynamicQuantizeLinear's (values, scale, zero point) of ``a``, emitted once per
        lowering (by the first product that reads it) and shared by the others."""
        cache = self._quantized_a
        found = cache.get(a._id)
        if found is None:
            values, scale, zero = self.e.node("DynamicQuantizeLinear", [self.value(a)], 3)
            found = cache[a._id] = (values, scale, zero)
        return found

    def _lower_rows(
        self, fusion: Fusion, values: Array, zero: Array, column_scale: str,
        column_zero: str, bias: list[str], out: str,
    ) -> None:  # fmt: skip
        """Per-row activations: QuantizeLinear (one block per row), the zero-point columns
        appended, MatMulIntegerToFloat on the corrected weight, Mul by the row scales, the
        bias."""
        n = values.shape[1]
        zeros = np.ascontiguousarray(_expanded(zero, 1, n)[0])
        corrected = _DERIVED.get(
            values, ("rows", zeros.tobytes()), lambda: row_corrected_weight(values, zeros)
        )
        extra = corrected.shape[0] - values.shape[0]
        if fusion.row_floor is not None:
            columns, floor = fusion.row_columns, fusion.row_floor
            quantized, row_scale = self._row_quantized(fusion.a, columns, floor)
            if fusion.row_columns > extra:
                # (the input's columns, shared with a product that needs more correction rows:
                # rows of the weight's zero points add nothing)
                corrected = _DERIVED.get(
                    values,
                    ("rows", zeros.tobytes(), fusion.row_columns),
                    lambda: _padded_rows(corrected, zeros, fusion.row_columns - extra),
                )
        else:
            quantized, row_scale = self._row_quantized_as_built(fusion, extra)
        names = [quantized, self.e.const(corrected, share=True), self.e.scalar(1.0, "float32")]
        names += [column_scale, "", column_zero]
        product = self.e.one("MatMulIntegerToFloat", names, domain=_MICROSOFT)
        scaled_out = self.e.fresh() if bias else out
        scaled = self.e.one("Mul", [product, row_scale], scaled_out)
        if bias:
            self.e.one("Add", [scaled, bias[0]], out)

    def _row_quantized_as_built(self, fusion: Fusion, extra: int) -> tuple[str, str]:
        """The quantized rows (with ``extra`` zero-point columns) and the row scales from the
        pattern's own (M, 1) scale and zero point, whatever computed them."""
        assert fusion.a_scale is not None and fusion.a_zero is not None
        rows, k = fusion.a.shape
        # one block of the whole row (axis 1), not a scale per index of axis 0: ONNX Runtime
        # splits a blocked QuantizeLinear's rows over its threads, while its per-axis kernel
        # runs the rows one after another on one thread (the same values either way)
        a_scale, a_zero = (
            self.reshape_const_or_node(operand, [rows, 1])
            for operand in (fusion.a_scale, fusion.a_zero)
        )
        quantized = self.e.one(
            "QuantizeLinear", [self.value(fusion.a), a_scale, a_zero], axis=1, block_size=k
        )
        if extra:
            columns = self.e.one("Expand", [self.value(fusion.a_zero), self.e.ints([rows, extra])])
            quantized = self.e.one("Concat", [quantized, columns], axis=1)
        return quantized, self.value(fusion.a_scale)

    def _row_quantized(self, x: MLOperand, columns: int, floor: float) -> tuple[str, str]:
        """``x`` (M, K) quantized to uint8 with DynamicQuantizeLinear's rule per row, followed
        by ``columns`` columns holding each row's zero point, and the (M, 1) row scales: once
        per input for all the products that read it (q, k and v).

        The zero point is a QuantizeLinear of ``-low`` (round half to even, saturated to
        [0, 255]: the rule's ``cast(clamp(round_even(-(low / scale))))``, ``-low / s`` being
        ``-(low / s)`` exactly), one node where the pattern has four. Twelve nodes for all the
        readers of ``x``, where the pattern lowered op by op was sixteen, and an Expand and a
        Concat more per product."""
        cache = self._rows_a
        found = cache.get((x._id, columns, floor))
        if found is not None:
            return found
        rows, k = x.shape
        axes, value = self.e.ints([1]), self.value(x)
        nought = self.e.scalar(0.0, "float32")
        high = self.e.one("Max", [self.e.one("ReduceMax", [value, axes], keepdims=1), nought])
        low = self.e.one("Min", [self.e.one("ReduceMin", [value, axes], keepdims=1), nought])
        spread = self.e.one("Sub", [high, low])
        spread = self.e.one("Div", [spread, self.e.scalar(255.0, "float32")])
        scale = self.e.one("Max", [spread, self.e.scalar(floor, "float32")])
        no_offset = self.e.const(np.zeros((rows, 1), np.uint8))
        zero = self.e.one(
            "QuantizeLinear", [self.e.one("Neg", [low]), scale, no_offset], axis=1, block_size=1
        )
        quantized = self.e.one("QuantizeLinear", [value, scale, zero], axis=1, block_size=k)
        if columns:
            # (in uint8 after the rounding: padding x with float zeros, which round to the zero
            # point, took a float copy of x, slower than this)
            extra = self.e.one("Expand", [zero, self.e.ints([rows, columns])])
            quantized = self.e.one("Concat", [quantized, extra], axis=1)
        found = cache[(x._id, columns, floor)] = (quantized, scale)
        return found

    def _scalar(self, operand: MLOperand) -> str:
        """A one-element operand as a 0-d value (per-tensor quantization parameters)."""
        return (
            self.value(operand) if operand.shape == () else self.reshape_const_or_node(operand, [])
        )
