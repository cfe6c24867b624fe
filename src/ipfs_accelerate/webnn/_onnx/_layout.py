"""Data movement (reshape, slice, pad, ...), selection and gather/scatter."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ipfs_accelerate.webnn._onnx._base import INT64_MIN, SUPPORTED, LoweringBase
from ipfs_accelerate.webnn._operand import MLOperand, Node
from ipfs_accelerate.webnn._types import numpy_dtype

__all__ = ["LayoutLowering"]


class LayoutLowering(LoweringBase):
    """Ops that move, select or index values without arithmetic on them."""

    # ================================================================== data movement

    def _op_concat(self, node: Node) -> None:
        names = [self.value(x) for x in node.inputs if x is not None]
        self.e.one("Concat", names, self.out(node.outputs[0]), axis=node.attrs["axis"])

    def _op_reshape(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        shape = self.e.ints(node.attrs["shape"])
        self.e.one("Reshape", [self.value(x), shape], self.out(node.outputs[0]))

    def _op_expand(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        shape = self.e.ints(node.attrs["shape"])
        self.e.one("Expand", [self.value(x), shape], self.out(node.outputs[0]))

    def _op_transpose(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        perm = list(node.attrs["permutation"])
        if perm == list(range(len(perm))):
            self.e.one("Identity", [self.value(x)], self.out(node.outputs[0]))
            return
        self.e.one("Transpose", [self.value(x)], self.out(node.outputs[0]), perm=perm)

    def _op_slice(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        out = self.out(node.outputs[0])
        starts, sizes, strides = node.attrs["starts"], node.attrs["sizes"], node.attrs["strides"]
        axes = [
            i
            for i in range(x.rank)
            if not (starts[i] == 0 and sizes[i] == x.shape[i] and strides[i] == 1)
        ]
        if not axes:
            self.e.one("Identity", [self.value(x)], out)
            return
        self.e.one(
            "Slice",
            [
                self.value(x),
                self.e.ints([starts[i] for i in axes]),
                self.e.ints([starts[i] + sizes[i] for i in axes]),
                self.e.ints(axes),
                self.e.ints([strides[i] for i in axes]),
            ],
            out,
        )

    def _op_split(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        outs = [self.out(o) for o in node.outputs]
        if len(outs) == 1:
            self.e.one("Identity", [self.value(x)], outs[0])
            return
        self.e.node(
            "Split",
            [self.value(x), self.e.ints(node.attrs["splits"])],
            outs,
            axis=node.attrs["axis"],
        )

    def _op_pad(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        if x.rank == 0:
            # a 0-D input has empty paddings (a no-op), which ONNX Runtime's Pad refuses
            self.e.one("Identity", [self.value(x)], self.out(node.outputs[0]))
            return
        pads = self.e.ints([*node.attrs["begin"], *node.attrs["end"]])
        mode = {"constant": "constant", "edge": "edge", "reflection": "reflect"}[node.attrs["mode"]]
        inputs = [self.value(x), pads]
        if mode == "constant":
            inputs.append(self.e.scalar(node.attrs["value"], x.data_type))
        self.e.one("Pad", inputs, self.out(node.outputs[0]), mode=mode)

    def _op_tile(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        reps = self.e.ints(node.attrs["repetitions"])
        self.e.one("Tile", [self.value(x), reps], self.out(node.outputs[0]))

    def _op_reverse(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        out = self.out(node.outputs[0])
        axes = [a for a in node.attrs["axes"] if x.shape[a] > 1]
        if not axes:
            self.e.one("Identity", [self.value(x)], out)
            return
        count = len(axes)
        self.e.one(
            "Slice",
            [
                self.value(x),
                self.e.ints([-1] * count),
                self.e.ints([INT64_MIN] * count),
                self.e.ints(axes),
                self.e.ints([-1] * count),
            ],
            out,
        )

    def _op_triangular(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        out = self.out(node.outputs[0])
        upper, diagonal = node.attrs["upper"], node.attrs["diagonal"]
        if x.data_type in SUPPORTED["Trilu"]:
            k = self.e.scalar(diagonal, "int64")
            self.e.one("Trilu", [self.value(x), k], out, upper=int(upper))
            return
        # integers without a Trilu kernel: multiply by a 0/1 mask (exact for integers)
        rows, cols = x.shape[-2], x.shape[-1]
        mask = (
            np.triu(np.ones((rows, cols), dtype=bool), diagonal)
            if upper
            else np.tril(np.ones((rows, cols), dtype=bool), diagonal)
        )
        factor = self.e.const(mask.astype(numpy_dtype(x.data_type)), share=True)
        self.e.one("Mul", [self.value(x), factor], out)

    def _op_where(self, node: Node) -> None:
        condition, yes, no = node.inputs
        assert condition is not None and yes is not None and no is not None
        flag = self.e.cast(self.value(condition), "bool")
        self.where(flag, self.value(yes), self.value(no), yes.data_type, self.out(node.outputs[0]))

    # ------------------------------------------------------------------ gather / scatter

    def _clamped_indices(
        self, indices: MLOperand, sizes: Sequence[int], *, int64: bool = False
    ) -> str:
        """Indices clamped into [-size, size - 1] (one size per last-axis component when
        several are given), typed for ONNX's gather/scatter kernels: int32 stays int32 unless
        ``int64`` is required; uint32 becomes int64."""
        unsigned = indices.data_type == "uint32"
        lows = np.array([0 if unsigned else -s for s in sizes], dtype=np.int64)
        highs = np.array([s - 1 for s in sizes], dtype=np.int64)
        keep32 = indices.data_type == "int32" and not int64
        array = self.const_value(indices)
        if array is not None:
            clamped = np.clip(array.astype(np.int64), lows, highs)
            return self.e.const(clamped.astype(np.int32 if keep32 else np.int64), share=True)
        value = self.value(indices)
        dtype = indices.data_type
        if not keep32 and dtype != "int64":
            value, dtype = self.e.cast(value, "int64"), "int64"
        if len(sizes) == 1:
            low = self.e.scalar(int(lows[0]), dtype)
            high = self.e.scalar(int(highs[0]), dtype)
            return self.e.one("Clip", [value, low, high])
        capped = self.e.one("Min", [value, self.e.const(highs.astype(numpy_dtype(dtype)))])
        return self.e.one("Max", [capped, self.e.const(lows.astype(numpy_dtype(dtype)))])

    def _op_gather(self, node: Node) -> None:
        x, indices = node.inputs
        assert x is not None and indices is not None
        axis = node.attrs["axis"]
        idx = self._clamped_indices(indices, [x.shape[axis]])
        self.e.one("Gather", [self.value(x), idx], self.out(node.outputs[0]), axis=axis)

    def _op_gather_elements(self, node: Node) -> None:
        x, indices = node.inputs
        assert x is not None and indices is not None
        axis = node.attrs["axis"]
        idx = self._clamped_indices(indices, [x.shape[axis]])
        self.e.one("GatherElements", [self.value(x), idx], self.out(node.outputs[0]), axis=axis)

    def _op_gather_nd(self, node: Node) -> None:
        x, indices = node.inputs
        assert x is not None and indices is not None
        idx = self._nd_indices(indices, x)
        self.e.one("GatherND", [self.value(x), idx], self.out(node.outputs[0]))

    def _nd_indices(self, indices: MLOperand, x: MLOperand) -> str:
        depth = indices.shape[-1]
        return self._clamped_indices(indices, list(x.shape[:depth]), int64=True)

    def _op_scatter_elements(self, node: Node) -> None:
        x, indices, updates = node.inputs
        assert x is not None and indices is not None and updates is not None
        axis = node.attrs["axis"]
        idx = self._clamped_indices(indices, [x.shape[axis]])
        self.e.one(
            "ScatterElements",
            [self.value(x), idx, self.value(updates)],
            self.out(node.outputs[0]),
            axis=axis,
        )

    def _op_scatter_nd(self, node: Node) -> None:
        x, indices, updates = node.inputs
        assert x is not None and indices is not None and updates is not None
        idx = self._nd_indices(indices, x)
        reduction = node.attrs.get("reduction")
        extra = {"reduction": reduction} if reduction else {}
        self.e.one(
            "ScatterND",
            [self.value(x), idx, self.value(updates)],
            self.out(node.outputs[0]),
            **extra,
        )
