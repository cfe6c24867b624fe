"""The WebGPU backend: the op set as WGSL compute kernels through wgpu-py.

Work is lazy: each op records one (or a few) dispatches into the open batch and returns a
handle to a pooled device buffer; nothing runs until data leaves the device (``to_numpy``,
printing, ``item()``, comparisons in Python) or the batch grows large, and then the whole batch
is one command encoder and one submit. Handles are contiguous row-major buffers: ``reshape``
is free, and ``permute``/``broadcast_to``/``slice`` are strided-copy kernels.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from ipfs_accelerate.errors import DeviceLostError, TensorOverflowError, UnsupportedOpError
from ipfs_accelerate.hal._backend import Backend, BackendInfo, Scalar, Shape
from ipfs_accelerate.hal.webgpu._device import Device
from ipfs_accelerate.hal.webgpu._fusion import Fuser
from ipfs_accelerate.hal.webgpu._kernels import _conv, _layout, _matmul, _reduce
from ipfs_accelerate.hal.webgpu._kernels import _elementwise as ew
from ipfs_accelerate.hal.webgpu._kernels._wgsl import (
    BOOL,
    F32,
    F64,
    MAX_RANK,
    WORKGROUP,
    WTYPES,
    WType,
    encode_scalar,
)
from ipfs_accelerate.hal.webgpu._memory import BufferPool, DeviceBuffer, GPUArray, Taint
from ipfs_accelerate.hal.webgpu._pipelines import Kernel, PipelineCache
from ipfs_accelerate.hal.webgpu._profiling import Profiler, ProfileReport
from ipfs_accelerate.hal.webgpu._recorder import ErrorBuilder, Recorder
from ipfs_accelerate.tensor._dtype import DType, as_dtype
from ipfs_accelerate.tensor._tensor import Tensor

_TensorClass = Tensor

KernelEntry = tuple[Kernel, ErrorBuilder, WType]


class _Plan:
    """How a map kernel indexes its operands for one (output shape, operand strides)."""

    __slots__ = ("modes", "rank", "shape", "strides")

    def __init__(self, modes: tuple[str, ...], rank: int, shape: list[int], strides: list[list[int] | None]) -> None:
        self.modes = modes
        self.rank = rank
        self.shape = shape
        self.strides = strides


_SCALARS = (bool, int, float)
_ZERO4 = (0, 0, 0, 0)
_ZERO20 = (0,) * 20
_NO_OFFSETS = (0, 0, 0)
_C, _CC, _CK, _KC = ("c",), ("c", "c"), ("c", "k"), ("k", "c")


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def broadcast_strides(shape: Shape, out_shape: Shape) -> tuple[int, ...]:
    """Element strides reading ``shape`` (contiguous) broadcast to ``out_shape``."""
    lead = len(out_shape) - len(shape)
    own = contiguous_strides(shape)
    return (0,) * lead + tuple(0 if size == 1 else s for size, s in zip(shape, own, strict=True))


def _collapse(shape: Shape, strides: Sequence[Sequence[int]]) -> list[tuple[int, list[int]]]:
    """Merge adjacent axes that are contiguous for every operand and drop size-1 axes."""
    dims: list[tuple[int, list[int]]] = []
    for d, size in enumerate(shape):
        if size == 1:
            continue
        st = [s[d] for s in strides]
        if dims:
            prev_size, prev = dims[-1]
            if all(p == c * size for p, c in zip(prev, st, strict=True)):
                dims[-1] = (prev_size * size, st)
                continue
        dims.append((size, st))
    return dims


def _f32_bits(value: float) -> int:
    return int(struct.unpack("<I", struct.pack("<f", value))[0])


class WebGPUBackend(Backend):
    """WGSL compute kernels on a WebGPU adapter (Vulkan, Metal or D3D12 through wgpu-py).

    ``power_preference`` picks the adapter ("high-performance" or "low-power");
    ``disabled_features`` hides adapter features (to try the dtype errors of a smaller
    adapter); ``tuning_cache`` is the file recording the per-adapter kernel choices
    (default ``~/.cache/ipfs_accelerate/webgpu_tuning.json`` or $IPFS_ACCELERATE_CACHE_DIR).
    """

    name: ClassVar[str] = "webgpu"
    fused: ClassVar[frozenset[str]] = frozenset({"softmax", "layer_norm", "linear", "attention", "clamp"})
    shares_host_memory: ClassVar[bool] = False

    def __init__(
        self,
        power_preference: str | None = None,
        *,
        disabled_features: Sequence[str] = (),
        tuning_cache: str | None = None,
    ) -> None:
        self._dev = Device(power_preference, disabled_features)
        dev = self._dev
        wgpu = dev.wgpu
        self._pipelines = PipelineCache(dev.device, wgpu)
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        recorder_ref: list[Recorder] = []
        self._pool = BufferPool(
            dev.device,
            usage,
            max_cached_bytes=min(1 << 30, max(dev.max_buffer, 1 << 28)),
            on_destroy=lambda buf: recorder_ref[0].bind_groups.forget(buf) if recorder_ref else None,
            max_buffer_bytes=min(dev.max_buffer, dev.max_binding),
        )
        self._recorder = Recorder(dev, self._pool)
        recorder_ref.append(self._recorder)
        self._kernels: dict[tuple[Any, ...], KernelEntry] = {}
        #: lazy fusion of element-wise chains ($IPFS_ACCELERATE_WEBGPU_FUSION=0 turns it off)
        self._fuser: Fuser | None = None if os.environ.get("IPFS_ACCELERATE_WEBGPU_FUSION", "1") == "0" else Fuser(self)
        #: (op, dtype name, operand modes) -> compiled flat kernel of unary/binary ops, and the
        #: type of each operand
        self._fast: dict[tuple[str, str, tuple[str, ...]], tuple[KernelEntry, tuple[WType, ...]]] = {}
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._wtypes: dict[str, WType] = {name: WTYPES[name] for name in dev.dtypes}
        self._dtypes = frozenset(as_dtype(name) for name in dev.dtypes)
        self._scalars: dict[tuple[Any, ...], tuple[int, int, int, int]] = {}
        self._max_groups = dev.max_groups
        self._tuning_cache = tuning_cache
        self._tuner: Any = None
        #: the output of the last product recorded, whose epilogue may still absorb an activation
        self._fusable: weakref.ref[GPUArray] | None = None
        self._fusable_info: tuple[Any, ...] | None = None
        dev.on_lost.append(self._leave_registry)

    def _leave_registry(self) -> None:
        """After a device loss, the registry forgets this instance: the next use of its name
        starts a fresh device, or falls back (with a warning) if none can start."""
        from ipfs_accelerate.hal._registry import forget_instance

        forget_instance(self)

    # ------------------------------------------------------------------ identity

    def info(self) -> BackendInfo:
        dev = self._dev
        from ipfs_accelerate.hal.webgpu._device import REPORTED_LIMITS

        return BackendInfo(
            name=self.name,
            available=dev.lost_reason is None,
            device_name=dev.device_name,
            vendor=dev.vendor,
            adapter_type=dev.adapter_type,
            api=dev.api,
            memory_bytes=None,
            max_buffer_bytes=min(dev.max_buffer, dev.max_binding),
            dtypes=tuple(dev.dtypes),
            features=tuple(sorted(dev.features)),
            limits={k: dev.limits[k] for k in REPORTED_LIMITS if k in dev.limits},
            details={
                "description": dev.description,
                "adapter": dict(dev.adapter_info),
                "matmul_kernel": self._matmul_choice_name(),
            },
            reason=dev.lost_reason,
        )

    @property
    def supported_dtypes(self) -> frozenset[DType]:
        return self._dtypes

    @property
    def device(self) -> Device:
        """The adapter and device (limits, features, loss state)."""
        return self._dev

    def stats(self) -> dict[str, int]:
        """Instrumentation counters: submits, readbacks, dispatches, pipelines compiled, bind
        groups created, buffers created, bytes allocated/in use/cached."""
        rec, pool = self._recorder, self._pool
        return {
            "submits": rec.submits,
            "readbacks": rec.readbacks,
            "dispatches": rec.dispatches + rec.pending,
            "pending": rec.pending,
            "pipelines": len(self._pipelines),
            "pipeline_compiles": self._pipelines.compiles,
            "bind_groups": len(rec.bind_groups),
            "bind_group_creations": rec.bind_groups.creations,
            "buffers_created": pool.created,
            "allocated_bytes": pool.allocated_bytes,
            "in_use_bytes": pool.in_use_bytes,
            "cached_bytes": pool.cached_bytes,
        }

    def memory_in_use(self) -> int | None:
        return self._pool.in_use_bytes

    def synchronize(self) -> None:
        """Submit the open batch and wait for the device (raises pending kernel errors)."""
        self._recorder.read(None, 0)

    def trim(self) -> int:
        """Give cached free buffers back to the driver; returns the bytes freed."""
        with self._recorder.lock:
            self._recorder.submit()
            return self._pool.trim()

    @contextlib.contextmanager
    def profile(self) -> Iterator[ProfileReport]:
        """Time every kernel on the GPU (timestamp queries) inside the ``with`` block::

            with backend.profile() as report:
                model(x).numpy()
            print(report.table())
        """
        rec = self._recorder
        rec.submit()
        profiler = Profiler(self._dev)
        rec.profiler = profiler
        try:
            yield profiler.report
            rec.submit()
        finally:
            rec.profiler = None

    # ------------------------------------------------------------------ plumbing

    def _wt(self, dtype: DType, op: str) -> WType:
        found = self._wtypes.get(dtype.name)
        if found is None:
            return self._dev.wtype(dtype.name, op)
        return found

    def _alloc(self, count: int, wtype: WType, op: str) -> GPUArray:
        dev = self._dev
        if dev.lost_reason is not None:
            dev.check_alive()
        nbytes = count * wtype.itemsize
        if nbytes > dev.max_binding:
            dev.check_binding(nbytes, op)
        return GPUArray(self._pool.acquire(nbytes), nbytes, self._pool)

    def _kernel(self, key: tuple[Any, ...], make: Callable[[], tuple[str, str, tuple[int, int, bool], ErrorBuilder, WType]]) -> KernelEntry:
        entry = self._kernels.get(key)
        if entry is None:
            name, source, layout_key, errors, out = make()
            try:
                kernel = self._pipelines.get(name, source, layout_key)
            except Exception as exc:
                failure = self._dev.failure(exc, f"compiling kernel {name!r}")
                if isinstance(failure, DeviceLostError):
                    raise failure from exc
                # an adapter whose compiler rejects a kernel: the op runs on the CPU instead
                raise UnsupportedOpError(f"webgpu: kernel {name!r} failed to compile on {self._dev.label}: {exc}") from exc
            entry = (kernel, errors, out)
            self._kernels[key] = entry
        return entry

    def _groups(self, count: int, per_group: int = WORKGROUP) -> tuple[int, int, int]:
        groups = -(-count // per_group)
        if groups <= self._max_groups:
            return (groups, 1, 1)
        width = self._max_groups
        return (width, -(-groups // width), 1)

    def _scalar_words(self, value: Scalar, wtype: WType, *, rounded: bool = True) -> tuple[int, int, int, int]:
        """Parameter words of a scalar of ``wtype`` (rounded to it as numpy would; with
        ``rounded=False`` a float16 kernel's parameter keeps float32 precision)."""
        key = (type(value), value, wtype.name, rounded)
        words = self._scalars.get(key)
        if words is None:
            if wtype.compute == "f32":
                fmt = "<e" if wtype.storage == "f16" and rounded else "<f"
                rounded = struct.unpack(fmt, struct.pack(fmt, float(value)))[0]
                words = (_f32_bits(rounded), 0, 0, 0)
            else:
                words = encode_scalar(value, wtype)
            if len(self._scalars) < 4096:
                self._scalars[key] = words
        return words

    def _record(
        self,
        entry: KernelEntry,
        buffers: tuple[DeviceBuffer, ...],
        out: GPUArray,
        words: list[int],
        groups: tuple[int, int, int],
    ) -> None:
        kernel, errors, _ = entry
        rec = self._recorder
        with rec.lock:
            if errors:
                slot, uid = rec.error_slot(errors)
                words[3] = slot
                rec.poison_target(slot, out)
                buffers = (*buffers, rec.errors)
                out.taint = Taint(uid, (out.taint,) if out.taint is not None else ())
            rec.dispatch(kernel, buffers, words, groups)

    def _inherit(self, out: GPUArray, *inputs: Any) -> GPUArray:
        """``out`` depends on the values of ``inputs`` (tensors, handles, scalars, None): it
        carries their taints, minus the ones already checked clean."""
        parents: list[Taint] = []
        rec = self._recorder
        for item in inputs:
            handle = item._data if item.__class__ is _TensorClass else item
            taint = getattr(handle, "taint", None)
            if taint is not None and (taint.latest >= rec.watermark or taint.latest >= rec.oldest_failure):
                parents.append(taint)
        if parents:
            own = out.taint
            if own is None and len(parents) == 1:
                out.taint = parents[0]
            else:
                out.taint = Taint(-1, (*parents, *((own,) if own is not None else ())))
        return out

    def _plan(self, out_shape: Shape, strides: tuple[tuple[int, ...] | None, ...]) -> _Plan:
        key = (out_shape, strides)
        plan = self._plans.get(key)
        if plan is None:
            tensor_strides = [s for s in strides if s is not None]
            dims = _collapse(out_shape, tensor_strides)
            if len(dims) > MAX_RANK:
                raise UnsupportedOpError(
                    f"webgpu: an element-wise op over {len(dims)} non-mergeable axes exceeds the kernels' "
                    f"{MAX_RANK}; reshape the operands or use device 'cpu'"
                )
            shape = [size for size, _ in dims]
            own = contiguous_strides(shape)
            modes: list[str] = []
            per_operand: list[list[int] | None] = []
            t = 0
            for s in strides:
                if s is None:
                    modes.append("k")
                    per_operand.append(None)
                    continue
                st = [d[1][t] for d in dims]
                t += 1
                if tuple(st) == own:
                    modes.append("c")
                    per_operand.append(None)
                else:
                    modes.append("s")
                    per_operand.append(st)
            plan = _Plan(tuple(modes), len(dims), shape, per_operand)
            if len(self._plans) < 8192:
                self._plans[key] = plan
        return plan

    def _map(
        self,
        key: tuple[Any, ...],
        name: str,
        body: Callable[[], ew.Body],
        wtypes: Sequence[WType],
        operands: Sequence[Tensor | Scalar],
        out_shape: Shape,
        op: str,
        *,
        strides: tuple[tuple[int, ...] | None, ...] | None = None,
        offsets: Sequence[int] = (0, 0, 0),
        out: GPUArray | None = None,
        out_strides: tuple[int, ...] | None = None,
        out_offset: int = 0,
    ) -> GPUArray:
        """Record a map kernel over ``operands`` (tensors broadcast to ``out_shape`` unless
        ``strides`` says how each is read; Python scalars go in the parameter block)."""
        n = math.prod(out_shape)
        plan: _Plan | None = None
        if strides is None and out_strides is None:
            simple = True
            flat: list[str] = []
            for o in operands:
                if type(o) in _SCALARS:
                    flat.append("k")
                elif o.shape == out_shape:  # type: ignore[union-attr]
                    flat.append("c")
                else:
                    simple = False
                    break
            if simple and out is None and offsets == _NO_OFFSETS:
                return self._flat_map(key, name, body, wtypes, operands, tuple(flat), n, op)
            if simple:
                modes = tuple(flat)
            else:
                strides = tuple(
                    None if isinstance(o, bool | int | float) else broadcast_strides(o.shape, out_shape) for o in operands
                )
        if strides is not None or out_strides is not None:
            if strides is None:
                strides = tuple(
                    None if isinstance(o, bool | int | float) else contiguous_strides(o.shape) for o in operands
                )
            all_strides = strides if out_strides is None else (*strides, out_strides)
            plan = self._plan(out_shape, all_strides)
            modes = plan.modes[: len(operands)]
            if out_strides is not None and plan.modes[-1] == "c" and not any(m == "s" for m in modes):
                out_strides = None  # the output block is contiguous after all
        out_strided = out_strides is not None
        full_key = (key, modes, out_strided)
        entry = self._kernels.get(full_key)
        if entry is None:

            def make() -> tuple[str, str, tuple[int, int, bool], ErrorBuilder, WType]:
                b = body()
                source, layout = ew.map_source(name, list(zip(wtypes, modes, strict=True)), b, out_strided=out_strided)
                return f"{name}.{''.join(modes)}{'o' if out_strided else ''}", source, layout, b.errors, b.out

            entry = self._kernel(full_key, make)
        if out is None:
            out = self._alloc(n, entry[2], op)
        if n == 0:
            return out
        words = [n, 0, 0, 0]
        buffers: list[DeviceBuffer] = []
        for k, o in enumerate(operands):
            if modes[k] == "k":
                words.extend(self._scalar_words(o, wtypes[k]))  # type: ignore[arg-type]
            else:
                words.extend((0, 0, 0, 0))
                buffers.append(o._data.buf)  # type: ignore[union-attr]
        while len(words) < 16:
            words.extend((0, 0, 0, 0))
        words.extend(off & 0xFFFFFFFF for off in offsets)
        words.append(out_offset & 0xFFFFFFFF)
        if plan is not None and (plan.rank and ("s" in modes or out_strided)):
            words[1] = plan.rank
            words.extend(plan.shape)
            words.extend([0] * (MAX_RANK - plan.rank))
            for k in range(3):
                st = plan.strides[k] if k < len(plan.strides) and k < len(operands) else None
                if st is None:
                    words.extend([0] * MAX_RANK)
                else:
                    words.extend(s & 0xFFFFFFFF for s in st)
                    words.extend([0] * (MAX_RANK - len(st)))
            if out_strided:
                st = plan.strides[-1] or list(contiguous_strides(plan.shape))
                words.extend(s & 0xFFFFFFFF for s in st)
                words.extend([0] * (MAX_RANK - len(st)))
        buffers.append(out.buf)
        strided_kernel = "s" in modes or out_strided
        self._record(entry, tuple(buffers), out, words, self._groups(-(-n // ew.STRIDED_ELEMS) if strided_kernel else n))
        return self._inherit(out, *operands)

    def _flat_map(
        self,
        key: tuple[Any, ...],
        name: str,
        body: Callable[[], ew.Body],
        wtypes: Sequence[WType],
        operands: Sequence[Tensor | Scalar],
        modes: tuple[str, ...],
        n: int,
        op: str,
    ) -> GPUArray:
        """The common case of :meth:`_map` (operands of the output's shape, or scalars), kept
        lean: it is most of the per-op cost of small element-wise ops."""
        full_key = (key, modes, False)
        entry = self._kernels.get(full_key)
        if entry is None:
            return self._map(key, name, body, wtypes, operands, (n,) if n else (0,), op, strides=tuple(
                None if m == "k" else (1,) for m in modes
            ))  # fmt: skip
        if n == 0:
            return self._alloc(n, entry[2], op)
        return self._record_flat(entry, wtypes, operands, n, op)

    def _dispatch_flat(
        self, entry: KernelEntry, inputs: Sequence[DeviceBuffer], out: GPUArray, words: list[int], n: int
    ) -> None:
        """Record a flat element-wise kernel over ``n`` elements, one invocation each (a 1-D
        grid, 2-D beyond the adapter's per-dimension limit), binding ``inputs`` then ``out``;
        ``words`` is its parameter block."""
        groups = -(-n // WORKGROUP)
        grid = (groups, 1, 1) if groups <= self._max_groups else self._groups(n)
        self._record(entry, (*inputs, out.buf), out, words, grid)

    # ------------------------------------------------------------------ host transfers

    def from_numpy(self, array: np.ndarray[Any, Any]) -> GPUArray:
        from ipfs_accelerate.tensor._dtype import from_numpy_dtype

        dtype = from_numpy_dtype(array.dtype, context="webgpu: from_numpy")
        wtype = self._wt(dtype, "from_numpy")
        host = np.ascontiguousarray(array, dtype=wtype.device_numpy)
        nbytes = host.nbytes
        dev = self._dev
        dev.check_alive()
        dev.check_binding(nbytes, "from_numpy")
        handle = GPUArray(self._pool.acquire(nbytes, upload=True), nbytes, self._pool)
        if nbytes:
            data = host.reshape(-1).view(np.uint8)
            if nbytes % 4:
                data = np.concatenate([data, np.zeros(4 - nbytes % 4, dtype=np.uint8)])
            try:
                dev.queue.write_buffer(handle.buf.buffer, 0, data)
            except Exception as exc:
                raise dev.failure(exc, "uploading a tensor") from exc
        return handle

    def to_numpy(self, x: Tensor) -> np.ndarray[Any, Any]:
        handle: GPUArray = x._data
        if handle.error is not None:
            raise handle.error
        wtype = self._wt(x.dtype, "to_numpy")
        count = x.size
        if count == 0:
            return np.empty(x.shape, dtype=x.dtype.numpy)
        rec = self._recorder
        raw = rec.read(handle.buf, count * wtype.itemsize)
        if handle.error is not None:  # pragma: no cover - read() raises the error first
            raise handle.error
        if rec.failures and handle.taint is not None:
            # computed from the output of a kernel that failed: the values are not numpy's
            failed = handle.taint.find(rec.failures)
            if failed is not None:
                raise failed
        array = np.frombuffer(raw, dtype=wtype.device_numpy, count=count)
        if wtype.device_numpy != x.dtype.numpy:
            array = array.astype(x.dtype.numpy)
        return array.reshape(x.shape)

    # ------------------------------------------------------------------ creation, copies

    def full(self, shape: Shape, value: Scalar, dtype: DType) -> GPUArray:
        wtype = self._wt(dtype, "full")
        return self._map(("fill", wtype.name), f"fill.{wtype.name}", lambda: ew.identity_body(wtype), (wtype,), (value,), shape, "full")

    def arange(self, start: Scalar, step: Scalar, size: int, dtype: DType) -> GPUArray:
        out = self._wt(dtype, "arange")
        integral = out.is_int and isinstance(start, int) and isinstance(step, int)
        if integral or out.kind == "b":
            compute = out
        else:
            compute = F64 if "float64" in self._wtypes else F32
        return self._map(
            ("arange", compute.name, out.name),
            f"arange.{out.name}",
            lambda: ew.arange_body(compute, out),
            (compute, compute),
            (start, step),
            (size,),
            "arange",
        )

    def copy(self, x: Tensor) -> GPUArray:
        wtype = self._wt(x.dtype, "copy")
        return self._map(("copy", wtype.name), f"copy.{wtype.name}", lambda: ew.identity_body(wtype), (wtype,), (x,), x.shape, "copy")

    def cast(self, x: Tensor, dtype: DType) -> GPUArray:
        src = self._wt(x.dtype, "astype")
        dst = self._wt(dtype, "astype")
        return self._map(
            ("cast", src.name, dst.name), f"cast.{src.name}.{dst.name}", lambda: ew.cast_body(src, dst), (src,), (x,), x.shape, "astype"
        )

    # ------------------------------------------------------------------ element-wise

    def _defer(
        self, key: tuple[str, str], wtype: WType, out: WType, operands: tuple[Tensor | Scalar, ...], n: int, op: str
    ) -> GPUArray:
        """A pending handle: an element-wise op that cannot fail waits to run fused with the
        element-wise ops that follow it (see _fusion)."""
        dev = self._dev
        if dev.lost_reason is not None:
            dev.check_alive()
        nbytes = n * out.itemsize
        if nbytes > dev.max_binding:
            dev.check_binding(nbytes, op)
        scalar_words = [
            self._scalar_words(o, wtype) if o.__class__ in _SCALARS else None  # type: ignore[arg-type]
            for o in operands
        ]
        pending = self._fuser.defer(key, wtype, out, operands, scalar_words, n)  # type: ignore[union-attr]
        for o in operands:
            if o.__class__ is _TensorClass and o._data.taint is not None:  # type: ignore[union-attr]
                return self._inherit(pending, *operands)
        return pending

    def _record_flat(
        self, entry: KernelEntry, wtypes: Sequence[WType], operands: Sequence[Tensor | Scalar], n: int, op: str
    ) -> GPUArray:
        """Record a compiled contiguous map kernel (operands of the output's shape, or Python
        scalars of ``wtypes``): the per-op path of small element-wise ops."""
        out = self._alloc(n, entry[2], op)
        if n:
            words = [n, 0, 0, 0]
            buffers = []
            for k, o in enumerate(operands):  # (zip() costs more on this hot path)
                if o.__class__ in _SCALARS:
                    words.extend(self._scalar_words(o, wtypes[k]))  # type: ignore[arg-type]
                else:
                    words.extend(_ZERO4)
                    buffers.append(o._data.buf)  # type: ignore[union-attr]
            words.extend(_ZERO20[len(words) :])
            self._dispatch_flat(entry, buffers, out, words, n)
        for o in operands:
            if o.__class__ is _TensorClass and o._data.taint is not None:  # type: ignore[union-attr]
                return self._inherit(out, *operands)
        return out

    def unary(self, op: str, x: Tensor) -> GPUArray:
        if self._fusable is not None and op in _matmul.ACTIVATIONS:
            fused = self._fuse_activation(op, x)
            if fused is not None:
                return fused
        fuser = self._fuser
        if fuser is not None:
            n = math.prod(x.shape)
            wtype = self._wtypes.get(x.dtype.name)
            if wtype is not None and n:
                body = fuser.body(("unary", op), wtype)
                if not body.errors:
                    return self._defer(("unary", op), wtype, body.out, (x,), n, op)
        fast = self._fast.get((op, x.dtype.name, _C))
        if fast is not None:
            return self._record_flat(fast[0], fast[1], (x,), math.prod(x.shape), op)
        wtype = self._wt(x.dtype, op)
        result = self._map(("unary", op, wtype.name), f"{op}.{wtype.name}", lambda: ew.unary_body(op, wtype), (wtype,), (x,), x.shape, op)
        entry = self._kernels.get((("unary", op, wtype.name), _C, False))
        if entry is not None:
            self._fast[(op, x.dtype.name, _C)] = (entry, (wtype,))
        return result

    def binary(self, op: str, a: Tensor | Scalar, b: Tensor | Scalar, out_shape: Shape) -> GPUArray:
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
                wtype_ = self._wtypes.get(ref.dtype.name)
                if wtype_ is not None and n:
                    body = fuser.body(("binary", op), wtype_)
                    if not body.errors:
                        return self._defer(("binary", op), wtype_, body.out, (a, b), n, op)
            fast = self._fast.get((op, ref.dtype.name, modes))
            if fast is not None:
                return self._record_flat(fast[0], fast[1], (a, b), math.prod(out_shape), op)
        wtype = self._wt(ref.dtype, op)
        key = ("binary", op, wtype.name)
        wtypes = (wtype, wtype)
        result = self._map(key, f"{op}.{wtype.name}", lambda: ew.binary_body(op, wtype), wtypes, (a, b), out_shape, op)
        if modes is not None:
            entry = self._kernels.get((key, modes, False))
            if entry is not None:
                self._fast[(op, ref.dtype.name, modes)] = (entry, wtypes)
        return result

    def where(self, cond: Tensor, a: Tensor | Scalar, b: Tensor | Scalar, out_shape: Shape) -> GPUArray:
        ref = b if isinstance(a, bool | int | float) else a
        wtype = self._wt(ref.dtype, "where")  # type: ignore[union-attr]
        return self._map(
            ("where", wtype.name), f"where.{wtype.name}", lambda: ew.where_body(wtype), (BOOL, wtype, wtype), (cond, a, b), out_shape, "where"
        )

    def clamp(self, x: Tensor, low: Scalar | None, high: Scalar | None) -> GPUArray:
        wtype = self._wt(x.dtype, "clamp")
        has_low, has_high = low is not None, high is not None
        return self._map(
            ("clamp", wtype.name, has_low, has_high),
            f"clamp.{wtype.name}",
            lambda: ew.clamp_body(wtype, has_low, has_high),
            (wtype, wtype, wtype),
            (x, low if low is not None else 0, high if high is not None else 0),
            x.shape,
            "clamp",
        )

    # ------------------------------------------------------------------ shape, data movement

    def reshape(self, x: Tensor, shape: Shape) -> GPUArray:
        handle: GPUArray = x._data
        return handle

    def _strided_copy(self, x: Tensor, out_shape: Shape, strides: tuple[int, ...], offset: int, op: str) -> GPUArray:
        wtype = self._wt(x.dtype, op)
        return self._map(
            ("copy", wtype.name), f"copy.{wtype.name}", lambda: ew.identity_body(wtype), (wtype,), (x,), out_shape, op,
            strides=(strides,), offsets=(offset, 0, 0),
        )  # fmt: skip

    def permute(self, x: Tensor, axes: tuple[int, ...]) -> GPUArray:
        own = contiguous_strides(x.shape)
        return self._strided_copy(x, tuple(x.shape[a] for a in axes), tuple(own[a] for a in axes), 0, "permute")

    def broadcast_to(self, x: Tensor, shape: Shape) -> GPUArray:
        return self._strided_copy(x, shape, broadcast_strides(x.shape, shape), 0, "broadcast_to")

    def slice(self, x: Tensor, starts: Shape, steps: Shape, sizes: Shape) -> GPUArray:
        own = contiguous_strides(x.shape)
        offset = sum(s * st for s, st in zip(starts, own, strict=True))
        strides = tuple(st * step for st, step in zip(own, steps, strict=True))
        return self._strided_copy(x, sizes, strides, offset, "slice")

    def concat(self, xs: Sequence[Tensor], axis: int) -> GPUArray:
        first = xs[0]
        wtype = self._wt(first.dtype, "concat")
        shape = list(first.shape)
        shape[axis] = sum(t.shape[axis] for t in xs)
        out_shape = tuple(shape)
        out = self._alloc(math.prod(out_shape), wtype, "concat")
        out_strides = contiguous_strides(out_shape)
        position = 0
        for t in xs:
            if t.size:
                self._map(
                    ("copy", wtype.name), f"copy.{wtype.name}", lambda: ew.identity_body(wtype), (wtype,), (t,), t.shape,
                    "concat", strides=(contiguous_strides(t.shape),), out=out, out_strides=out_strides,
                    out_offset=position * out_strides[axis],
                )  # fmt: skip
            position += t.shape[axis]
        return out

    def gather(self, x: Tensor, indices: Tensor, axis: int) -> GPUArray:
        xt = self._wt(x.dtype, "gather")
        it = self._wt(indices.dtype, "gather")
        n = x.shape[axis]
        inner = math.prod(x.shape[axis + 1 :])
        count = indices.size
        out_count = math.prod(x.shape[:axis]) * count * inner
        key = ("gather", xt.name, it.name)
        entry = self._kernels.get(key)
        if entry is None:

            def make() -> tuple[str, str, tuple[int, int, bool], ErrorBuilder, WType]:
                source, layout = _layout.gather_source(xt, it)
                return f"gather.{xt.name}.{it.name}", source, layout, (), xt

            entry = self._kernel(key, make)
        out = self._alloc(out_count, xt, "gather")
        if out_count == 0:
            return out
        errors = (ew.index_error("gather", axis, n, it),)
        words = [out_count, 0, 0, 0, count, n, inner]
        kernel = entry[0]
        rec = self._recorder
        with rec.lock:
            slot, uid = rec.error_slot(errors)
            words[3] = slot
            rec.poison_target(slot, out)
            out.taint = Taint(uid, ())
            rec.dispatch(kernel, (x._data.buf, indices._data.buf, out.buf, rec.errors), words, self._groups(out_count))
        return self._inherit(out, x, indices)

    def pad(self, x: Tensor, pads: tuple[tuple[int, int], ...], mode: str, value: Scalar) -> GPUArray:
        wtype = self._wt(x.dtype, "pad")
        out_shape = tuple(d + b + a for d, (b, a) in zip(x.shape, pads, strict=True))
        count = math.prod(out_shape)
        key = ("pad", wtype.name, mode)
        entry = self._kernels.get(key)
        if entry is None:

            def make() -> tuple[str, str, tuple[int, int, bool], ErrorBuilder, WType]:
                source, layout = _layout.pad_source(wtype, mode)
                return f"pad.{mode}.{wtype.name}", source, layout, (), wtype

            entry = self._kernel(key, make)
        out = self._alloc(count, wtype, "pad")
        if count == 0:
            return out
        rank = x.ndim
        if rank > MAX_RANK:
            raise UnsupportedOpError(f"webgpu: pad of a {rank}-d tensor exceeds the kernel's {MAX_RANK} axes")
        words = [count, rank, 0, 0, *self._scalar_words(value, wtype)]
        words.extend([0] * (20 - len(words)))
        words.extend(out_shape)
        words.extend([0] * (MAX_RANK - rank))
        words.extend(x.shape)
        words.extend([0] * (MAX_RANK - rank))
        words.extend(b for b, _ in pads)
        words.extend([0] * (MAX_RANK - rank))
        self._record(entry, (x._data.buf, out.buf), out, words, self._groups(count))
        return self._inherit(out, x)

    # ------------------------------------------------------------------ reductions

    def _blocks(self, x: Tensor, axes: tuple[int, ...]) -> tuple[Tensor, int, int, int]:
        """``x`` as (outer, R, inner) with the reduced ``axes`` as the middle block (a permuted
        copy when they are not adjacent)."""
        shape = x.shape
        first, last = axes[0], axes[-1]
        if axes == tuple(range(first, last + 1)):
            return x, math.prod(shape[:first]), math.prod(shape[first : last + 1]), math.prod(shape[last + 1 :])
        from ipfs_accelerate.tensor._tensor import Tensor

        kept = [d for d in range(len(shape)) if d not in axes]
        order = (*kept, *axes)
        moved_shape = tuple(shape[d] for d in order)
        moved = Tensor(self.permute(x, order), moved_shape, x.dtype, self)
        return moved, math.prod(shape[d] for d in kept), math.prod(shape[d] for d in axes), 1

    def _row_shape(self, rows: int, length: int) -> str:
        """"group" (a workgroup per row) or "thread" (an invocation per row). On a CPU adapter
        invocations are SIMD lanes and workgroup barriers are costly: rows get a workgroup
        only when there are too few rows to keep the cores busy."""
        if self._dev.adapter_type == "cpu":
            return "group" if rows < 64 and length >= 512 else "thread"
        return "group" if length >= 256 and rows <= 16384 else "thread"

    def _row_groups(self, rows: int, shape: str) -> tuple[int, int, int]:
        if shape == "thread":
            return self._groups(rows, _reduce.GROUP)
        width = min(rows, self._max_groups)
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
        src = self._wt(x.dtype, op)
        out_wt = self._wt(out_dtype, op)
        block, outer, length, inner = self._blocks(x, axes)
        rows = outer * inner
        shape = self._row_shape(rows, length)
        key = ("reduce", op, src.name, out_wt.name, shape)
        entry = self._kernels.get(key)
        if entry is None:

            def make() -> tuple[str, str, tuple[int, int, bool], ErrorBuilder, WType]:
                if op == "var":
                    source, layout = _reduce.var_source(src, out_wt, shape)
                else:
                    source, layout = _reduce.reduce_source(op, src, out_wt, shape)
                errors: ErrorBuilder = ()
                if layout[2]:
                    message = f"{op}: integer result overflows int64; cast to float64 first"
                    errors = (lambda w: TensorOverflowError(message),)
                return f"reduce.{op}.{src.name}.{shape}", source, layout, errors, out_wt

            entry = self._kernel(key, make)
        out = self._alloc(rows, out_wt, op)
        if rows == 0:
            return out
        divisor: float = float(length) if op != "var" else max(length - correction, 0.0)
        words = [rows, 0, 0, 0, length, inner, 0, 0, *self._scalar_words(divisor, out_wt, rounded=False)]
        self._record(entry, (block._data.buf, out.buf), out, words, self._row_groups(rows, shape))
        return self._inherit(out, block)

    def arg_reduce(self, op: str, x: Tensor, axis: int, keepdims: bool) -> GPUArray:
        src = self._wt(x.dtype, op)
        out_wt = self._wt(as_dtype("int64"), op)
        shape_ = x.shape
        outer, length, inner = math.prod(shape_[:axis]), shape_[axis], math.prod(shape_[axis + 1 :])
        rows = outer * inner
        shape = self._row_shape(rows, length)
        key = ("reduce", op, src.name, out_wt.name, shape)
        entry = self._kernels.get(key)
        if entry is None:

            def make() -> tuple[str, str, tuple[int, int, bool], ErrorBuilder, WType]:
                source, layout = _reduce.reduce_source(op, src, out_wt, shape)
                return f"reduce.{op}.{src.name}.{shape}", source, layout, (), out_wt

            entry = self._kernel(key, make)
        out = self._alloc(rows, out_wt, op)
        if rows:
            words = [rows, 0, 0, 0, length, inner]
            self._record(entry, (x._data.buf, out.buf), out, words, self._row_groups(rows, shape))
        return self._inherit(out, x)

    # ------------------------------------------------------------------ fused row ops

    def softmax(self, x: Tensor, axis: int, log: bool) -> GPUArray:
        wtype = self._wt(x.dtype, "softmax")
        shape_ = x.shape
        outer, length, inner = math.prod(shape_[:axis]), shape_[axis], math.prod(shape_[axis + 1 :])
        rows = outer * inner
        shape = self._row_shape(rows, length)
        key = ("softmax", wtype.name, log, shape)
        entry = self._kernels.get(key)
        if entry is None:

            def make() -> tuple[str, str, tuple[int, int, bool], ErrorBuilder, WType]:
                source, layout = _reduce.softmax_source(wtype, log, shape)
                return f"{'log_' if log else ''}softmax.{wtype.name}.{shape}", source, layout, (), wtype

            entry = self._kernel(key, make)
        out = self._alloc(x.size, wtype, "softmax")
        if rows and length:
            self._record(entry, (x._data.buf, out.buf), out, [rows, 0, 0, 0, length, inner], self._row_groups(rows, shape))
        return self._inherit(out, x)

    def layer_norm(
        self, x: Tensor, weight: Tensor | None, bias: Tensor | None, num_axes: int, eps: float
    ) -> GPUArray:
        wtype = self._wt(x.dtype, "layer_norm")
        length = math.prod(x.shape[x.ndim - num_axes :])
        rows = math.prod(x.shape[: x.ndim - num_axes])
        shape = self._row_shape(rows, length)
        has_w, has_b = weight is not None, bias is not None
        key = ("layer_norm", wtype.name, has_w, has_b, shape)
        entry = self._kernels.get(key)
        if entry is None:

            def make() -> tuple[str, str, tuple[int, int, bool], ErrorBuilder, WType]:
                source, layout = _reduce.layer_norm_source(wtype, has_w, has_b, shape)
                return f"layer_norm.{wtype.name}.{shape}", source, layout, (), wtype

            entry = self._kernel(key, make)
        out = self._alloc(x.size, wtype, "layer_norm")
        if rows and length:
            buffers = [x._data.buf]
            if weight is not None:
                buffers.append(weight._data.buf)
            if bias is not None:
                buffers.append(bias._data.buf)
            buffers.append(out.buf)
            words = [rows, 0, 0, 0, length, 0, 0, 0, *self._scalar_words(float(eps), wtype)]
            self._record(entry, tuple(buffers), out, words, self._row_groups(rows, shape))
        return self._inherit(out, x, weight, bias)

    # ------------------------------------------------------------------ matrix products

    def _matmul_entry(
        self,
        variant: str,
        wtype: WType,
        trans_b: bool,
        bias: bool,
        act: str | None,
        dual: bool,
        block: tuple[int, int],
        workgroup: tuple[int, int],
    ) -> KernelEntry:
        key = ("matmul", variant, wtype.name, trans_b, bias, act, dual, block, workgroup)
        entry = self._kernels.get(key)
        if entry is None:

            def make() -> tuple[str, str, tuple[int, int, bool], ErrorBuilder, WType]:
                source, layout = _matmul.matmul_source(
                    variant, wtype, trans_b=trans_b, bias=bias, act=act, dual=dual, workgroup=workgroup, block=block
                )
                from ipfs_accelerate.hal.webgpu._tuning import label

                name = f"matmul.{label(variant, block, workgroup)}.{'nt' if trans_b else 'nn'}.{wtype.name}"
                name += ("+bias" if bias else "") + (f"+{act}" if act else "")
                return name, source, layout, (), wtype

            entry = self._kernel(key, make)
        return entry

    def _matmul_tuner(self) -> Any:
        if self._tuner is None:
            from ipfs_accelerate.hal.webgpu._tuning import Tuner

            self._tuner = Tuner(self, self._tuning_cache)
        return self._tuner

    def _matmul_choice_name(self) -> str:
        tuner = self._matmul_tuner()
        choice = tuner._choice or tuner.default()
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

    def _matmul_words(
        self, m: int, n: int, k: int, batch: Shape, a_strides: Sequence[int], b_strides: Sequence[int]
    ) -> tuple[list[int], int]:
        dims = _collapse(batch, [a_strides, b_strides])
        if len(dims) > MAX_RANK:
            raise UnsupportedOpError(f"webgpu: matmul with {len(dims)} non-mergeable batch axes exceeds {MAX_RANK}")
        count = math.prod(batch)
        words = [m, n, k, 0, count, len(dims), 0, 0]
        words.extend([0] * 8)
        for column in (0, 1, 2):
            values = [d[0] for d in dims] if column == 0 else [d[1][column - 1] for d in dims]
            words.extend(values)
            words.extend([0] * (MAX_RANK - len(values)))
        return words, count

    def _record_matmul(
        self,
        entry: KernelEntry,
        variant: str,
        block: tuple[int, int],
        workgroup: tuple[int, int],
        buffers: tuple[DeviceBuffer, ...],
        words: list[int],
        m: int,
        n: int,
        count: int,
        recorder: Recorder | None = None,
    ) -> None:
        tx, ty = _matmul.tile_of(variant, workgroup, block)
        gx, gy = -(-n // tx), -(-m // ty)
        if gx > self._max_groups or gy > self._max_groups:
            raise UnsupportedOpError(
                f"webgpu: matmul of {m}x{n} outputs needs {gx}x{gy} workgroups, beyond adapter "
                f"{self._dev.label}'s {self._max_groups} per dimension"
            )
        rec = recorder or self._recorder
        with rec.lock:
            for base in range(0, count, self._max_groups):
                part = list(words)
                part[_matmul.MM_BASE] = base
                rec.dispatch(entry[0], buffers, part, (gx, gy, min(self._max_groups, count - base)))

    def matmul_recording(
        self, variant: str, block: tuple[int, int], workgroup: tuple[int, int], m: int, n: int, k: int
    ) -> Callable[..., None]:
        """A function recording one float32 (m, k) @ (k, n) product with a given kernel into a
        given recorder (the tuner times candidates with it)."""
        entry = self._matmul_entry(variant, F32, False, False, None, False, block, workgroup)
        words, count = self._matmul_words(m, n, k, (), [], [])

        def record(recorder: Recorder, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer) -> None:
            self._record_matmul(entry, variant, block, workgroup, (a, b, out), words, m, n, count, recorder)

        return record

    @contextlib.contextmanager
    def private_recorder(self) -> Iterator[tuple[Recorder, Callable[[np.ndarray[Any, Any]], DeviceBuffer], Callable[[int], DeviceBuffer]]]:
        """A recorder and buffers apart from the open batch (for measurements)."""
        dev = self._dev
        wgpu = dev.wgpu
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        created: list[DeviceBuffer] = []
        pool = BufferPool(dev.device, usage, 0, lambda buf: None, self._pool_max())
        recorder = Recorder(dev, pool, ring_bytes=1 << 16, error_slots=4)

        def alloc(nbytes: int) -> DeviceBuffer:
            buf = DeviceBuffer(dev.device.create_buffer(size=max(nbytes, 16), usage=usage), max(nbytes, 16))
            created.append(buf)
            return buf

        def upload(array: np.ndarray[Any, Any]) -> DeviceBuffer:
            buf = alloc(array.nbytes)
            dev.queue.write_buffer(buf.buffer, 0, np.ascontiguousarray(array))
            return buf

        try:
            yield recorder, upload, alloc
        finally:
            for buf in created:
                with contextlib.suppress(Exception):
                    buf.buffer.destroy()

    def _pool_max(self) -> int:
        return min(self._dev.max_buffer, self._dev.max_binding)

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
        wtype = self._wt(a.dtype, op)
        out = self._alloc(math.prod(batch) * m * n, wtype, op)
        if out.nbytes == 0:
            return out
        a_batch = a.shape[:-2]
        b_batch = b.shape[:-2]
        a_strides = [s * m * k for s in broadcast_strides(a_batch, batch)] if batch else []
        b_strides = [s * k * n for s in broadcast_strides(b_batch, batch)] if batch else []
        variant, block, workgroup = self._choose_variant(wtype, m, n, k, trans_b)
        entry = self._matmul_entry(variant, wtype, trans_b, bias is not None, None, False, block, workgroup)
        words, count = self._matmul_words(m, n, k, batch, a_strides, b_strides)
        buffers = [a._data.buf, b._data.buf]
        if bias is not None:
            buffers.append(bias._data.buf)
        buffers.append(out.buf)
        self._record_matmul(entry, variant, block, workgroup, tuple(buffers), words, m, n, count)
        self._fusable = weakref.ref(out)
        self._fusable_info = (variant, wtype, trans_b, bias is not None, block, workgroup, entry[0], tuple(buffers))
        return self._inherit(out, a, b, bias)

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

    def _fuse_activation(self, op: str, x: Tensor) -> GPUArray | None:
        """Fold ``op`` into the epilogue of the product that made ``x``, when that product is
        still the last recorded dispatch: it then writes x and op(x) in one pass."""
        ref, info = self._fusable, self._fusable_info
        if ref is None or info is None or ref() is not x._data:
            return None
        variant, wtype, trans_b, has_bias, block, workgroup, kernel, buffers = info
        last = self._recorder.last_record()
        if last is None or last[0] is not kernel or last[1] != buffers:
            return None
        self._fusable = None
        fused = self._matmul_entry(variant, wtype, trans_b, has_bias, op, True, block, workgroup)
        post = self._alloc(x.size, wtype, op)
        # the product's temporaries (e.g. the contiguous copy of a strided input) may have gone
        # back to the pool since it was recorded: the output must not be one of the buffers the
        # same dispatch reads, or wgpu refuses the read-only + read-write binding
        set_aside = []
        while any(post.buf is b for b in buffers):
            set_aside.append(post)
            post = self._alloc(x.size, wtype, op)
        del set_aside
        self._recorder.replace_last(fused[0], (*buffers, post.buf))
        return self._inherit(post, x)

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
        from ipfs_accelerate.tensor._tensor import Tensor as _Tensor

        wtype = self._wt(q.dtype, "attention")
        batch = out_shape[:-2]
        length, source, embed = q.shape[-2], k.shape[-2], q.shape[-1]
        scores_shape = (*batch, length, source)
        if embed == 0:
            scores_handle = self.full(scores_shape, 0, q.dtype)
        else:
            scores_handle = self._product(q, k, batch, length, source, embed, True, None, "attention")
        self._fusable = None
        scores = _Tensor(scores_handle, scores_shape, q.dtype, self)
        mask_wt = self._wt(mask.dtype, "attention") if mask is not None else None
        key = ("masked_softmax", wtype.name, mask_wt.name if mask_wt else None, is_causal)
        entry = self._kernels.get(key)
        if entry is None:

            def make() -> tuple[str, str, tuple[int, int, bool], ErrorBuilder, WType]:
                src, layout = _reduce.masked_softmax_source(wtype, mask_wt, is_causal)
                return f"masked_softmax.{wtype.name}{'.causal' if is_causal else ''}", src, layout, (), wtype

            entry = self._kernel(key, make)
        rows = math.prod(batch) * length
        probs_handle = self._alloc(rows * source, wtype, "attention")
        if rows and source:
            row_shape = (*batch, length)
            if len(row_shape) > MAX_RANK:
                raise UnsupportedOpError(f"webgpu: attention with {len(batch)} batch axes exceeds {MAX_RANK - 1}")
            words = [rows, 0, 0, 0, source, 0, len(row_shape), 0, *self._scalar_words(float(scale), wtype)]
            words.extend([0] * (20 - len(words)))
            words.extend(row_shape)
            words.extend([0] * (MAX_RANK - len(row_shape)))
            buffers = [scores_handle.buf]
            if mask is not None:
                mask_strides = broadcast_strides(mask.shape, scores_shape)
                words.extend(mask_strides[:-1])
                words.extend([0] * (MAX_RANK - len(row_shape)))
                words.append(mask_strides[-1])
                buffers.append(mask._data.buf)
            else:
                words.extend([0] * MAX_RANK)
                words.append(0)
            words.append(length)
            buffers.append(probs_handle.buf)
            self._record(entry, tuple(buffers), probs_handle, words, self._groups(rows, _reduce.GROUP))
        self._inherit(probs_handle, scores_handle, mask)
        probs = _Tensor(probs_handle, scores_shape, q.dtype, self)
        del scores
        out = self._product(probs, v, batch, length, v.shape[-1], source, False, None, "attention")
        self._fusable = None
        return out

    # ------------------------------------------------------------------ convolution

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
        wtype = self._wt(x.dtype, "conv")
        count = math.prod(out_shape)
        key = ("conv", wtype.name, bias is not None)
        entry = self._kernels.get(key)
        if entry is None:

            def make() -> tuple[str, str, tuple[int, int, bool], ErrorBuilder, WType]:
                source, layout = _conv.conv_source(wtype, bias is not None)
                return f"conv.{wtype.name}", source, layout, (), wtype

            entry = self._kernel(key, make)
        out = self._alloc(count, wtype, "conv")
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
        words = [count, 0, 0, 0, n, c_in, height, width, weight.shape[0], oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, groups]
        buffers = [x._data.buf, weight._data.buf]
        if bias is not None:
            buffers.append(bias._data.buf)
        buffers.append(out.buf)
        self._record(entry, tuple(buffers), out, words, self._groups(count))
        return self._inherit(out, x, weight, bias)


__all__ = ["WebGPUBackend"]
