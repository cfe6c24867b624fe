"""MLOperand and the builder's internal graph record (one node per builder call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.webnn._types import MLOperandDescriptor

if TYPE_CHECKING:  # pragma: no cover
    from ipfs_accelerate.webnn._builder import MLGraphBuilder

__all__ = ["MLOperand", "Node"]

INPUT = "input"
CONSTANT = "constant"
OUTPUT = "output"


class MLOperand:
    """An operand of a graph under construction: an input, a constant or an operation's output.

    Read-only: ``data_type`` and ``shape`` are the spec's attributes; operands belong to the
    MLGraphBuilder that created them and cannot be used with another one.
    """

    __slots__ = (
        "__weakref__",
        "_builder",
        "_descriptor",
        "_id",
        "_kind",
        "_name",
        "_node",
        "_value",
    )

    def __init__(
        self,
        builder: MLGraphBuilder,
        operand_id: int,
        descriptor: MLOperandDescriptor,
        kind: str,
        *,
        name: str | None = None,
        value: np.ndarray[Any, Any] | None = None,
    ) -> None:
        self._builder = builder
        self._id = operand_id
        self._descriptor = descriptor
        self._kind = kind
        self._name = name
        self._value = value
        self._node: Node | None = None

    @property
    def data_type(self) -> str:
        """The operand's data type (``"float32"``, ``"int64"``, ...)."""
        return self._descriptor.data_type

    @property
    def shape(self) -> tuple[int, ...]:
        """The operand's shape; ``()`` for a scalar."""
        return self._descriptor.shape

    @property
    def rank(self) -> int:
        return len(self._descriptor.shape)

    @property
    def descriptor(self) -> MLOperandDescriptor:
        return self._descriptor

    def __repr__(self) -> str:
        origin = {INPUT: f"input {self._name!r}", CONSTANT: "constant"}.get(self._kind)
        if origin is None:
            origin = f"output of {self._node.op if self._node else '?'}"
        return f"MLOperand({self.data_type} {list(self.shape)}, {origin})"


@dataclass(slots=True, eq=False)
class Node:
    """One builder call: a WebNN op with its operands, normalized attributes and outputs.

    ``inputs`` holds None for an absent optional operand, so that positions stay meaningful.
    """

    op: str
    inputs: tuple[MLOperand | None, ...]
    attrs: dict[str, Any]
    outputs: tuple[MLOperand, ...] = field(default=())
    label: str = ""
