"""Element-wise ops and creation: map kernels of ``_kernels/_elementwise``.

Unary and binary ops whose kernel cannot fail are deferred to the fuser; the rest record a
map kernel, and the compiled flat kernel of each (op, dtype, operand modes) is remembered so
that the next call skips planning.
"""

from __future__ import annotations

import math
from typing import Any

from ipfs_accelerate.hal._backend import Scalar, Shape
from ipfs_accelerate.hal.webgpu._dispatcher import KernelEntry
from ipfs_accelerate.hal.webgpu._fusion import Fuser
from ipfs_accelerate.hal.webgpu._kernels import _elementwise as ew
from ipfs_accelerate.hal.webgpu._kernels import _matmul
from ipfs_accelerate.hal.webgpu._kernels._wgsl import BOOL, F32, F64, WType
from ipfs_accelerate.hal.webgpu._memory import GPUArray
from ipfs_accelerate.hal.webgpu._ops_base import WebGPUOps
from ipfs_accelerate.tensor._dtype import DType
from ipfs_accelerate.tensor._tensor import Tensor

_TensorClass = Tensor
_SCALARS = (bool, int, float)
_C, _CC, _CK, _KC = ("c",), ("c", "c"), ("c", "k"), ("k", "c")


class ElementwiseOps(WebGPUOps):
    """full, arange, copy, cast, unary, binary, where, clamp."""

    #: lazy fusion of element-wise chains (None when $IPFS_ACCELERATE_WEBGPU_FUSION=0)
    _fuser: Fuser | None
    #: (op, dtype name, operand modes) -> compiled flat kernel of unary/binary ops, and the
    #: type of each operand
    _fast: dict[tuple[str, str, tuple[str, ...]], tuple[KernelEntry, tuple[WType, ...]]]

    # ------------------------------------------------------------------ creation, copies

    def full(self, shape: Shape, value: Scalar, dtype: DType) -> GPUArray:
        wtype = self._dispatch.wtype(dtype, "full")
        return self._dispatch.identity_map(wtype, value, shape, "full")

    def arange(self, start: Scalar, step: Scalar, size: int, dtype: DType) -> GPUArray:
        dispatch = self._dispatch
        out = dispatch.wtype(dtype, "arange")
        integral = out.is_int and isinstance(start, int) and isinstance(step, int)
        if integral or out.kind == "b":
            compute = out
        else:
            compute = F64 if "float64" in dispatch.wtypes else F32
        return dispatch.map(
            ("arange", compute.name, out.name),
            f"arange.{out.name}",
            lambda: ew.arange_body(compute, out),
            (compute, compute),
            (start, step),
            (size,),
            "arange",
        )

    def copy(self, x: Tensor) -> GPUArray:
        wtype = self._dispatch.wtype(x.dtype, "copy")
        return self._dispatch.identity_map(wtype, x, x.shape, "copy")

    def cast(self, x: Tensor, dtype: DType) -> GPUArray:
        src = self._dispatch.wtype(x.dtype, "astype")
        dst = self._dispatch.wtype(dtype, "astype")
        return self._dispatch.map(
            ("cast", src.name, dst.name),
            f"cast.{src.name}.{dst.name}",
            lambda: ew.cast_body(src, dst),
            (src,),
            (x,),
            x.shape,
            "astype",
        )

    # ------------------------------------------------------------------ element-wise

    def _defer(
        self,
        key: tuple[str, str],
        wtype: WType,
        out: WType,
        operands: tuple[Tensor | Scalar, ...],
        n: int,
        op: str,
    ) -> GPUArray:
        """A pending handle: an element-wise op that cannot fail waits to run fused with the
        element-wise ops that follow it (see _fusion)."""
        dispatch = self._dispatch
        dispatch.check_room(n * out.itemsize, op)
        scalar_words = [
            dispatch.scalar_words(o, wtype) if o.__class__ in _SCALARS else None  # type: ignore[arg-type]
            for o in operands
        ]
        pending = self._fuser.defer(key, wtype, out, operands, scalar_words, n)  # type: ignore[union-attr]
        for o in operands:
            if o.__class__ is _TensorClass and o._data.taint is not None:  # type: ignore[union-attr]
                return dispatch.inherit(pending, *operands)
        return pending

    def unary(self, op: str, x: Tensor) -> GPUArray:
        if self._fusable is not None and op in _matmul.ACTIVATIONS:
            fused = self._fuse_activation(op, x)
            if fused is not None:
                return fused
        dispatch = self._dispatch
        fuser = self._fuser
        if fuser is not None:
            n = math.prod(x.shape)
            wtype = dispatch.wtypes.get(x.dtype.name)
            if wtype is not None and n:
                body = fuser.body(("unary", op), wtype)
                if not body.errors:
                    return self._defer(("unary", op), wtype, body.out, (x,), n, op)
        fast = self._fast.get((op, x.dtype.name, _C))
        if fast is not None:
            return dispatch.record_flat(fast[0], fast[1], (x,), math.prod(x.shape), op)
        wtype = dispatch.wtype(x.dtype, op)
        result = dispatch.map(
            ("unary", op, wtype.name),
            f"{op}.{wtype.name}",
            lambda: ew.unary_body(op, wtype),
            (wtype,),
            (x,),
            x.shape,
            op,
        )
        entry = dispatch.cached((("unary", op, wtype.name), _C, False))
        if entry is not None:
            self._fast[(op, x.dtype.name, _C)] = (entry, (wtype,))
        return result

    def binary(self, op: str, a: Tensor | Scalar, b: Tensor | Scalar, out_shape: Shape) -> GPUArray:
        dispatch = self._dispatch
        a_scalar = a.__class__ in _SCALARS
        b_scalar = b.__class__ in _SCALARS
        ref: Any = b if a_scalar else a
        if a_scalar:
            modes: tuple[str, ...] | None = _KC
        elif b_scalar:
            modes = _CK
        else:
            modes = _CC if a.shape == b.shape else None  # type: ignore[union-attr]
        if modes is not None:
            fuser = self._fuser
            if fuser is not None:
                n = math.prod(out_shape)
                wtype_ = dispatch.wtypes.get(ref.dtype.name)
                if wtype_ is not None and n:
                    body = fuser.body(("binary", op), wtype_)
                    if not body.errors:
                        return self._defer(("binary", op), wtype_, body.out, (a, b), n, op)
            fast = self._fast.get((op, ref.dtype.name, modes))
            if fast is not None:
                return dispatch.record_flat(fast[0], fast[1], (a, b), math.prod(out_shape), op)
        wtype = dispatch.wtype(ref.dtype, op)
        key = ("binary", op, wtype.name)
        wtypes = (wtype, wtype)
        result = dispatch.map(
            key,
            f"{op}.{wtype.name}",
            lambda: ew.binary_body(op, wtype),
            wtypes,
            (a, b),
            out_shape,
            op,
        )
        if modes is not None:
            entry = dispatch.cached((key, modes, False))
            if entry is not None:
                self._fast[(op, ref.dtype.name, modes)] = (entry, wtypes)
        return result

    def where(
        self, cond: Tensor, a: Tensor | Scalar, b: Tensor | Scalar, out_shape: Shape
    ) -> GPUArray:
        ref = b if isinstance(a, bool | int | float) else a
        wtype = self._dispatch.wtype(ref.dtype, "where")  # type: ignore[union-attr]
        return self._dispatch.map(
            ("where", wtype.name),
            f"where.{wtype.name}",
            lambda: ew.where_body(wtype),
            (BOOL, wtype, wtype),
            (cond, a, b),
            out_shape,
            "where",
        )

    def clamp(self, x: Tensor, low: Scalar | None, high: Scalar | None) -> GPUArray:
        wtype = self._dispatch.wtype(x.dtype, "clamp")
        has_low, has_high = low is not None, high is not None
        return self._dispatch.map(
            ("clamp", wtype.name, has_low, has_high),
            f"clamp.{wtype.name}",
            lambda: ew.clamp_body(wtype, has_low, has_high),
            (wtype, wtype, wtype),
            (x, low if low is not None else 0, high if high is not None else 0),
            x.shape,
            "clamp",
        )


__all__ = ["ElementwiseOps"]
