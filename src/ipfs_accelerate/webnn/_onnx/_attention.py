"""Attention: ``matmul(softmax(mask(matmul(q, k^T) * scale)), v)`` over float32 heads, lowered
to ONNX Runtime's fused ``com.microsoft`` MultiHeadAttention.

Lowered op by op, the pattern runs a Softmax and a Where over the whole (B, H, L, S) score
tensor and Transposes for the head split and merge. :func:`match_attention` recognises it in
the built graph (as the ``webnn`` backend's ``attention`` op emits it, or built by hand):

* ``q`` (B, H, L, d), ``k^T`` (B, H, d, S), ``v`` (B, H, S, dv) with equal leading axes
  (rank 3 is one head); each is traced back through transposes to a (B, L, H*d) layout
  (the head split ``transpose(reshape(x, (B, L, H, d)), (0, 2, 1, 3))`` ends at ``x``);
* ``mul`` by a non-zero scalar constant (the kernel's ``scale``), or none;
* then ``where(mask, scores, -inf)`` or ``add(scores, where(mask, 0, -inf))`` (the form the
  ``webnn`` backend emits) with a mask that does not vary per head: the kernel's
  ``key_padding_mask`` (B, S) or (B, L, S) with ``mask_filter_value`` -inf, so that a row
  with no allowed key is NaN as in the plain lowering; a mask that varies per head becomes an
  additive (0 / -inf) ``attention_bias``; ``add`` of a float mask: ``attention_bias``; or
  no mask;
* ``softmax`` over the last axis, then the product with ``v``. A head merge after it
  (``transpose`` (0, 2, 1, 3), then optionally a ``reshape``) is the kernel's own (B, L, H*dv)
  output.

Every intermediate must have that one reader and not be a graph output. The kernel adds the
mask to the scores, so a masked score must be finite: an infinite or NaN score at a masked
key gives a NaN row where ``where`` would have hidden it (docs/webnn.md, "Attention").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ipfs_accelerate.webnn._onnx._base import LoweringBase
from ipfs_accelerate.webnn._onnx._match import MICROSOFT as _MICROSOFT
from ipfs_accelerate.webnn._onnx._match import Readers as _Readers
from ipfs_accelerate.webnn._onnx._match import producer as _producer
from ipfs_accelerate.webnn._onnx._match import scalar as _scalar
from ipfs_accelerate.webnn._operand import MLOperand, Node

__all__ = ["AttentionFusion", "AttentionLowering", "match_attention"]

#: the head split's permutation of (B, L, H, d) into (B, H, L, d), its own inverse
_HEADS: Final = (0, 2, 1, 3)


@dataclass(slots=True)
class Layout:
    """An operand read as the kernel's (B, L, H*d): ``transpose(operand, perm)`` then a
    reshape (either left out where it changes nothing)."""

    operand: MLOperand
    perm: tuple[int, ...]

    def shape(self) -> list[int]:
        return [self.operand.shape[axis] for axis in self.perm]


@dataclass(slots=True)
class AttentionFusion:
    """One attention lowered as one MultiHeadAttention node.

    ``mask_kind``: None, "padding" (bool, one per key: (B, S)), "mask" (bool, (B, L, S)),
    "bool_bias" (bool varying per head) or "bias" (additive float). ``head`` is the node
    whose place the kernel takes (the product with v, or the head merge after it),
    ``output`` its result.
    """

    head: Node
    output: MLOperand
    query: Layout
    key: Layout
    value: Layout
    heads: int
    #: (B, H, L, S, d, dv) of the scores and products
    dims: tuple[int, int, int, int, int, int]
    scale: float
    mask: MLOperand | None = None
    mask_kind: str | None = None
    #: the mask's shape as (B or 1, H or 1, L or 1, S or 1)
    mask_dims: tuple[int, ...] = ()
    #: whether ``output`` is the merged (B, L, H*dv) layout (else (B, H, L, dv))
    merged: bool = False

    def reads(self) -> list[MLOperand]:
        """The operands the kernel reads from the rest of the graph."""
        found = [self.query.operand, self.key.operand, self.value.operand, self.mask]
        return [operand for operand in found if operand is not None]


def _other(node: Node, operand: MLOperand) -> MLOperand | None:
    a, b = node.inputs
    return b if a is operand else a


def match_attention(
    product: Node, consumers: Mapping[int, list[Node]], graph_outputs: set[int]
) -> AttentionFusion | None:
    """The fusion whose last product with v is this ``matmul`` node, if the pattern fits."""
    readers = _Readers(consumers, graph_outputs)
    probs, v = product.inputs
    softmax = _producer(probs, "softmax")
    if softmax is None or probs is None or v is None or readers.only(probs) is not product:
        return None
    (masked,) = softmax.inputs
    if masked is None or softmax.attrs["axis"] != masked.rank - 1 or masked.rank not in (3, 4):
        return None
    if readers.only(masked) is not softmax or masked.data_type != "float32":
        return None
    scaled, mask, mask_kind = _unmask(masked, readers)
    if scaled is None:
        return None
    scores, scale = _unscale(scaled, readers)
    matmul = _producer(scores, "matmul")
    if scores is None or matmul is None or scale is None:
        return None
    q, kt = matmul.inputs
    if q is None or kt is None or scale == 0.0 or not math.isfinite(scale):
        return None
    rank = q.rank
    batch = q.shape[:-2]
    if kt.rank != rank or v.rank != rank or kt.shape[:-2] != batch or v.shape[:-2] != batch:
        return None
    heads = batch[1] if rank == 4 else 1
    length, depth = q.shape[-2:]
    source, value_depth = kt.shape[-1], v.shape[-1]
    # the merged layout's order of the axes, for q/v (B, H, L, d) and k^T (B, H, d, S)
    merged = _HEADS if rank == 4 else (0, 1, 2)
    key_order = (0, 3, 1, 2) if rank == 4 else (0, 2, 1)
    mask_dims = () if mask is None else _mask_dims(mask.shape, rank)
    mask_kind = _mask_form(mask, mask_kind, mask_dims)
    if mask is not None and mask_kind is None:
        return None
    head, output, is_merged = _merge(product, readers)
    return AttentionFusion(
        head=head,
        output=output,
        query=_layout(q, merged),
        key=_layout(kt, key_order),
        value=_layout(v, merged),
        heads=heads,
        dims=(batch[0], heads, length, source, depth, value_depth),
        scale=scale,
        mask=mask,
        mask_kind=mask_kind,
        mask_dims=mask_dims,
        merged=is_merged,
    )


def _unmask(
    masked: MLOperand, readers: _Readers
) -> tuple[MLOperand | None, MLOperand | None, str | None]:
    """(scores before the mask, the mask, "bool" or "float"), or the scores with no mask."""
    node = _producer(masked, "where", "add")
    if node is None:
        return masked, None, None
    if node.op == "where":
        condition, scores, fill = node.inputs
        if scores is None or condition is None or _scalar(fill) != -math.inf:
            return None, None, None
        if fill is not None and fill.rank > masked.rank:
            return None, None, None
        if scores.shape != masked.shape or readers.only(scores) is not node:
            return None, None, None
        return scores, condition, "bool"
    for scores in node.inputs:
        other = _other(node, scores) if scores is not None else None
        if scores is None or other is None or scores.shape != masked.shape:
            continue
        if _producer(scores, "mul", "matmul") is None or readers.only(scores) is not node:
            continue
        if other.data_type != "float32" or other.rank > masked.rank:
            continue
        condition = _additive_condition(other)
        if condition is not None:
            return scores, condition, "bool"
        return scores, other, "float"
    return masked, None, None


def _additive_condition(bias: MLOperand) -> MLOperand | None:
    """``mask`` when ``bias`` is ``where(mask, 0, -inf)`` (a bool mask made additive)."""
    node = _producer(bias, "where")
    if node is None:
        return None
    condition, allowed, masked = node.inputs
    if _scalar(allowed) != 0.0 or _scalar(masked) != -math.inf or condition is None:
        return None
    return condition if condition.shape == bias.shape else None


def _unscale(scaled: MLOperand, readers: _Readers) -> tuple[MLOperand | None, float | None]:
    """(the product q @ k^T, the scale it is multiplied by)."""
    mul = _producer(scaled, "mul")
    if mul is None:
        return scaled, 1.0
    for scores in mul.inputs:
        if scores is None or _producer(scores, "matmul") is None:
            continue
        factor = _other(mul, scores)
        value = _scalar(factor)
        if value is None or factor is None or factor.rank > scaled.rank:
            continue
        if scores.shape == scaled.shape and readers.only(scores) is mul:
            return scores, value
    return None, None


def _mask_dims(shape: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """A mask's shape, broadcast against scores of ``rank``, as (B, H, L, S) sizes."""
    padded = (1,) * (rank - len(shape)) + shape
    return padded if rank == 4 else (padded[0], 1, *padded[1:])


def _mask_form(mask: MLOperand | None, kind: str | None, dims: tuple[int, ...]) -> str | None:
    """How the kernel takes the mask (see :class:`AttentionFusion`), or None if it cannot."""
    if mask is None:
        return None
    if kind == "float":
        return "bias"
    if mask.data_type != "uint8":
        return None
    if dims[1] != 1:
        return "bool_bias"
    return "padding" if dims[2] == 1 else "mask"


def _merge(product: Node, readers: _Readers) -> tuple[Node, MLOperand, bool]:
    """The node the kernel replaces, its result, and whether that is the merged layout."""
    out = product.outputs[0]
    if out.rank != 4:
        return product, out, True
    transpose = readers.only(out, "transpose")
    if transpose is None or tuple(transpose.attrs["permutation"]) != _HEADS:
        return product, out, False
    merged = transpose.outputs[0]
    reshape = readers.only(merged, "reshape")
    if reshape is not None:
        return reshape, reshape.outputs[0], True
    return transpose, merged, True


def _layout(operand: MLOperand, order: tuple[int, ...]) -> Layout:
    """Where ``transpose(operand, order)`` (the merged layout, before its reshape) can be read
    from: through the transposes before ``operand``, past a reshape that only split heads."""
    perm = order
    while (node := _producer(operand, "transpose")) is not None and node.inputs[0] is not None:
        # transpose(transpose(x, t), p) == transpose(x, [t[i] for i in p])
        perm = tuple(node.attrs["permutation"][i] for i in perm)
        operand = node.inputs[0]
    reshape = _producer(operand, "reshape")
    source = None if reshape is None else reshape.inputs[0]
    if perm == tuple(range(len(perm))) and source is not None:
        return Layout(source, tuple(range(source.rank)))
    return Layout(operand, perm)


#: query rows up to which an unmasked attention also reads (B, H, S, d) keys and values as
#: they are: a decoder step's cross-attention over the encoder's keys, whose Transposes to
#: (B, S, H*d) re-read the whole cache every step (Whisper-tiny's step: 2.4 of 13.9 ms in
#: ONNX Runtime's profile) while the flash path they lead to gains nothing for so few queries
SPLIT_HEADS_MAX_QUERIES = 32


def _split_heads(fusion: AttentionFusion) -> bool:
    """Whether the keys and values reach the kernel as they are, (B, H, S, d) (ONNX Runtime's
    BNSH key/value input): for a masked attention, and for an unmasked one of at most
    :data:`SPLIT_HEADS_MAX_QUERIES` queries. Other unmasked attention runs on (B, S, H*d)
    keys through the kernel's flash path, which BNSH keys would skip."""
    queries, depth, value_depth = fusion.dims[2], fusion.dims[4], fusion.dims[5]
    return (
        (fusion.mask is not None or queries <= SPLIT_HEADS_MAX_QUERIES)
        # the kernel takes BNSH keys and values of one shape only
        and depth == value_depth
        and fusion.key.operand.rank == 4
        and fusion.key.perm == _HEADS
        and fusion.value.perm == _HEADS
    )


class AttentionLowering(LoweringBase):
    """Emits the kernel of an :class:`AttentionFusion`."""

    def lower_attention(self, fusion: AttentionFusion) -> None:
        batch, heads, length, source, depth, value_depth = fusion.dims
        names = [self._merged(fusion.query, [batch, length, heads * depth])]
        if _split_heads(fusion):
            # keys and values already (B, H, S, d) (a decoder's cache): the kernel reads
            # them so, without a Transpose to (B, S, H*d) that it would undo itself
            names += [self.value(fusion.key.operand), self.value(fusion.value.operand)]
        else:
            names.append(self._merged(fusion.key, [batch, source, heads * depth]))
            names.append(self._merged(fusion.value, [batch, source, heads * value_depth]))
        attrs: dict[str, Any] = {"num_heads": heads, "scale": fusion.scale}
        if fusion.mask is not None:
            names += ["", "", ""]  # (bias, key_padding_mask, attention_bias)
            if fusion.mask_kind in ("padding", "mask"):
                names[4] = self._key_mask(fusion)
                attrs["mask_filter_value"] = -math.inf
            else:
                names[5] = self._bias(fusion)
            while names[-1] == "":
                names.pop()
        out = self.out(fusion.output)
        merged_shape = [batch, length, heads * value_depth]
        if fusion.merged and list(fusion.output.shape) == merged_shape:
            self.e.node("MultiHeadAttention", names, [out], domain=_MICROSOFT, **attrs)
            return
        result = self.e.node("MultiHeadAttention", names, 1, domain=_MICROSOFT, **attrs)[0]
        if fusion.merged:
            self.e.one("Reshape", [result, self.e.ints(fusion.output.shape)], out)
            return
        split = self.e.one("Reshape", [result, self.e.ints([batch, length, heads, value_depth])])
        self.e.one("Transpose", [split], out, perm=list(_HEADS))

    def _merged(self, layout: Layout, shape: list[int]) -> str:
        value = self.transpose_const_or_node(layout.operand, layout.perm)
        if layout.shape() == shape:
            return value
        return self.e.one("Reshape", [value, self.e.ints(shape)])

    def _key_mask(self, fusion: AttentionFusion) -> str:
        """The bool mask as the kernel's int32 key_padding_mask: (B, S) or (B, L, S)."""
        assert fusion.mask is not None
        batch, _, length, source = fusion.dims[:4]
        rows, _, queries, keys = fusion.mask_dims
        if fusion.mask_kind == "padding":
            shape, full = [rows, keys], [batch, source]
        else:
            shape, full = [rows, queries, keys], [batch, length, source]
        mask = self.e.cast(self.reshape_const_or_node(fusion.mask, shape), "int32")
        return mask if shape == full else self.e.one("Expand", [mask, self.e.ints(full)])

    def _bias(self, fusion: AttentionFusion) -> str:
        """The mask as the kernel's additive attention_bias (B or 1, H or 1, L, S)."""
        assert fusion.mask is not None
        length, source = fusion.dims[2:4]
        shape = list(fusion.mask_dims)
        value = self.reshape_const_or_node(fusion.mask, shape)
        if fusion.mask_kind == "bool_bias":
            flag = self.e.cast(value, "bool")
            nought, minus_inf = (self.e.scalar(v, "float32") for v in (0.0, -math.inf))
            value = self.e.one("Where", [flag, nought, minus_inf])
        full = [*shape[:2], length, source]
        return value if shape == full else self.e.one("Expand", [value, self.e.ints(full)])
