"""Convolution (1-d as 2-d of height 1): ``_kernels/_conv``."""

from __future__ import annotations

import math

from ipfs_accelerate.hal._backend import Shape
from ipfs_accelerate.hal.webgpu._kernels import _conv
from ipfs_accelerate.hal.webgpu._kernels._wgsl import WType
from ipfs_accelerate.hal.webgpu._memory import GPUArray
from ipfs_accelerate.hal.webgpu._ops_base import WebGPUOps
from ipfs_accelerate.hal.webgpu._pipelines import LayoutKey
from ipfs_accelerate.hal.webgpu._recorder import ErrorBuilder
from ipfs_accelerate.tensor._tensor import Tensor


class ConvOps(WebGPUOps):
    """conv."""

    def conv(
        self,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        stride: tuple[int, ...],
        padding: tuple[tuple[int, int], ...],
        dilation: tuple[int, ...],
        groups: int,
        out_shape: Shape,
    ) -> GPUArray:
        dispatch = self._dispatch
        wtype = dispatch.wtype(x.dtype, "conv")
        count = math.prod(out_shape)
        key = ("conv", wtype.name, bias is not None)
        entry = dispatch.cached(key)
        if entry is None:

            def make() -> tuple[str, str, LayoutKey, ErrorBuilder, WType]:
                source, layout = _conv.conv_source(wtype, bias is not None)
                return f"conv.{wtype.name}", source, layout, (), wtype

            entry = dispatch.kernel(key, make)
        out = dispatch.alloc(count, wtype, "conv")
        if count == 0:
            return out
        if x.ndim == 3:  # conv1d as conv2d of height 1
            n, c_in, width = x.shape
            height, kh, kw = 1, 1, weight.shape[2]
            oh, ow = 1, out_shape[2]
            sh, sw, ph, pw, dh, dw = 1, stride[0], 0, padding[0][0], 1, dilation[0]
        else:
            n, c_in, height, width = x.shape
            kh, kw = weight.shape[2], weight.shape[3]
            oh, ow = out_shape[2], out_shape[3]
            (sh, sw), (dh, dw) = stride, dilation
            ph, pw = padding[0][0], padding[1][0]
        words = [count, 0, 0, 0, n, c_in, height, width, weight.shape[0], oh, ow]
        words.extend((kh, kw, sh, sw, ph, pw, dh, dw, groups))
        buffers = [x._data.buf, weight._data.buf]
        if bias is not None:
            buffers.append(bias._data.buf)
        buffers.append(out.buf)
        dispatch.record(entry, tuple(buffers), out, words, dispatch.groups(count))
        return dispatch.inherit(out, x, weight, bias)


__all__ = ["ConvOps"]
