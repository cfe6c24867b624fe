"""The dispatcher: what every WebGPU op goes through to run.

It owns one device's buffer pool, command recorder, pipeline and kernel caches, and offers
the op families (``_ops_*``), the fuser and the tuner a small public surface: allocate a
handle, look up or compile a kernel, record a dispatch, record a map kernel over operands,
move data to and from the host. docs/webgpu.md describes the batching and the caches.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np

from ipfs_accelerate.errors import DeviceLostError, UnsupportedOpError
from ipfs_accelerate.hal._backend import Scalar, Shape
from ipfs_accelerate.hal.webgpu._device import Device
from ipfs_accelerate.hal.webgpu._kernels import _elementwise as ew
from ipfs_accelerate.hal.webgpu._kernels._wgsl import (
    MAX_RANK,
    WORKGROUP,
    WTYPES,
    WType,
    encode_scalar,
)
from ipfs_accelerate.hal.webgpu._memory import BufferPool, DeviceBuffer, GPUArray, Taint
from ipfs_accelerate.hal.webgpu._pipelines import Kernel, LayoutKey, PipelineCache
from ipfs_accelerate.hal.webgpu._profiling import Profiler, ProfileReport
from ipfs_accelerate.hal.webgpu._recorder import ErrorBuilder, Recorder
from ipfs_accelerate.tensor._dtype import DType
from ipfs_accelerate.tensor._tensor import Tensor

_TensorClass = Tensor

#: a compiled kernel, the exceptions its error kinds raise, and the type of its output
KernelEntry = tuple[Kernel, ErrorBuilder, WType]
#: builds a kernel on a cache miss: (name, WGSL source, layout, errors, output type)
KernelMaker = Callable[[], tuple[str, str, LayoutKey, ErrorBuilder, WType]]
#: a private recorder, an upload function and an allocation function (for measurements)
PrivateRecording = tuple[
    Recorder,
    Callable[[np.ndarray[Any, Any]], DeviceBuffer],
    Callable[[int], DeviceBuffer],
]

_SCALARS = (bool, int, float)
_ZERO4 = (0, 0, 0, 0)
_ZERO20 = (0,) * 20
_NO_OFFSETS = (0, 0, 0)


class MapPlan:
    """How a map kernel indexes its operands for one (output shape, operand strides)."""

    __slots__ = ("modes", "rank", "shape", "strides")

    def __init__(
        self,
        modes: tuple[str, ...],
        rank: int,
        shape: list[int],
        strides: list[list[int] | None],
    ) -> None:
        self.modes = modes
        self.rank = rank
        self.shape = shape
        self.strides = strides


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


def collapse(shape: Shape, strides: Sequence[Sequence[int]]) -> list[tuple[int, list[int]]]:
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


class Dispatcher:
    """Pool, recorder and kernel caches of one device, behind the methods the ops use."""

    def __init__(self, device: Device) -> None:
        wgpu = device.wgpu
        self.device = device
        self.pipelines = PipelineCache(device.device, wgpu)
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        recorder_ref: list[Recorder] = []
        self.max_buffer_bytes = min(device.max_buffer, device.max_binding)
        self.pool = BufferPool(
            device.device,
            usage,
            max_cached_bytes=min(1 << 30, max(device.max_buffer, 1 << 28)),
            on_destroy=lambda buf: (
                recorder_ref[0].bind_groups.forget(buf) if recorder_ref else None
            ),
            max_buffer_bytes=self.max_buffer_bytes,
        )
        self.recorder = Recorder(device, self.pool)
        recorder_ref.append(self.recorder)
        #: dtype name -> device representation, for the dtypes this adapter supports
        self.wtypes: dict[str, WType] = {name: WTYPES[name] for name in device.dtypes}
        self.max_groups = device.max_groups
        self._kernels: dict[tuple[Any, ...], KernelEntry] = {}
        self._plans: dict[tuple[Any, ...], MapPlan] = {}
        self._scalars: dict[tuple[Any, ...], tuple[int, int, int, int]] = {}

    # ------------------------------------------------------------------ kernels and handles

    def wtype(self, dtype: DType, op: str) -> WType:
        """The device representation of ``dtype`` (UnsupportedDtypeError naming ``op``)."""
        found = self.wtypes.get(dtype.name)
        if found is None:
            return self.device.wtype(dtype.name, op)
        return found

    def check_room(self, nbytes: int, op: str) -> None:
        """Raise if the device is lost or ``nbytes`` exceed one storage binding."""
        dev = self.device
        if dev.lost_reason is not None:
            dev.check_alive()
        if nbytes > dev.max_binding:
            dev.check_binding(nbytes, op)

    def alloc(self, count: int, wtype: WType, op: str) -> GPUArray:
        """A handle of ``count`` elements of ``wtype`` from the pool."""
        nbytes = count * wtype.itemsize
        self.check_room(nbytes, op)
        return GPUArray(self.pool.acquire(nbytes), nbytes, self.pool)

    def identity_map(
        self,
        wtype: WType,
        x: Tensor | Scalar,
        out_shape: Shape,
        op: str,
        **placement: Any,
    ) -> GPUArray:
        """A copy of ``x`` (or a fill with a scalar) as a map kernel; ``placement`` takes
        :meth:`map`'s strides, offsets and output placement."""
        key = ("fill" if isinstance(x, _SCALARS) else "copy", wtype.name)
        name = f"{key[0]}.{wtype.name}"
        body = partial(ew.identity_body, wtype)
        return self.map(key, name, body, (wtype,), (x,), out_shape, op, **placement)

    def pending(self, nbytes: int) -> GPUArray:
        """A handle without a buffer yet (the fuser gives it an expression)."""
        return GPUArray(None, nbytes, self.pool)

    def cached(self, key: tuple[Any, ...]) -> KernelEntry | None:
        """The kernel compiled under ``key``, if any (no closure built on the hot path)."""
        return self._kernels.get(key)

    def kernel(self, key: tuple[Any, ...], make: KernelMaker) -> KernelEntry:
        """The kernel cached under ``key``, compiled from ``make()`` on first use."""
        entry = self._kernels.get(key)
        if entry is None:
            name, source, layout_key, errors, out = make()
            try:
                kernel = self.pipelines.get(name, source, layout_key)
            except Exception as exc:
                failure = self.device.failure(exc, f"compiling kernel {name!r}")
                if isinstance(failure, DeviceLostError):
                    raise failure from exc
                # an adapter whose compiler rejects a kernel: the op runs on the CPU instead
                raise UnsupportedOpError(
                    f"webgpu: kernel {name!r} failed to compile on {self.device.label}: {exc}"
                ) from exc
            entry = (kernel, errors, out)
            self._kernels[key] = entry
        return entry

    def groups(self, count: int, per_group: int = WORKGROUP) -> tuple[int, int, int]:
        """The grid for ``count`` invocations (2-D beyond the per-dimension limit)."""
        groups = -(-count // per_group)
        if groups <= self.max_groups:
            return (groups, 1, 1)
        width = self.max_groups
        return (width, -(-groups // width), 1)

    def scalar_words(
        self, value: Scalar, wtype: WType, *, rounded: bool = True
    ) -> tuple[int, int, int, int]:
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

    def record(
        self,
        entry: KernelEntry,
        buffers: tuple[DeviceBuffer, ...],
        out: GPUArray,
        words: list[int],
        groups: tuple[int, int, int],
    ) -> None:
        """Record ``entry`` over ``buffers``; a kernel that can fail gets an error slot, and
        ``out`` is poisoned if it does."""
        kernel, errors, _ = entry
        rec = self.recorder
        with rec.lock:
            if errors:
                slot, uid = rec.error_slot(errors)
                words[3] = slot
                rec.poison_target(slot, out)
                buffers = (*buffers, rec.errors)
                out.taint = Taint(uid, (out.taint,) if out.taint is not None else ())
            rec.dispatch(kernel, buffers, words, groups)

    def inherit(self, out: GPUArray, *inputs: Any) -> GPUArray:
        """``out`` depends on the values of ``inputs`` (tensors, handles, scalars, None): it
        carries their taints, minus the ones already checked clean."""
        parents: list[Taint] = []
        rec = self.recorder
        for item in inputs:
            handle = item._data if item.__class__ is _TensorClass else item
            taint = getattr(handle, "taint", None)
            if taint is not None and (
                taint.latest >= rec.watermark or taint.latest >= rec.oldest_failure
            ):
                parents.append(taint)
        if parents:
            own = out.taint
            if own is None and len(parents) == 1:
                out.taint = parents[0]
            else:
                out.taint = Taint(-1, (*parents, *((own,) if own is not None else ())))
        return out

    # ------------------------------------------------------------------ map kernels

    def plan(self, out_shape: Shape, strides: tuple[tuple[int, ...] | None, ...]) -> MapPlan:
        """How a map kernel reads operands of ``strides`` (None: a scalar) into ``out_shape``."""
        key = (out_shape, strides)
        plan = self._plans.get(key)
        if plan is None:
            tensor_strides = [s for s in strides if s is not None]
            dims = collapse(out_shape, tensor_strides)
            if len(dims) > MAX_RANK:
                raise UnsupportedOpError(
                    f"webgpu: an element-wise op over {len(dims)} non-mergeable axes exceeds the "
                    f"kernels' {MAX_RANK}; reshape the operands or use device 'cpu'"
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
            plan = MapPlan(tuple(modes), len(dims), shape, per_operand)
            if len(self._plans) < 8192:
                self._plans[key] = plan
        return plan

    def map(
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
        plan: MapPlan | None = None
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
                return self.flat_map(key, name, body, wtypes, operands, tuple(flat), n, op)
            if simple:
                modes = tuple(flat)
            else:
                strides = tuple(
                    None
                    if isinstance(o, bool | int | float)
                    else broadcast_strides(o.shape, out_shape)
                    for o in operands
                )
        if strides is not None or out_strides is not None:
            if strides is None:
                strides = tuple(
                    None if isinstance(o, bool | int | float) else contiguous_strides(o.shape)
                    for o in operands
                )
            all_strides = strides if out_strides is None else (*strides, out_strides)
            plan = self.plan(out_shape, all_strides)
            modes = plan.modes[: len(operands)]
            if out_strides is not None and plan.modes[-1] == "c" and "s" not in modes:
                out_strides = None  # the output block is contiguous after all
        out_strided = out_strides is not None
        full_key = (key, modes, out_strided)
        entry = self._kernels.get(full_key)
        if entry is None:

            def make() -> tuple[str, str, LayoutKey, ErrorBuilder, WType]:
                b = body()
                operand_modes = list(zip(wtypes, modes, strict=True))
                source, layout = ew.map_source(name, operand_modes, b, out_strided=out_strided)
                kernel_name = f"{name}.{''.join(modes)}{'o' if out_strided else ''}"
                return kernel_name, source, layout, b.errors, b.out

            entry = self.kernel(full_key, make)
        if out is None:
            out = self.alloc(n, entry[2], op)
        if n == 0:
            return out
        words = [n, 0, 0, 0]
        buffers = self._pack_operands(operands, wtypes, words)
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
        invocations = -(-n // ew.STRIDED_ELEMS) if strided_kernel else n
        self.record(entry, tuple(buffers), out, words, self.groups(invocations))
        return self.inherit(out, *operands)

    def flat_map(
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
        """The common case of :meth:`map` (operands of the output's shape, or scalars), kept
        lean: it is most of the per-op cost of small element-wise ops."""
        full_key = (key, modes, False)
        entry = self._kernels.get(full_key)
        if entry is None:
            flat = tuple(None if m == "k" else (1,) for m in modes)
            return self.map(
                key, name, body, wtypes, operands, (n,) if n else (0,), op, strides=flat
            )
        if n == 0:
            return self.alloc(n, entry[2], op)
        return self.record_flat(entry, wtypes, operands, n, op)

    def record_flat(
        self,
        entry: KernelEntry,
        wtypes: Sequence[WType],
        operands: Sequence[Tensor | Scalar],
        n: int,
        op: str,
    ) -> GPUArray:
        """Record a compiled contiguous map kernel (operands of the output's shape, or Python
        scalars of ``wtypes``): the per-op path of small element-wise ops."""
        out = self.alloc(n, entry[2], op)
        if n:
            words = [n, 0, 0, 0]
            buffers = self._pack_operands(operands, wtypes, words)
            words.extend(_ZERO20[len(words) :])
            self.dispatch_flat(entry, buffers, out, words, n)
        for o in operands:
            if o.__class__ is _TensorClass and o._data.taint is not None:  # type: ignore[union-attr]
                return self.inherit(out, *operands)
        return out

    def _pack_operands(
        self, operands: Sequence[Tensor | Scalar], wtypes: Sequence[WType], words: list[int]
    ) -> list[DeviceBuffer]:
        """Append each operand's four parameter words to ``words`` (a scalar's value, zeros for
        a tensor) and return the tensors' buffers, in order."""
        buffers: list[DeviceBuffer] = []
        for k, o in enumerate(operands):  # (zip() costs more on this hot path)
            if isinstance(o, _SCALARS):
                words.extend(self.scalar_words(o, wtypes[k]))
            else:
                words.extend(_ZERO4)
                buffers.append(o._data.buf)
        return buffers

    def dispatch_flat(
        self,
        entry: KernelEntry,
        inputs: Sequence[DeviceBuffer],
        out: GPUArray,
        words: list[int],
        n: int,
    ) -> None:
        """Record a flat element-wise kernel over ``n`` elements, one invocation each (a 1-D
        grid, 2-D beyond the adapter's per-dimension limit), binding ``inputs`` then ``out``;
        ``words`` is its parameter block."""
        groups = -(-n // WORKGROUP)
        grid = (groups, 1, 1) if groups <= self.max_groups else self.groups(n)
        self.record(entry, (*inputs, out.buf), out, words, grid)

    # ------------------------------------------------------------------ host transfers

    def upload(self, host: np.ndarray[Any, Any]) -> GPUArray:
        """A handle holding a copy of the contiguous ``host`` array (device layout already)."""
        nbytes = host.nbytes
        dev = self.device
        dev.check_alive()
        dev.check_binding(nbytes, "from_numpy")
        handle = GPUArray(self.pool.acquire(nbytes, upload=True), nbytes, self.pool)
        if nbytes:
            data = host.reshape(-1).view(np.uint8)
            if nbytes % 4:
                data = np.concatenate([data, np.zeros(4 - nbytes % 4, dtype=np.uint8)])
            try:
                dev.queue.write_buffer(handle.buf.buffer, 0, data)
            except Exception as exc:
                raise dev.failure(exc, "uploading a tensor") from exc
        return handle

    def download(self, handle: GPUArray, nbytes: int) -> memoryview:
        """Run everything recorded and read the first ``nbytes`` of ``handle`` back; raises the
        error of a failed kernel that the value was computed from."""
        if handle.error is not None:
            raise handle.error
        rec = self.recorder
        raw = rec.read(handle.buf, nbytes)
        if handle.error is not None:  # pragma: no cover - read() raises the error first
            raise handle.error
        if rec.failures and handle.taint is not None:
            # computed from the output of a kernel that failed: the values are not numpy's
            failed = handle.taint.find(rec.failures)
            if failed is not None:
                raise failed
        return raw

    def synchronize(self) -> None:
        """Submit the open batch and wait for the device (raises pending kernel errors)."""
        self.recorder.read(None, 0)

    def trim(self) -> int:
        """Give cached free buffers back to the driver; returns the bytes freed."""
        with self.recorder.lock:
            self.recorder.submit()
            return self.pool.trim()

    # ------------------------------------------------------------------ instrumentation

    def stats(self) -> dict[str, int]:
        """The counters of WebGPUBackend.stats()."""
        rec, pool = self.recorder, self.pool
        return {
            "submits": rec.submits,
            "readbacks": rec.readbacks,
            "dispatches": rec.dispatches + rec.pending,
            "pending": rec.pending,
            "pipelines": len(self.pipelines),
            "pipeline_compiles": self.pipelines.compiles,
            "bind_groups": len(rec.bind_groups),
            "bind_group_creations": rec.bind_groups.creations,
            "buffers_created": pool.created,
            "allocated_bytes": pool.allocated_bytes,
            "in_use_bytes": pool.in_use_bytes,
            "cached_bytes": pool.cached_bytes,
        }

    @contextlib.contextmanager
    def profile(self) -> Iterator[ProfileReport]:
        """Time every kernel recorded inside the block (timestamp queries)."""
        rec = self.recorder
        rec.submit()
        profiler = Profiler(self.device)
        rec.profiler = profiler
        try:
            yield profiler.report
            rec.submit()
        finally:
            rec.profiler = None

    @contextlib.contextmanager
    def private_recorder(self) -> Iterator[PrivateRecording]:
        """A recorder and buffers apart from the open batch (for measurements)."""
        dev = self.device
        wgpu = dev.wgpu
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        created: list[DeviceBuffer] = []
        pool = BufferPool(dev.device, usage, 0, lambda buf: None, self.max_buffer_bytes)
        recorder = Recorder(dev, pool, ring_bytes=1 << 16, error_slots=4)

        def alloc(nbytes: int) -> DeviceBuffer:
            size = max(nbytes, 16)
            buf = DeviceBuffer(dev.device.create_buffer(size=size, usage=usage), size)
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


__all__ = [
    "Dispatcher",
    "KernelEntry",
    "KernelMaker",
    "MapPlan",
    "broadcast_strides",
    "collapse",
    "contiguous_strides",
]
