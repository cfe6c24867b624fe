"""The command recorder: every dispatch of a computation goes into one batch, encoded into one
command encoder (one compute pass) and submitted once, when data leaves the device or when
the batch grows large. Intermediates are never read back.

Parameters travel in a uniform ring buffer: each dispatch packs its words into a host-side
``bytearray`` at the next 256-byte slot, and the used part is written to the device once per
submit. Kernels that can fail report into an error buffer, read together with the next
readback; the first failure (in recording order) is raised there, and the handle its kernel
produced is poisoned so that reading it again raises again.
"""

from __future__ import annotations

import struct
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.hal.webgpu._kernels._wgsl import ERR_KINDS, PARAM_BYTES
from ipfs_accelerate.hal.webgpu._memory import BufferPool, DeviceBuffer, GPUArray
from ipfs_accelerate.hal.webgpu._pipelines import BindGroupCache, Kernel

if TYPE_CHECKING:
    from ipfs_accelerate.hal.webgpu._device import Device
    from ipfs_accelerate.hal.webgpu._profiling import Profiler

#: builds the exception for (error kind, its three value words); None: kind not used
ErrorBuilder = Sequence[Callable[[tuple[int, int, int]], BaseException]]

_SLOT_BYTES = ERR_KINDS * 16

try:  # wgpu-native's cffi module: the fast path of encoding (see Recorder._encode_raw)
    from wgpu.backends.wgpu_native._ffi import ffi as _ffi
    from wgpu.backends.wgpu_native._ffi import lib as _lib

    _RAW: tuple[Any, Any] | None = (_ffi, _lib)
except Exception:  # pragma: no cover
    _RAW = None
_PACKERS: dict[int, struct.Struct] = {}


_PACK20 = struct.Struct("<20I")


def _packer(count: int) -> struct.Struct:
    packer = _PACKERS.get(count)
    if packer is None:
        packer = _PACKERS[count] = struct.Struct(f"<{count}I")
    return packer


class Recorder:
    """Batches dispatches; see the module docstring."""

    def __init__(
        self,
        dev: Device,
        pool: BufferPool,
        *,
        ring_bytes: int = 1 << 20,
        max_records: int = 4096,
        error_slots: int = 1024,
    ) -> None:
        wgpu = dev.wgpu
        self._dev = dev
        self._device = dev.device
        self._queue = dev.queue
        self._pool = pool
        self._wgpu = wgpu
        self.lock = threading.RLock()
        self._ring = bytearray(ring_bytes)
        self._ring_used = 0
        self.uniform = self._device.create_buffer(
            size=ring_bytes,
            usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST,
            label="params ring",
        )
        self.bind_groups = BindGroupCache(self._device, self.uniform)
        self._records: list[tuple[Kernel, tuple[DeviceBuffer, ...], int, int, int, int]] = []
        self._max_records = max_records
        self._error_slots = error_slots
        err_size = error_slots * _SLOT_BYTES
        self.errors = DeviceBuffer(
            self._device.create_buffer(
                size=err_size,
                usage=wgpu.BufferUsage.STORAGE
                | wgpu.BufferUsage.COPY_SRC
                | wgpu.BufferUsage.COPY_DST,
                label="error flags",
            ),
            err_size,
        )
        self._err_used = 0
        self._err_info: list[tuple[ErrorBuilder, weakref.ref[GPUArray] | None, int]] = []
        self._next_uid = 0
        #: every slot id below this has been checked (the kernels ran; failures are listed)
        self.watermark = 0
        #: slot id -> the error of each kernel found failed
        self.failures: dict[int, BaseException] = {}
        #: the smallest failed slot id: a taint whose ids are all older is clean
        self.oldest_failure = 1 << 62
        self._staging: Any = None
        self._staging_size = 0
        self.profiler: Profiler | None = None
        #: instrumentation: queue submits, readbacks to the host, dispatches encoded
        self.submits = 0
        self.readbacks = 0
        self.dispatches = 0

    # ------------------------------------------------------------------ recording

    @property
    def pending(self) -> int:
        """Dispatches recorded and not yet submitted."""
        return len(self._records)

    def error_slot(self, builder: ErrorBuilder) -> tuple[int, int]:
        """Reserve an error slot for the next dispatch (its kernel reports kinds 0..3); returns
        (slot index for the kernel, slot id for taints)."""
        if self._err_used >= self._error_slots:
            self.read(None, 0)  # all slots in flight: check them now (raises if one failed)
        slot = self._err_used
        self._err_used += 1
        uid = self._next_uid
        self._next_uid += 1
        self._err_info.append((builder, None, uid))
        return slot, uid

    def poison_target(self, slot: int, handle: GPUArray) -> None:
        builder, _, uid = self._err_info[slot]
        self._err_info[slot] = (builder, weakref.ref(handle), uid)

    def dispatch(
        self,
        kernel: Kernel,
        buffers: tuple[DeviceBuffer, ...],
        words: Sequence[int],
        groups: tuple[int, int, int],
    ) -> None:
        """Record ``kernel`` over ``buffers`` (inputs, outputs[, error buffer]) with parameter
        ``words`` and workgroup counts ``groups``."""
        offset = self._ring_used
        if offset + PARAM_BYTES > len(self._ring):
            self.submit()
            offset = 0
        count = len(words)
        (_PACK20 if count == 20 else _packer(count)).pack_into(self._ring, offset, *words)
        self._ring_used = offset + PARAM_BYTES
        self._records.append((kernel, buffers, offset, groups[0], groups[1], groups[2]))
        self._pool.batch_open = True
        if len(self._records) >= self._max_records:
            self.submit()

    def last_record(self) -> tuple[Kernel, tuple[DeviceBuffer, ...], int, int, int, int] | None:
        return self._records[-1] if self._records else None

    def replace_last(self, kernel: Kernel, buffers: tuple[DeviceBuffer, ...]) -> None:
        """Swap the kernel and buffers of the last (still unencoded) dispatch (epilogue fusion)."""
        _, _, offset, gx, gy, gz = self._records[-1]
        self._records[-1] = (kernel, buffers, offset, gx, gy, gz)

    # ------------------------------------------------------------------ submitting

    def _encode(self, encoder: Any) -> None:
        records = self._records
        if not records:
            return
        try:
            if self._ring_used:
                self._queue.write_buffer(self.uniform, 0, self._ring, 0, self._ring_used)
            if self.profiler is not None:
                self.profiler.encode(encoder, records, self.bind_groups)
            else:
                compute_pass = encoder.begin_compute_pass()
                if _RAW is not None:
                    self._encode_raw(compute_pass, records)
                else:  # pragma: no cover - wgpu-py without its cffi module
                    get = self.bind_groups.get
                    last = None
                    for kernel, buffers, offset, gx, gy, gz in records:
                        if kernel is not last:
                            compute_pass.set_pipeline(kernel.pipeline)
                            last = kernel
                        compute_pass.set_bind_group(0, get(kernel, buffers), (offset,))
                        compute_pass.dispatch_workgroups(gx, gy, gz)
                compute_pass.end()
            self.dispatches += len(records)
        finally:
            # a batch that failed to encode is dropped, so that later work is not stuck behind it
            records.clear()
            self._ring_used = 0

    def _encode_raw(
        self,
        compute_pass: Any,
        records: list[tuple[Kernel, tuple[DeviceBuffer, ...], int, int, int, int]],
    ) -> None:
        """The pass commands through wgpu-native's C functions directly: wgpu-py's wrappers
        cost more than the commands themselves. Validation errors still surface, when the
        encoder is finished."""
        ffi, lib = _RAW  # type: ignore[misc]
        handle = compute_pass._internal
        set_pipeline = lib.wgpuComputePassEncoderSetPipeline
        set_bind_group = lib.wgpuComputePassEncoderSetBindGroup
        dispatch = lib.wgpuComputePassEncoderDispatchWorkgroups
        offsets = ffi.new("uint32_t[1]")
        get = self.bind_groups.get
        groups_used = []  # keeps every bind group alive until the pass ends
        last = None
        for kernel, buffers, offset, gx, gy, gz in records:
            if kernel is not last:
                set_pipeline(handle, kernel.pipeline._internal)
                last = kernel
            group = get(kernel, buffers)
            groups_used.append(group)
            offsets[0] = offset
            set_bind_group(handle, 0, group._internal, 1, offsets)
            dispatch(handle, gx, gy, gz)

    def _submit(self, encoder: Any) -> None:
        try:
            self._queue.submit([encoder.finish()])
        except Exception as exc:
            raise self._dev.failure(exc, "submitting recorded work") from exc
        self.submits += 1
        self._pool.end_batch()
        if self.profiler is not None:
            self.profiler.collect()

    def submit(self) -> None:
        """Submit the open batch (no readback)."""
        with self.lock:
            if not self._records:
                return
            self._dev.check_alive()
            try:
                encoder = self._device.create_command_encoder()
                self._encode(encoder)
            except Exception as exc:
                raise self._dev.failure(exc, "encoding recorded work") from exc
            self._submit(encoder)

    def _staging_buffer(self, size: int) -> Any:
        if self._staging is None or self._staging_size < size:
            if self._staging is not None:
                self._staging.destroy()
            new_size = max(1 << 16, 1 << (size - 1).bit_length())
            wgpu = self._wgpu
            self._staging = self._device.create_buffer(
                size=new_size,
                usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST,
                label="readback staging",
            )
            self._staging_size = new_size
        return self._staging

    def read(self, buf: DeviceBuffer | None, nbytes: int) -> memoryview:
        """Run everything recorded, then copy ``nbytes`` of ``buf`` to the host (through the
        reused staging buffer) together with the error flags; raises the first kernel error.
        With ``buf`` None, only waits for the device (and checks the error flags)."""
        with self.lock:
            self._dev.check_alive()
            data_bytes = -(-nbytes // 4) * 4 if buf is not None else 0
            err_bytes = self._err_used * _SLOT_BYTES
            err_offset = -(-data_bytes // 256) * 256
            total = err_offset + err_bytes
            try:
                encoder = self._device.create_command_encoder()
                self._encode(encoder)
            except Exception as exc:
                raise self._dev.failure(exc, "encoding recorded work") from exc
            synchronize_only = total == 0
            if synchronize_only:
                # mapping waits for the queue: copy one word of the (clean) error flags
                total = 4
            try:
                staging = self._staging_buffer(total)
                if synchronize_only:
                    encoder.copy_buffer_to_buffer(self.errors.buffer, 0, staging, 0, 4)
                if data_bytes:
                    encoder.copy_buffer_to_buffer(buf.buffer, 0, staging, 0, data_bytes)  # type: ignore[union-attr]
                if err_bytes:
                    encoder.copy_buffer_to_buffer(
                        self.errors.buffer, 0, staging, err_offset, err_bytes
                    )
            except Exception as exc:
                raise self._dev.failure(exc, "copying results for readback") from exc
            self._submit(encoder)
            if not synchronize_only:
                self.readbacks += 1
            try:
                staging.map_sync(self._wgpu.MapMode.READ, 0, total)
            except Exception as exc:
                raise self._dev.failure(exc, "mapping the readback buffer") from exc
            try:
                data = staging.read_mapped(0, data_bytes) if data_bytes else memoryview(b"")
                flags = staging.read_mapped(err_offset, err_bytes) if err_bytes else None
            finally:
                staging.unmap()
            if flags is not None:
                self._check_errors(flags)
            return data

    def _check_errors(self, raw: memoryview) -> None:
        words = np.frombuffer(raw, dtype=np.uint32).reshape(-1, ERR_KINDS, 4)
        infos = self._err_info
        self._err_info = []
        self._err_used = 0
        self.watermark = self._next_uid
        failed = np.nonzero(words[:, :, 0].any(axis=1))[0]
        if not failed.size:
            return
        # clear the flags before raising: the next computation starts clean
        self._queue.write_buffer(self.errors.buffer, 0, np.zeros(words.size, dtype=np.uint32))
        first: BaseException | None = None
        for slot in failed:
            builder, target, uid = infos[int(slot)]
            for kind in range(ERR_KINDS):
                if words[slot, kind, 0] and kind < len(builder):
                    w = words[slot, kind]
                    error = builder[kind]((int(w[1]), int(w[2]), int(w[3])))
                    self.failures[uid] = error
                    self.oldest_failure = min(self.oldest_failure, uid)
                    handle = target() if target is not None else None
                    if handle is not None:
                        handle.error = error
                    if first is None:
                        first = error
                    break
        if first is not None:
            raise first
