"""Reductions, arg max/min and cumulative sums."""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from ipfs_accelerate.webnn._onnx._base import INT64_MIN, LoweringBase
from ipfs_accelerate.webnn._operand import MLOperand, Node
from ipfs_accelerate.webnn._types import numpy_dtype

__all__ = ["ReduceLowering"]

# ONNX Runtime accumulates these in floating point for integers: they are composed exactly
_EXACT_INTEGER_REDUCTIONS: Final = frozenset(
    {"reduce_sum", "reduce_l1", "reduce_sum_square", "reduce_product"}
)


class ReduceLowering(LoweringBase):
    """The ``reduce_*`` ops, ``arg_max``/``arg_min`` and ``cumulative_sum``."""

    _REDUCE_OPS: Final = {
        "reduce_l1": "ReduceL1",
        "reduce_l2": "ReduceL2",
        "reduce_log_sum": "ReduceLogSum",
        "reduce_log_sum_exp": "ReduceLogSumExp",
        "reduce_max": "ReduceMax",
        "reduce_mean": "ReduceMean",
        "reduce_min": "ReduceMin",
        "reduce_product": "ReduceProd",
        "reduce_sum": "ReduceSum",
        "reduce_sum_square": "ReduceSumSquare",
    }

    def _reduce(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        axes: tuple[int, ...] = node.attrs["axes"]
        out = self.out(node.outputs[0])
        dtype = x.data_type
        value = self.value(x)
        if not axes:
            # reducing over no axis leaves each element alone: only the element-wise part remains
            if node.op == "reduce_sum_square":
                self.e.one("Mul", [value, value], out)
            elif node.op in ("reduce_l1", "reduce_l2"):
                self.e.one("Abs", [value], out)
            elif node.op == "reduce_log_sum":
                self.e.one("Log", [value], out)
            else:
                self.e.one("Identity", [value], out)
            return
        if numpy_dtype(dtype).kind in "iu" and node.op in _EXACT_INTEGER_REDUCTIONS:
            self._integer_reduce(node, x, axes, out)
            return
        op_type = self._REDUCE_OPS[node.op]
        keep = int(node.attrs["keep_dimensions"])
        axes_name = self.e.ints(axes)
        if dtype == "uint64" and op_type in ("ReduceMax", "ReduceMin"):
            ordered = self.unsigned_order(value, dtype)
            reduced = self.e.one(op_type, [ordered, axes_name], keepdims=keep)
            flipped = self.e.one("BitwiseXor", [reduced, self.e.scalar(INT64_MIN, "int64")])
            self.e.cast(flipped, dtype, out)
            return
        self.compute(op_type, [value, axes_name], dtype, out, n_data=1, keepdims=keep)

    def _integer_reduce(self, node: Node, x: MLOperand, axes: tuple[int, ...], out: str) -> None:
        """Integer sums and products, exact and wrapping like the type.

        ONNX Runtime's integer ReduceSum/ReduceProd accumulate in floating point (inexact past
        2**53, saturating on overflow); an integer MatMul with a ones vector and a tree of Muls
        are exact, with the modular wrap-around of integer arithmetic."""
        dtype = x.data_type
        value = self.value(x)
        if node.op == "reduce_l1" and numpy_dtype(dtype).kind == "i":
            value = self.e.one("Abs", [value])
        elif node.op == "reduce_sum_square":
            value = self.e.one("Mul", [value, value])
        kept = [a for a in range(x.rank) if a not in axes]
        perm = kept + list(axes)
        if perm != list(range(x.rank)):
            value = self.e.one("Transpose", [value], perm=perm)
        rows = math.prod(x.shape[a] for a in kept)
        count = math.prod(x.shape[a] for a in axes)
        value = self.e.one("Reshape", [value, self.e.ints([rows, count])])
        if node.op == "reduce_product":
            while count > 1:
                half = count // 2
                left = self._slice_last(value, 0, half)
                right = self._slice_last(value, half, 2 * half)
                product = self.e.one("Mul", [left, right])
                if count % 2:
                    product = self.e.one(
                        "Concat", [product, self._slice_last(value, 2 * half, count)], axis=1
                    )
                value, count = product, half + count % 2
        else:
            ones = self.e.const(np.ones((count, 1), dtype=numpy_dtype(dtype)), share=True)
            value = self.e.one("MatMul", [value, ones])
        self.e.one("Reshape", [value, self.e.ints(node.outputs[0].shape)], out)

    def _slice_last(self, value: str, start: int, end: int) -> str:
        return self.e.one(
            "Slice", [value, self.e.ints([start]), self.e.ints([end]), self.e.ints([1])]
        )

    _op_reduce_l1 = _reduce
    _op_reduce_l2 = _reduce
    _op_reduce_log_sum = _reduce
    _op_reduce_log_sum_exp = _reduce
    _op_reduce_max = _reduce
    _op_reduce_mean = _reduce
    _op_reduce_min = _reduce
    _op_reduce_product = _reduce
    _op_reduce_sum = _reduce
    _op_reduce_sum_square = _reduce

    def _arg(self, node: Node, op_type: str) -> None:
        (x,) = node.inputs
        assert x is not None
        value = self.value(x)
        dtype = x.data_type
        if dtype == "uint64":
            value, dtype = self.unsigned_order(value, dtype), "int64"
        attrs = {"axis": node.attrs["axis"], "keepdims": int(node.attrs["keep_dimensions"])}
        result = node.outputs[0]
        if result.data_type == "int64":
            self.compute(op_type, [value], dtype, self.out(result), out_type="int64", **attrs)
        else:
            indices = self.compute(
                op_type, [value], dtype, self.e.fresh(), out_type="int64", **attrs
            )
            self.e.cast(indices, "int32", self.out(result))

    def _op_arg_max(self, node: Node) -> None:
        self._arg(node, "ArgMax")

    def _op_arg_min(self, node: Node) -> None:
        self._arg(node, "ArgMin")

    def _op_cumulative_sum(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        self.compute(
            "CumSum",
            [self.value(x), self.e.scalar(node.attrs["axis"], "int64")],
            x.data_type,
            self.out(node.outputs[0]),
            n_data=1,
            exclusive=int(node.attrs["exclusive"]),
            reverse=int(node.attrs["reversed"]),
        )
