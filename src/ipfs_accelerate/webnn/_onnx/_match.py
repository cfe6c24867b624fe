"""What the compiler's pattern matchers share (attention, quantized products, RMSNorm and
rotary): who produces an operand, who reads it, and scalar constants."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ipfs_accelerate.webnn._operand import CONSTANT, MLOperand, Node

__all__ = ["MICROSOFT", "Readers", "producer", "scalar"]

#: ONNX Runtime's contrib-op domain (the fused kernels the matchers lower to)
MICROSOFT: Final = "com.microsoft"


def producer(operand: MLOperand | None, *ops: str) -> Node | None:
    """The node that computes ``operand`` when its op is one of ``ops``, else None."""
    node = None if operand is None else operand._node
    return node if node is not None and node.op in ops else None


def scalar(operand: MLOperand | None) -> float | None:
    """The value of a one-element constant operand, else None."""
    if operand is None or operand._kind != CONSTANT or operand._value is None:
        return None
    return float(operand._value.reshape(-1)[0]) if operand._value.size == 1 else None


@dataclass(slots=True)
class Readers:
    """Who reads each operand of the graph being lowered (by operand id), and which
    operands are graph outputs: a fused pattern's intermediates must have one reader each
    and be no output."""

    consumers: Mapping[int, list[Node]]
    graph_outputs: set[int]

    def only(self, operand: MLOperand, op: str | None = None) -> Node | None:
        """The one node reading ``operand`` (of type ``op``), when it is not a graph output."""
        users = self.consumers.get(operand._id, [])
        if len(users) != 1 or operand._id in self.graph_outputs:
            return None
        return users[0] if op is None or users[0].op == op else None

    def sole(self, operand: MLOperand | None, node: Node) -> bool:
        """Whether ``node`` is the one reader of ``operand``, which is not a graph output."""
        return operand is not None and self.only(operand) is node
