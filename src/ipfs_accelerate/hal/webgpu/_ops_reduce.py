"""Reductions and the fused row ops (softmax, layer_norm): ``_kernels/_reduce``."""

from __future__ import annotations

import math

from ipfs_accelerate.errors import TensorOverflowError
from ipfs_accelerate.hal.webgpu._kernels import _reduce
from ipfs_accelerate.hal.webgpu._kernels._wgsl import WType
from ipfs_accelerate.hal.webgpu._memory import GPUArray
from ipfs_accelerate.hal.webgpu._ops_base import WebGPUOps
from ipfs_accelerate.hal.webgpu._pipelines import LayoutKey
from ipfs_accelerate.hal.webgpu._recorder import ErrorBuilder
from ipfs_accelerate.tensor._dtype import DType, as_dtype
from ipfs_accelerate.tensor._tensor import Tensor


class ReduceOps(WebGPUOps):
    """reduce, arg_reduce, softmax, layer_norm."""

    def _blocks(self, x: Tensor, axes: tuple[int, ...]) -> tuple[Tensor, int, int, int]:
        """``x`` as (outer, R, inner) with the reduced ``axes`` as the middle block (a permuted
        copy when they are not adjacent)."""
        shape = x.shape
        first, last = axes[0], axes[-1]
        if axes == tuple(range(first, last + 1)):
            outer, inner = math.prod(shape[:first]), math.prod(shape[last + 1 :])
            return x, outer, math.prod(shape[first : last + 1]), inner
        kept = [d for d in range(len(shape)) if d not in axes]
        order = (*kept, *axes)
        moved_shape = tuple(shape[d] for d in order)
        moved = Tensor(self.permute(x, order), moved_shape, x.dtype, self)
        return moved, math.prod(shape[d] for d in kept), math.prod(shape[d] for d in axes), 1

    def _row_shape(self, rows: int, length: int) -> str:
        """ "group" (a workgroup per row) or "thread" (an invocation per row). On a CPU adapter
        invocations are SIMD lanes and workgroup barriers are costly: rows get a workgroup
        only when there are too few rows to keep the cores busy."""
        if self._dispatch.device.adapter_type == "cpu":
            return "group" if rows < 64 and length >= 512 else "thread"
        return "group" if length >= 256 and rows <= 16384 else "thread"

    def _row_groups(self, rows: int, shape: str) -> tuple[int, int, int]:
        if shape == "thread":
            return self._dispatch.groups(rows, _reduce.GROUP)
        width = min(rows, self._dispatch.max_groups)
        return (width, -(-rows // width), 1)

    def reduce(
        self,
        op: str,
        x: Tensor,
        axes: tuple[int, ...],
        keepdims: bool,
        out_dtype: DType,
        correction: float = 0.0,
    ) -> GPUArray:
        dispatch = self._dispatch
        src = dispatch.wtype(x.dtype, op)
        out_wt = dispatch.wtype(out_dtype, op)
        block, outer, length, inner = self._blocks(x, axes)
        rows = outer * inner
        shape = self._row_shape(rows, length)
        key = ("reduce", op, src.name, out_wt.name, shape)
        entry = dispatch.cached(key)
        if entry is None:

            def make() -> tuple[str, str, LayoutKey, ErrorBuilder, WType]:
                if op == "var":
                    source, layout = _reduce.var_source(src, out_wt, shape)
                else:
                    source, layout = _reduce.reduce_source(op, src, out_wt, shape)
                errors: ErrorBuilder = ()
                if layout[2]:
                    message = f"{op}: integer result overflows int64; cast to float64 first"
                    errors = (lambda w: TensorOverflowError(message),)
                return f"reduce.{op}.{src.name}.{shape}", source, layout, errors, out_wt

            entry = dispatch.kernel(key, make)
        out = dispatch.alloc(rows, out_wt, op)
        if rows == 0:
            return out
        divisor: float = float(length) if op != "var" else max(length - correction, 0.0)
        divisor_words = dispatch.scalar_words(divisor, out_wt, rounded=False)
        words = [rows, 0, 0, 0, length, inner, 0, 0, *divisor_words]
        groups = self._row_groups(rows, shape)
        dispatch.record(entry, (block._data.buf, out.buf), out, words, groups)
        return dispatch.inherit(out, block)

    def arg_reduce(self, op: str, x: Tensor, axis: int, keepdims: bool) -> GPUArray:
        dispatch = self._dispatch
        src = dispatch.wtype(x.dtype, op)
        out_wt = dispatch.wtype(as_dtype("int64"), op)
        shape_ = x.shape
        outer, length = math.prod(shape_[:axis]), shape_[axis]
        inner = math.prod(shape_[axis + 1 :])
        rows = outer * inner
        shape = self._row_shape(rows, length)
        key = ("reduce", op, src.name, out_wt.name, shape)
        entry = dispatch.cached(key)
        if entry is None:

            def make() -> tuple[str, str, LayoutKey, ErrorBuilder, WType]:
                source, layout = _reduce.reduce_source(op, src, out_wt, shape)
                return f"reduce.{op}.{src.name}.{shape}", source, layout, (), out_wt

            entry = dispatch.kernel(key, make)
        out = dispatch.alloc(rows, out_wt, op)
        if rows:
            words = [rows, 0, 0, 0, length, inner]
            groups = self._row_groups(rows, shape)
            dispatch.record(entry, (x._data.buf, out.buf), out, words, groups)
        return dispatch.inherit(out, x)

    # ------------------------------------------------------------------ fused row ops

    def softmax(self, x: Tensor, axis: int, log: bool) -> GPUArray:
        dispatch = self._dispatch
        wtype = dispatch.wtype(x.dtype, "softmax")
        shape_ = x.shape
        outer, length = math.prod(shape_[:axis]), shape_[axis]
        inner = math.prod(shape_[axis + 1 :])
        rows = outer * inner
        shape = self._row_shape(rows, length)
        key = ("softmax", wtype.name, log, shape)
        entry = dispatch.cached(key)
        if entry is None:

            def make() -> tuple[str, str, LayoutKey, ErrorBuilder, WType]:
                source, layout = _reduce.softmax_source(wtype, log, shape)
                name = f"{'log_' if log else ''}softmax.{wtype.name}.{shape}"
                return name, source, layout, (), wtype

            entry = dispatch.kernel(key, make)
        out = dispatch.alloc(x.size, wtype, "softmax")
        if rows and length:
            words = [rows, 0, 0, 0, length, inner]
            groups = self._row_groups(rows, shape)
            dispatch.record(entry, (x._data.buf, out.buf), out, words, groups)
        return dispatch.inherit(out, x)

    def layer_norm(
        self, x: Tensor, weight: Tensor | None, bias: Tensor | None, num_axes: int, eps: float
    ) -> GPUArray:
        dispatch = self._dispatch
        wtype = dispatch.wtype(x.dtype, "layer_norm")
        length = math.prod(x.shape[x.ndim - num_axes :])
        rows = math.prod(x.shape[: x.ndim - num_axes])
        shape = self._row_shape(rows, length)
        has_w, has_b = weight is not None, bias is not None
        key = ("layer_norm", wtype.name, has_w, has_b, shape)
        entry = dispatch.cached(key)
        if entry is None:

            def make() -> tuple[str, str, LayoutKey, ErrorBuilder, WType]:
                source, layout = _reduce.layer_norm_source(wtype, has_w, has_b, shape)
                return f"layer_norm.{wtype.name}.{shape}", source, layout, (), wtype

            entry = dispatch.kernel(key, make)
        out = dispatch.alloc(x.size, wtype, "layer_norm")
        if rows and length:
            buffers = [x._data.buf]
            if weight is not None:
                buffers.append(weight._data.buf)
            if bias is not None:
                buffers.append(bias._data.buf)
            buffers.append(out.buf)
            eps_words = dispatch.scalar_words(float(eps), wtype)
            words = [rows, 0, 0, 0, length, 0, 0, 0, *eps_words]
            groups = self._row_groups(rows, shape)
            dispatch.record(entry, tuple(buffers), out, words, groups)
        return dispatch.inherit(out, x, weight, bias)


__all__ = ["ReduceOps"]
