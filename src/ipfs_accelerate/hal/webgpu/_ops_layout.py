"""Shape and data movement: strided copies (map kernels) and ``_kernels/_layout``.

Handles are contiguous row-major buffers: ``reshape`` is free, and ``permute``,
``broadcast_to`` and ``slice`` are strided-copy kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ipfs_accelerate.errors import UnsupportedOpError
from ipfs_accelerate.hal._backend import Scalar, Shape
from ipfs_accelerate.hal.webgpu._dispatcher import broadcast_strides, contiguous_strides
from ipfs_accelerate.hal.webgpu._kernels import _elementwise as ew
from ipfs_accelerate.hal.webgpu._kernels import _layout
from ipfs_accelerate.hal.webgpu._kernels._wgsl import MAX_RANK, WType
from ipfs_accelerate.hal.webgpu._memory import GPUArray
from ipfs_accelerate.hal.webgpu._ops_base import WebGPUOps
from ipfs_accelerate.hal.webgpu._pipelines import LayoutKey
from ipfs_accelerate.hal.webgpu._recorder import ErrorBuilder
from ipfs_accelerate.tensor._tensor import Tensor


class LayoutOps(WebGPUOps):
    """reshape, permute, broadcast_to, slice, concat, gather, pad."""

    def reshape(self, x: Tensor, shape: Shape) -> GPUArray:
        handle: GPUArray = x._data
        return handle

    def _strided_copy(
        self, x: Tensor, out_shape: Shape, strides: tuple[int, ...], offset: int, op: str
    ) -> GPUArray:
        wtype = self._dispatch.wtype(x.dtype, op)
        placement = {"strides": (strides,), "offsets": (offset, 0, 0)}
        return self._dispatch.identity_map(wtype, x, out_shape, op, **placement)

    def permute(self, x: Tensor, axes: tuple[int, ...]) -> GPUArray:
        own = contiguous_strides(x.shape)
        out_shape = tuple(x.shape[a] for a in axes)
        return self._strided_copy(x, out_shape, tuple(own[a] for a in axes), 0, "permute")

    def broadcast_to(self, x: Tensor, shape: Shape) -> GPUArray:
        return self._strided_copy(x, shape, broadcast_strides(x.shape, shape), 0, "broadcast_to")

    def slice(self, x: Tensor, starts: Shape, steps: Shape, sizes: Shape) -> GPUArray:
        own = contiguous_strides(x.shape)
        offset = sum(s * st for s, st in zip(starts, own, strict=True))
        strides = tuple(st * step for st, step in zip(own, steps, strict=True))
        return self._strided_copy(x, sizes, strides, offset, "slice")

    def concat(self, xs: Sequence[Tensor], axis: int) -> GPUArray:
        dispatch = self._dispatch
        first = xs[0]
        wtype = dispatch.wtype(first.dtype, "concat")
        shape = list(first.shape)
        shape[axis] = sum(t.shape[axis] for t in xs)
        out_shape = tuple(shape)
        out = dispatch.alloc(math.prod(out_shape), wtype, "concat")
        out_strides = contiguous_strides(out_shape)
        position = 0
        for t in xs:
            if t.size:
                dispatch.identity_map(
                    wtype,
                    t,
                    t.shape,
                    "concat",
                    strides=(contiguous_strides(t.shape),),
                    out=out,
                    out_strides=out_strides,
                    out_offset=position * out_strides[axis],
                )
            position += t.shape[axis]
        return out

    def gather(self, x: Tensor, indices: Tensor, axis: int) -> GPUArray:
        dispatch = self._dispatch
        xt = dispatch.wtype(x.dtype, "gather")
        it = dispatch.wtype(indices.dtype, "gather")
        n = x.shape[axis]
        inner = math.prod(x.shape[axis + 1 :])
        count = indices.size
        out_count = math.prod(x.shape[:axis]) * count * inner
        key = ("gather", xt.name, it.name)
        entry = dispatch.cached(key)
        if entry is None:

            def make() -> tuple[str, str, LayoutKey, ErrorBuilder, WType]:
                source, layout = _layout.gather_source(xt, it)
                return f"gather.{xt.name}.{it.name}", source, layout, (), xt

            entry = dispatch.kernel(key, make)
        out = dispatch.alloc(out_count, xt, "gather")
        if out_count == 0:
            return out
        # the error names this call's axis and size, so it is built per call, not cached
        checked = (entry[0], (ew.index_error("gather", axis, n, it),), entry[2])
        words = [out_count, 0, 0, 0, count, n, inner]
        buffers = (x._data.buf, indices._data.buf, out.buf)
        dispatch.record(checked, buffers, out, words, dispatch.groups(out_count))
        return dispatch.inherit(out, x, indices)

    def pad(
        self, x: Tensor, pads: tuple[tuple[int, int], ...], mode: str, value: Scalar
    ) -> GPUArray:
        dispatch = self._dispatch
        wtype = dispatch.wtype(x.dtype, "pad")
        out_shape = tuple(d + b + a for d, (b, a) in zip(x.shape, pads, strict=True))
        count = math.prod(out_shape)
        key = ("pad", wtype.name, mode)
        entry = dispatch.cached(key)
        if entry is None:

            def make() -> tuple[str, str, LayoutKey, ErrorBuilder, WType]:
                source, layout = _layout.pad_source(wtype, mode)
                return f"pad.{mode}.{wtype.name}", source, layout, (), wtype

            entry = dispatch.kernel(key, make)
        out = dispatch.alloc(count, wtype, "pad")
        if count == 0:
            return out
        rank = x.ndim
        if rank > MAX_RANK:
            raise UnsupportedOpError(
                f"webgpu: pad of a {rank}-d tensor exceeds the kernel's {MAX_RANK} axes"
            )
        words = [count, rank, 0, 0, *dispatch.scalar_words(value, wtype)]
        words.extend([0] * (20 - len(words)))
        words.extend(out_shape)
        words.extend([0] * (MAX_RANK - rank))
        words.extend(x.shape)
        words.extend([0] * (MAX_RANK - rank))
        words.extend(b for b, _ in pads)
        words.extend([0] * (MAX_RANK - rank))
        dispatch.record(entry, (x._data.buf, out.buf), out, words, dispatch.groups(count))
        return dispatch.inherit(out, x)


__all__ = ["LayoutOps"]
