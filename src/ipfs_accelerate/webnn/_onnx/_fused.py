"""RMS normalization and rotary position embeddings, lowered to one ONNX Runtime kernel each.

A decoder's step graph is made of many small ops: lowered op by op, each RMSNorm is seven nodes
and each rotary embedding seven more, run once per layer (and per q/k), so that at a batch of
one ONNX Runtime's per-node dispatch costs as much as their arithmetic. Before lowering,
:func:`match_rms_norm` and :func:`match_rotary` find the patterns in the built graph:

* ``mul(mul(x, reciprocal(sqrt(add(reduce_mean(mul(x, x)), eps)))), w)`` with the mean over
  the last axis (dimensions kept), ``eps`` a finite non-negative scalar constant and ``w`` of
  shape (x's last size,) (multiplications in either operand order): ONNX Runtime's
  ``SimplifiedLayerNormalization`` (its contrib op in the default domain, float arithmetic);
  where ``x`` is a residual sum ``add(a, b)`` (:func:`with_residual`),
  ``com.microsoft`` ``SkipSimplifiedLayerNormalization``, which returns the sum as well;
* ``add(mul(x, concat([c, c])), mul(concat([neg(x[..., h:]), x[..., :h]]), concat([s, s])))``
  over a float32 ``x`` (B, N, S, 2h) and halves ``c``/``s`` (B or 1, 1, S, h) along the last
  axis (transformers' ``rotate_half``; operands of either order): ``com.microsoft``
  ``RotaryEmbedding`` (not interleaved), whose tables are ``c``/``s`` themselves, one row per
  (batch row, position), indexed by constant position ids. So the angles stay whatever the
  graph computed (any rope scaling), and only the rotation is fused.

Every intermediate must have that one reader and not be a graph output (what else reads
``x``, ``c``, ``s`` or ``w`` is untouched). Both kernels compute what the patterns do with
rounding differences of an ulp (a division instead of a multiplication by the reciprocal,
fused multiply-adds). Documented in docs/webnn.md ("Fused normalization and rotary").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ipfs_accelerate.webnn._onnx._base import LoweringBase
from ipfs_accelerate.webnn._onnx._emitter import Emitter
from ipfs_accelerate.webnn._onnx._match import MICROSOFT as _MICROSOFT
from ipfs_accelerate.webnn._onnx._match import Readers as _Readers
from ipfs_accelerate.webnn._onnx._match import producer as _producer
from ipfs_accelerate.webnn._onnx._match import scalar as _scalar
from ipfs_accelerate.webnn._operand import CONSTANT, MLOperand, Node

__all__ = [
    "NormFusion",
    "NormLowering",
    "RotaryFusion",
    "match_rms_norm",
    "match_rotary",
    "with_residual",
]



@dataclass(slots=True)
class NormFusion:
    """One RMSNorm as one ``SimplifiedLayerNormalization``; ``head`` is the last ``mul``.

    With ``residual`` (a, b), ``x`` is ``add(a, b)`` and the kernel is
    ``SkipSimplifiedLayerNormalization``, which returns that sum too: ``head`` is then the
    ``add`` (where the sum is needed first) and ``last`` the final ``mul``, which is not
    lowered."""

    head: Node
    output: MLOperand
    x: MLOperand
    weight: MLOperand
    epsilon: float
    residual: tuple[MLOperand, MLOperand] | None = None
    last: Node | None = None

    def reads(self) -> list[MLOperand]:
        if self.residual is not None:
            return [*self.residual, self.weight]
        return [self.x, self.weight]


@dataclass(slots=True)
class RotaryFusion:
    """One rotary embedding as one ``RotaryEmbedding``; ``head`` is the final ``add``."""

    head: Node
    output: MLOperand
    x: MLOperand
    cos: MLOperand
    sin: MLOperand

    def reads(self) -> list[MLOperand]:
        return [self.x, self.cos, self.sin]


def _pairs(node: Node) -> list[tuple[MLOperand, MLOperand]]:
    """A binary node's operands in both orders (for commutative ops)."""
    a, b = node.inputs
    if a is None or b is None:
        return []
    return [(a, b), (b, a)]


def match_rms_norm(
    mul: Node, consumers: Mapping[int, list[Node]], graph_outputs: set[int]
) -> NormFusion | None:
    """The fusion whose final multiplication by the weight is this ``mul`` node, if it fits."""
    readers = _Readers(consumers, graph_outputs)
    output = mul.outputs[0]
    if output.data_type != "float32" or output.rank == 0:
        return None
    for normed, weight in _pairs(mul):
        scaling = _producer(normed, "mul")
        if scaling is None or weight.shape != output.shape[-1:] or not readers.sole(normed, mul):
            continue
        for x, factor in _pairs(scaling):
            epsilon = _inverse_rms(x, factor, scaling, readers)
            if epsilon is not None and x.shape == output.shape:
                return NormFusion(mul, output, x, weight, epsilon)
    return None


def with_residual(fusion: NormFusion, taken: Mapping[int, object]) -> NormFusion:
    """``fusion`` with the residual ``add`` that makes its ``x`` folded in, where there is one:
    ``x = add(a, b)`` of two float32 operands of x's shape (no broadcast), x of rank 2 or 3
    (the kernel's (tokens, hidden) or (B, S, hidden)), a constant weight (the kernel runs
    where the add is), and the add not already another fusion's head (``taken``)."""
    add = _producer(fusion.x, "add")
    if add is None or id(add) in taken or fusion.x.rank not in (2, 3):
        return fusion
    if fusion.weight._kind != CONSTANT:
        return fusion
    a, b = add.inputs
    if a is None or b is None or a.shape != fusion.x.shape or b.shape != fusion.x.shape:
        return fusion
    if a.data_type != "float32" or b.data_type != "float32":
        return fusion
    return NormFusion(
        add, fusion.output, fusion.x, fusion.weight, fusion.epsilon, (a, b), fusion.head
    )


def _inverse_rms(x: MLOperand, factor: MLOperand, reader: Node, readers: _Readers) -> float | None:
    """``eps`` when ``factor`` is ``reciprocal(sqrt(reduce_mean(x * x, last axis) + eps))``
    read only by ``reader``, else None."""
    chain: list[Node] = []
    operand: MLOperand | None = factor
    for op in ("reciprocal", "sqrt", "add"):
        node = _producer(operand, op)
        if node is None or not readers.sole(operand, reader):
            return None
        chain.append(node)
        reader, operand = node, node.inputs[0]  # (the add's operands are looked at below)
    add = chain[-1]
    for mean, eps in _pairs(add):
        epsilon = _scalar(eps)
        reduce = _producer(mean, "reduce_mean")
        if epsilon is None or reduce is None or not readers.sole(mean, add):
            continue
        if not math.isfinite(epsilon) or epsilon < 0.0 or eps.rank > mean.rank:
            continue
        if reduce.attrs["axes"] != (x.rank - 1,) or not reduce.attrs["keep_dimensions"]:
            continue
        square = _producer(reduce.inputs[0], "mul")
        if square is None or not readers.sole(reduce.inputs[0], reduce):
            continue
        if square.inputs[0] is x and square.inputs[1] is x:
            return epsilon
    return None


def match_rotary(
    add: Node, consumers: Mapping[int, list[Node]], graph_outputs: set[int]
) -> RotaryFusion | None:
    """The fusion whose final sum is this ``add`` node, if the pattern fits."""
    readers = _Readers(consumers, graph_outputs)
    output = add.outputs[0]
    if output.data_type != "float32" or output.rank != 4 or output.shape[-1] % 2:
        return None
    for direct, turned in _pairs(add):
        plain, rotated = _producer(direct, "mul"), _producer(turned, "mul")
        if plain is None or rotated is None or plain is rotated:
            continue
        if not (readers.sole(direct, add) and readers.sole(turned, add)):
            continue
        for x, cos_full in _pairs(plain):
            if x.shape != output.shape:
                continue
            cos = _halves(cos_full, output.shape)
            if cos is None:
                continue
            for rotation, sin_full in _pairs(rotated):
                sin = _halves(sin_full, output.shape)
                if sin is not None and _rotates_half(rotation, x, rotated, readers):
                    return RotaryFusion(add, output, x, cos, sin)
    return None


def _halves(full: MLOperand, shape: tuple[int, ...]) -> MLOperand | None:
    """``c`` when ``full`` is ``concat([c, c], last axis)`` with ``c`` (B or 1, 1, S, h)."""
    concat = _producer(full, "concat")
    if concat is None or len(concat.inputs) != 2 or concat.attrs["axis"] != 3:
        return None
    half, again = concat.inputs
    if half is None or half is not again or half.rank != 4:
        return None
    batch, heads, length, width = half.shape
    if batch not in (1, shape[0]) or heads != 1 or length != shape[2] or 2 * width != shape[3]:
        return None
    return half if half.data_type == "float32" else None


def _rotates_half(rotation: MLOperand, x: MLOperand, reader: Node, readers: _Readers) -> bool:
    """Whether ``rotation`` is ``concat([neg(x[..., h:]), x[..., :h]], last axis)``."""
    concat = _producer(rotation, "concat")
    if concat is None or len(concat.inputs) != 2 or concat.attrs["axis"] != 3:
        return False
    if not readers.sole(rotation, reader):
        return False
    negated, low = concat.inputs
    neg = _producer(negated, "neg")
    if neg is None or not readers.sole(negated, concat) or not readers.sole(low, concat):
        return False
    high = neg.inputs[0]
    if not readers.sole(high, neg):
        return False
    half = x.shape[3] // 2
    return _slice_of(high, x, half) and _slice_of(low, x, 0)


def _slice_of(part: MLOperand | None, x: MLOperand, start: int) -> bool:
    """Whether ``part`` is the last axis' half of ``x`` from ``start``."""
    node = _producer(part, "slice")
    if node is None or node.inputs[0] is not x:
        return False
    half = x.shape[3] // 2
    return (
        tuple(node.attrs["starts"]) == (0, 0, 0, start)
        and tuple(node.attrs["sizes"]) == (*x.shape[:3], half)
        and tuple(node.attrs["strides"]) == (1, 1, 1, 1)
    )


class NormLowering(LoweringBase):
    """Emits the kernels of :class:`NormFusion` and :class:`RotaryFusion`."""

    def __init__(self, emitter: Emitter, output_names: dict[int, str]) -> None:
        super().__init__(emitter, output_names)
        #: each cos/sin half's table, by operand id (the layers share them)
        self._rotary_tables: dict[int, str] = {}

    def lower_norm(self, fusion: NormFusion) -> None:
        if fusion.residual is not None:
            a, b = fusion.residual
            self.e.node(
                "SkipSimplifiedLayerNormalization",
                [self.value(a), self.value(b), self.value(fusion.weight)],
                # (outputs 1 and 2, the mean and inverse deviation, are not asked for)
                [self.out(fusion.output), "", "", self.out(fusion.x)],
                domain=_MICROSOFT,
                epsilon=fusion.epsilon,
            )
            return
        self.e.node(
            "SimplifiedLayerNormalization",
            [self.value(fusion.x), self.value(fusion.weight)],
            [self.out(fusion.output)],
            axis=-1,
            epsilon=fusion.epsilon,
            stash_type=1,
        )

    def lower_rotary(self, fusion: RotaryFusion) -> None:
        batch, _, length, _ = fusion.x.shape
        rows = fusion.cos.shape[0]
        # the tables' row of (batch row b, position s): b * S + s, or s for tables shared by
        # the batch
        ids = np.arange(length, dtype=np.int64)[None, :] + np.zeros((batch, 1), np.int64)
        if rows == batch:
            ids = ids + np.arange(batch, dtype=np.int64)[:, None] * length
        tables = [self._table(operand) for operand in (fusion.cos, fusion.sin)]
        self.e.node(
            "RotaryEmbedding",
            [self.value(fusion.x), self.e.const(ids), *tables],
            [self.out(fusion.output)],
            domain=_MICROSOFT,
            interleaved=0,
        )

    def _table(self, half: MLOperand) -> str:
        """``half`` (R, 1, S, h) as the kernel's table (R * S, h), once per operand (the
        layers share their tables)."""
        found = self._rotary_tables.get(half._id)
        if found is None:
            rows, _, length, width = half.shape
            found = self.reshape_const_or_node(half, [rows * length, width])
            self._rotary_tables[half._id] = found
        return found
