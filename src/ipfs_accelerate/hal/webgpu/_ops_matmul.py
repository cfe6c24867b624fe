"""Matrix products, linear layers and attention: ``_kernels/_matmul`` (and the masked softmax
of ``_kernels/_reduce``), with the kernel chosen per adapter by the tuner.

A linear layer's bias and a following activation run in the product's epilogue; attention
runs its scale, mask and softmax in one kernel between its two products.
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING

from ipfs_accelerate.errors import UnsupportedOpError
from ipfs_accelerate.hal._backend import Shape
from ipfs_accelerate.hal.webgpu._dispatcher import KernelEntry, broadcast_strides
from ipfs_accelerate.hal.webgpu._kernels import _matmul, _reduce
from ipfs_accelerate.hal.webgpu._kernels._quantized import WeightFormat
from ipfs_accelerate.hal.webgpu._kernels._wgsl import MAX_RANK, WType
from ipfs_accelerate.hal.webgpu._matmul_dispatch import matmul_entry, matmul_words, record_matmul
from ipfs_accelerate.hal.webgpu._memory import DeviceBuffer, GPUArray
from ipfs_accelerate.hal.webgpu._ops_base import WebGPUOps
from ipfs_accelerate.hal.webgpu._pipelines import LayoutKey
from ipfs_accelerate.hal.webgpu._quantized import ResidentWeight
from ipfs_accelerate.hal.webgpu._recorder import ErrorBuilder
from ipfs_accelerate.hal.webgpu._tuning import Tuner
from ipfs_accelerate.tensor._tensor import Tensor

if TYPE_CHECKING:
    from ipfs_accelerate.quantization import QuantizedTensor

#: (rows, cols) of outputs per invocation and the workgroup of the quantized-weight kernel
QUANT_BLOCK = (4, 4)
QUANT_WORKGROUP = (8, 8)


class MatmulOps(WebGPUOps):
    """matmul, linear, attention."""

    #: file of the per-adapter kernel choices (None: the default cache directory)
    _tuning_cache: str | None
    _tuner: Tuner | None

    # ------------------------------------------------------------------ kernel choice

    def _matmul_tuner(self) -> Tuner:
        if self._tuner is None:
            self._tuner = Tuner(self._dispatch, self._tuning_cache)
        return self._tuner

    def _matmul_choice_name(self) -> str:
        choice = self._matmul_tuner().current()
        return f"{choice.name} ({choice.source}; fallback {choice.fallback})"

    def _choose_variant(
        self, wtype: WType, m: int, n: int, k: int, trans_b: bool
    ) -> tuple[str, tuple[int, int], tuple[int, int]]:
        if wtype.name not in ("float32", "float16") or m * n * k < 4096:
            return _matmul.fixed_kernel("naive")
        choice = self._matmul_tuner().choice(m * n * k)
        if choice.variant == "rb":
            if wtype.name == "float32" and k % 4 == 0 and (trans_b or n % 4 == 0):
                return "rb", choice.block, choice.workgroup
            return _matmul.fixed_kernel(choice.fallback)
        return choice.variant, choice.block, choice.workgroup

    # ------------------------------------------------------------------ products

    def _product(
        self,
        a: Tensor,
        b: Tensor,
        batch: Shape,
        m: int,
        n: int,
        k: int,
        trans_b: bool,
        bias: Tensor | None,
        op: str,
    ) -> GPUArray:
        dispatch = self._dispatch
        wtype = dispatch.wtype(a.dtype, op)
        out = dispatch.alloc(math.prod(batch) * m * n, wtype, op)
        if out.nbytes == 0:
            return out
        a_batch = a.shape[:-2]
        b_batch = b.shape[:-2]
        a_strides = [s * m * k for s in broadcast_strides(a_batch, batch)] if batch else []
        b_strides = [s * k * n for s in broadcast_strides(b_batch, batch)] if batch else []
        variant, block, workgroup = self._choose_variant(wtype, m, n, k, trans_b)
        has_bias = bias is not None
        entry = matmul_entry(
            dispatch, variant, wtype, trans_b, has_bias, None, False, block, workgroup
        )
        words, count = matmul_words(m, n, k, batch, a_strides, b_strides)
        buffers = [a._data.buf, b._data.buf]
        if bias is not None:
            buffers.append(bias._data.buf)
        buffers.append(out.buf)
        record_matmul(
            dispatch, entry, variant, block, workgroup, tuple(buffers), words, m, n, count
        )
        self._remember_product(out, entry, variant, wtype, trans_b, has_bias, block, workgroup,
                               tuple(buffers), None)  # fmt: skip
        return dispatch.inherit(out, a, b, bias)

    def _remember_product(
        self,
        out: GPUArray,
        entry: KernelEntry,
        variant: str,
        wtype: WType,
        trans_b: bool,
        has_bias: bool,
        block: tuple[int, int],
        workgroup: tuple[int, int],
        buffers: tuple[DeviceBuffer, ...],
        weight: WeightFormat | None,
    ) -> None:
        """Note the product just recorded: a following activation may join its epilogue."""
        self._fusable = weakref.ref(out)
        kernel = entry[0]
        self._fusable_info = (
            variant, wtype, trans_b, has_bias, block, workgroup, kernel, buffers, weight
        )  # fmt: skip

    def matmul(self, a: Tensor, b: Tensor, out_shape: Shape) -> GPUArray:
        m, k = a.shape[-2], a.shape[-1]
        n = b.shape[-1]
        batch = out_shape[:-2]
        if k == 0:
            return self.full(out_shape, 0, a.dtype)
        if b.ndim == 2 and batch and a.shape[:-2] == batch:
            # (..., M, K) @ (K, N): one product over all rows
            return self._product(a, b, (), math.prod(batch) * m, n, k, False, None, "matmul")
        return self._product(a, b, batch, m, n, k, False, None, "matmul")

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> GPUArray:
        k = x.shape[-1]
        n = weight.shape[0]
        m = math.prod(x.shape[:-1])
        if k == 0:
            out_shape = (*x.shape[:-1], n)
            if bias is None:
                return self.full(out_shape, 0, x.dtype)
            return self.broadcast_to(bias, out_shape)
        return self._product(x, weight, (), m, n, k, True, bias, "linear")

    def quantized_linear(self, x: Tensor, weight: QuantizedTensor, bias: Tensor | None) -> GPUArray:
        """``x @ dequantize(weight).T + bias`` with the weight's int8 / int4 words unpacked in
        the shader (``_kernels/_quantized``); float16 and float32 inputs. Other float dtypes
        (float64) take the dequantized weight through the float product."""
        dispatch = self._dispatch
        wtype = dispatch.wtype(x.dtype, "linear")
        if wtype.name not in ("float32", "float16"):
            dense = weight.dequantize(self.name)
            if dense.dtype is not x.dtype:
                dense = dense.astype(x.dtype)
            return self.linear(x, dense, bias)
        resident = weight.prepared("webgpu", lambda q: ResidentWeight(dispatch, q))
        if resident.dispatcher is not dispatch:
            # the device was lost and replaced since: the cached buffers died with it
            resident = ResidentWeight(dispatch, weight)
        n, k = weight.shape
        m = math.prod(x.shape[:-1])
        out = dispatch.alloc(m * n, wtype, "linear")
        if out.nbytes == 0:
            return out
        fmt = resident.format
        variant, block, workgroup = "quant", QUANT_BLOCK, QUANT_WORKGROUP
        has_bias = bias is not None
        entry = matmul_entry(
            dispatch, variant, wtype, True, has_bias, None, False, block, workgroup, fmt
        )
        words, count = matmul_words(m, n, k, (), [], [])
        for index, value in resident.params:
            words[index] = value
        buffers = [x._data.buf, resident.words.buf, resident.scales.buf]
        if resident.zero_points is not None:
            buffers.append(resident.zero_points.buf)
        if bias is not None:
            buffers.append(bias._data.buf)
        buffers.append(out.buf)
        record_matmul(
            dispatch, entry, variant, block, workgroup, tuple(buffers), words, m, n, count
        )
        self._remember_product(
            out, entry, variant, wtype, True, has_bias, block, workgroup, tuple(buffers), fmt
        )
        return dispatch.inherit(out, x, bias)

    def _fuse_activation(self, op: str, x: Tensor) -> GPUArray | None:
        """Fold ``op`` into the epilogue of the product that made ``x``, when that product is
        still the last recorded dispatch: it then writes x and op(x) in one pass."""
        ref, info = self._fusable, self._fusable_info
        if ref is None or info is None or ref() is not x._data:
            return None
        variant, wtype, trans_b, has_bias, block, workgroup, kernel, buffers, weight = info
        dispatch = self._dispatch
        last = dispatch.recorder.last_record()
        if last is None or last[0] is not kernel or last[1] != buffers:
            return None
        self._fusable = None
        fused = matmul_entry(
            dispatch, variant, wtype, trans_b, has_bias, op, True, block, workgroup, weight
        )
        post = dispatch.alloc(x.size, wtype, op)
        # the product's temporaries (e.g. the contiguous copy of a strided input) may have gone
        # back to the pool since it was recorded: the output must not be one of the buffers the
        # same dispatch reads, or wgpu refuses the read-only + read-write binding
        set_aside = []
        while any(post.buf is b for b in buffers):
            set_aside.append(post)
            post = dispatch.alloc(x.size, wtype, op)
        del set_aside
        dispatch.recorder.replace_last(fused[0], (*buffers, post.buf))
        return dispatch.inherit(post, x)

    # ------------------------------------------------------------------ attention

    def attention(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        scale: float,
        out_shape: Shape,
    ) -> GPUArray:
        dispatch = self._dispatch
        wtype = dispatch.wtype(q.dtype, "attention")
        batch = out_shape[:-2]
        length, source, embed = q.shape[-2], k.shape[-2], q.shape[-1]
        scores_shape = (*batch, length, source)
        if embed == 0:
            scores_handle = self.full(scores_shape, 0, q.dtype)
        else:
            scores_handle = self._product(
                q, k, batch, length, source, embed, True, None, "attention"
            )
        self._fusable = None
        scores = Tensor(scores_handle, scores_shape, q.dtype, self)
        mask_wt = dispatch.wtype(mask.dtype, "attention") if mask is not None else None
        key = ("masked_softmax", wtype.name, mask_wt.name if mask_wt else None, is_causal)
        entry = dispatch.cached(key)
        if entry is None:

            def make() -> tuple[str, str, LayoutKey, ErrorBuilder, WType]:
                src, layout = _reduce.masked_softmax_source(wtype, mask_wt, is_causal)
                name = f"masked_softmax.{wtype.name}{'.causal' if is_causal else ''}"
                return name, src, layout, (), wtype

            entry = dispatch.kernel(key, make)
        rows = math.prod(batch) * length
        probs_handle = dispatch.alloc(rows * source, wtype, "attention")
        if rows and source:
            words = self._masked_softmax_words(rows, source, batch, length, scale, wtype, mask)
            buffers = [scores_handle.buf]
            if mask is not None:
                buffers.append(mask._data.buf)
            buffers.append(probs_handle.buf)
            groups = dispatch.groups(rows, _reduce.GROUP)
            dispatch.record(entry, tuple(buffers), probs_handle, words, groups)
        dispatch.inherit(probs_handle, scores_handle, mask)
        probs = Tensor(probs_handle, scores_shape, q.dtype, self)
        del scores
        out = self._product(probs, v, batch, length, v.shape[-1], source, False, None, "attention")
        self._fusable = None
        return out

    def _masked_softmax_words(
        self,
        rows: int,
        source: int,
        batch: Shape,
        length: int,
        scale: float,
        wtype: WType,
        mask: Tensor | None,
    ) -> list[int]:
        """The parameter block of attention's scale + mask + softmax kernel."""
        row_shape = (*batch, length)
        if len(row_shape) > MAX_RANK:
            raise UnsupportedOpError(
                f"webgpu: attention with {len(batch)} batch axes exceeds {MAX_RANK - 1}"
            )
        scale_words = self._dispatch.scalar_words(float(scale), wtype)
        words: list[int] = [rows, 0, 0, 0, source, 0, len(row_shape), 0, *scale_words]
        words.extend([0] * (20 - len(words)))
        words.extend(row_shape)
        words.extend([0] * (MAX_RANK - len(row_shape)))
        if mask is not None:
            mask_strides = broadcast_strides(mask.shape, (*row_shape, source))
            words.extend(mask_strides[:-1])
            words.extend([0] * (MAX_RANK - len(row_shape)))
            words.append(mask_strides[-1])
        else:
            words.extend([0] * MAX_RANK)
            words.append(0)
        words.append(length)
        return words


__all__ = ["MatmulOps"]
