"""Before lowering: the patterns of WebNN ops that become one ONNX Runtime kernel each
(quantized matmuls, ``_qmatmul``; attention, ``_attention``; RMS normalization and rotary
embeddings, ``_fused``), and the nodes left to lower once those kernels read their own
operands."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from ipfs_accelerate.webnn._onnx._attention import AttentionFusion, match_attention
from ipfs_accelerate.webnn._onnx._fused import (
    NormFusion,
    RotaryFusion,
    match_rms_norm,
    match_rotary,
    with_residual,
)
from ipfs_accelerate.webnn._onnx._qmatmul import Fusion, match_quantized
from ipfs_accelerate.webnn._operand import MLOperand, Node

__all__ = ["Fused", "plan"]

Fused = Fusion | AttentionFusion | NormFusion | RotaryFusion


def plan(
    nodes: Sequence[Node], outputs: Mapping[str, MLOperand]
) -> tuple[dict[int, Fused], list[Node]]:
    """The fusions (by ``id`` of their head node) and the nodes left to lower, in order."""
    consumers: dict[int, list[Node]] = {}
    for node in nodes:
        for operand in node.inputs:
            if operand is not None:
                consumers.setdefault(operand._id, []).append(node)
    graph_outputs = {operand._id for operand in outputs.values()}
    fusions: dict[int, Fused] = {}
    for node in nodes:
        fusion: Fused | None = None
        if node.op == "matmul":
            # a quantized product has a constant 2-D weight, attention's last product 3-D/4-D v
            fusion = match_quantized(node, consumers, graph_outputs) or match_attention(
                node, consumers, graph_outputs
            )
        elif node.op == "mul":
            norm = match_rms_norm(node, consumers, graph_outputs)
            fusion = None if norm is None else with_residual(norm, fusions)
        elif node.op == "add":
            fusion = match_rotary(node, consumers, graph_outputs)
        if fusion is not None:
            fusions[id(fusion.head)] = fusion
    if not fusions:
        return fusions, list(nodes)
    _share_quantized_inputs(fusions.values())
    # keep what the outputs still need once the fused kernels read their own operands
    live = set(graph_outputs)
    # the last node of a pattern whose kernel runs at an earlier node (a residual norm's)
    covered = {
        id(fusion.last): fusion
        for fusion in fusions.values()
        if isinstance(fusion, NormFusion) and fusion.last is not None
    }
    kept: list[Node] = []
    for node in reversed(nodes):
        earlier = covered.get(id(node))
        if earlier is not None:
            if any(operand._id in live for operand in node.outputs):
                live.add(earlier.head.outputs[0]._id)  # the kernel at the head computes it
            continue
        if not any(operand._id in live for operand in node.outputs):
            continue
        kept.append(node)
        fusion = fusions.get(id(node))
        reads = fusion.reads() if fusion is not None else node.inputs
        live.update(operand._id for operand in reads if operand is not None)
    kept.reverse()
    return fusions, kept


def _share_quantized_inputs(fusions: Iterable[Fused]) -> None:
    """Marks the dynamically quantized products that read one input with others (q, k and v
    of attention): quantizing it once saves a min/max pass and a rounding pass per extra
    reader (per row too: one set of zero-point columns, the most any of them needs). An input
    computed several times by the same elementwise op of the same operands (each Linear
    multiplying by the SmoothQuant factors q, k and v share) counts as one: the products read
    the first copy and the others are left out."""
    readers: dict[object, list[Fusion]] = {}
    for fusion in fusions:
        if isinstance(fusion, Fusion) and fusion.kind == "dynamic":
            readers.setdefault(_value_key(fusion.a), []).append(fusion)
        elif isinstance(fusion, Fusion) and fusion.row_floor is not None:
            # (per-row activations quantized by the kernel's own arithmetic: once per input,
            # with as many zero-point columns as its most demanding product needs)
            key = ("rows", fusion.row_floor, _value_key(fusion.a))
            readers.setdefault(key, []).append(fusion)
        elif isinstance(fusion, Fusion) and fusion.rounded_block:
            # (block-rounded activations of a 4-bit product: rounded once per input)
            key = ("rounded", fusion.rounded_block, _value_key(fusion.a))
            readers.setdefault(key, []).append(fusion)
    for group in readers.values():
        if len(group) > 1:
            columns = max(fusion.row_columns for fusion in group)
            for fusion in group:
                fusion.shared = fusion.kind == "dynamic"
                fusion.a = group[0].a
                fusion.row_columns = columns


#: elementwise ops whose result depends only on their operands (no attributes)
_PURE: Final = frozenset({"add", "sub", "mul", "div", "max", "min"})


def _value_key(operand: MLOperand) -> object:
    """Equal for operands that hold the same values by construction."""
    node = operand._node
    if node is not None and node.op in _PURE and not node.attrs and len(node.outputs) == 1:
        inputs = tuple(x._id if x is not None else None for x in node.inputs)
        return (node.op, inputs)
    if node is not None and node.op == "reshape" and node.inputs[0] is not None:
        # (each Linear flattens its (B, L, K) input to rows itself)
        return ("reshape", _value_key(node.inputs[0]), operand.shape)
    return operand._id
