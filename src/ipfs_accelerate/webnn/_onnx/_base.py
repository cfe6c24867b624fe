"""What every op family's lowering shares: value names, widening to types that ONNX Runtime's
CPU kernels have, layouts, and the dispatch from a WebNN op to its ``_op_<name>`` method."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np

from ipfs_accelerate.webnn._onnx._emitter import Emitter
from ipfs_accelerate.webnn._operand import CONSTANT, MLOperand, Node

__all__ = ["FLOAT", "INT64_MIN", "SUPPORTED", "LoweringBase"]

_ALL: Final = frozenset(
    # int4/uint4 are int8/uint8 tensors in the graph (see _quantize.py)
    {"float32", "float16", "int32", "uint32", "int64", "uint64", "int8", "uint8", "int4", "uint4"}
)
FLOAT: Final = frozenset({"float32", "float16"})
_REDUCE: Final = frozenset({"float32", "float16", "int32", "int64"})
_REDUCE_ORDER: Final = frozenset({"float32", "float16", "int32", "int64", "int8", "uint8"})
# ONNX Runtime CPU kernels per ONNX op, where they do not cover every type the spec allows
SUPPORTED: Final[dict[str, frozenset[str]]] = {
    "Neg": frozenset({"float32", "float16", "int32", "int64", "int8"}),
    "Relu": frozenset({"float32", "float16", "int32", "int8"}),
    # float16 Sign exists but turns NaN into 0: it runs widened
    "Sign": _ALL - {"float16"},
    "Pow": frozenset({"float32", "float16", "int32", "int64"}),
    "CumSum": _REDUCE,
    "Trilu": _REDUCE,
    "Where": _ALL - {"uint64"},
    "ReduceSum": _REDUCE,
    "ReduceMean": _REDUCE,
    "ReduceProd": _REDUCE,
    "ReduceL1": _REDUCE,
    "ReduceL2": _REDUCE,
    "ReduceLogSum": _REDUCE,
    "ReduceLogSumExp": _REDUCE,
    "ReduceSumSquare": _REDUCE,
    "ReduceMax": _REDUCE_ORDER,
    "ReduceMin": _REDUCE_ORDER,
    "ArgMax": _REDUCE_ORDER,
    "ArgMin": _REDUCE_ORDER,
    "MaxPool": frozenset({"float32", "float16", "int8", "uint8"}),
}
# the wider type an op runs in when its kernel lacks a type; uint64 goes through int64 by bit
# pattern, which is exact for modular arithmetic (sum, product, cumulative sum, select)
_WIDER: Final[dict[str, str]] = {
    "int8": "int32",
    "uint8": "int32",
    "int32": "int64",
    "uint32": "int64",
    "uint64": "int64",
    "float16": "float32",
}
INT64_MIN: Final = -(2**63)


class LoweringBase:
    """The helpers; each op family subclasses it with its ``_op_<name>`` methods."""

    def __init__(self, emitter: Emitter, output_names: dict[int, str]) -> None:
        self.e = emitter
        self.output_names = output_names  # operand id -> graph output value name

    # ------------------------------------------------------------------ names

    def value(self, operand: MLOperand) -> str:
        return self.e.names[operand._id]

    def out(self, operand: MLOperand) -> str:
        """The value name an op's result must be written to."""
        name = self.output_names.get(operand._id) or self.e.fresh()
        self.e.names[operand._id] = name
        return name

    def const_value(self, operand: MLOperand | None) -> np.ndarray[Any, Any] | None:
        """The array behind a constant operand, for folding work at build time."""
        if operand is None or operand._kind != CONSTANT:
            return None
        return operand._value

    # ------------------------------------------------------------------ typed helpers

    def compute(
        self,
        op_type: str,
        inputs: Sequence[str],
        data_type: str,
        out: str,
        *,
        n_data: int | None = None,
        out_type: str | None = None,
        **attrs: Any,
    ) -> str:
        """Emit ``op_type`` on values of ``data_type``, widening when the kernel lacks it.

        The first ``n_data`` inputs (all by default) carry data of ``data_type``; the result
        has ``out_type`` (default ``data_type``) and is written to ``out``.
        """
        supported = SUPPORTED.get(op_type, _ALL)
        result_type = out_type or data_type
        if data_type in supported:
            return self.e.one(op_type, inputs, out, **attrs)
        wide = _WIDER[data_type]
        count = len(inputs) if n_data is None else n_data
        cast_in = [self.e.cast(v, wide) if i < count else v for i, v in enumerate(inputs)]
        if out_type is None:
            result = self.e.one(op_type, cast_in, **attrs)
            return self.e.cast(result, result_type, out)
        return self.e.one(op_type, cast_in, out, **attrs)

    def to_float32(self, operand: MLOperand) -> str:
        name = self.value(operand)
        return name if operand.data_type == "float32" else self.e.cast(name, "float32")

    def finish_float(self, value: str, data_type: str, out: str) -> str:
        """Write a float32 result to ``out`` in ``data_type``."""
        if data_type == "float32":
            return self.e.one("Identity", [value], out)
        return self.e.cast(value, data_type, out)

    def unsigned_order(self, value: str, data_type: str) -> str:
        """Map uint64 to int64 keeping the order (flip the top bit), for max/min/argmax."""
        as_signed = self.e.cast(value, "int64")
        return self.e.one("BitwiseXor", [as_signed, self.e.scalar(INT64_MIN, "int64")])

    def reshape_const_or_node(self, operand: MLOperand, shape: Sequence[int]) -> str:
        array = self.const_value(operand)
        if array is not None:
            return self.e.const(array.reshape(shape), share=True)
        return self.e.one("Reshape", [self.value(operand), self.e.ints(shape)])

    def transpose_const_or_node(self, operand: MLOperand, perm: Sequence[int]) -> str:
        if list(perm) == list(range(len(perm))):
            return self.value(operand)
        array = self.const_value(operand)
        if array is not None:
            return self.e.const(np.ascontiguousarray(array.transpose(perm)), share=True)
        return self.e.one("Transpose", [self.value(operand)], perm=list(perm))

    # ------------------------------------------------------------ used by several families

    def where(self, condition: str, yes: str, no: str, dtype: str, out: str | None = None) -> str:
        """Where(condition, yes, no) for any data type (uint64 goes through int64 bits)."""
        target = out or self.e.fresh()
        if dtype in SUPPORTED["Where"]:
            return self.e.one("Where", [condition, yes, no], target)
        picked = self.e.one(
            "Where", [condition, self.e.cast(yes, "int64"), self.e.cast(no, "int64")]
        )
        return self.e.cast(picked, dtype, target)

    def to_nchw(self, x: MLOperand, layout: str) -> str:
        if layout == "nchw":
            return self.value(x)
        return self.e.one("Transpose", [self.value(x)], perm=[0, 3, 1, 2])

    def from_nchw(self, value: str, layout: str, out: str) -> None:
        if layout == "nchw":
            self.e.one("Identity", [value], out)
        else:
            self.e.one("Transpose", [value], out, perm=[0, 2, 3, 1])

    def conv_output(self, layout: str, out: str) -> str:
        """Where the ONNX conv/pool node writes: the result itself for nchw."""
        return out if layout == "nchw" else self.e.fresh()

    # ================================================================== dispatch

    def lower(self, node: Node) -> None:
        handler: Callable[[Node], None] | None = getattr(self, f"_op_{node.op}", None)
        if handler is None:  # pragma: no cover - every builder op has a lowering
            raise NotImplementedError(f"no ONNX lowering for WebNN op {node.op!r}")
        handler(node)
