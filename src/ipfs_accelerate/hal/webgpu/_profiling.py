"""GPU time per kernel through timestamp queries.

While profiling is on, every dispatch is encoded in its own compute pass whose beginning and
end write timestamps (the portable ``timestamp-query`` feature: no timestamps inside passes
needed); after each submit the timestamps are resolved, read back and added to the kernel's
totals. Profiling changes timing (one pass per dispatch, a readback per submit), so use it to
see where time goes, not to benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.errors import UnsupportedOpError

if TYPE_CHECKING:
    from ipfs_accelerate.hal.webgpu._device import Device
    from ipfs_accelerate.hal.webgpu._pipelines import BindGroupCache


@dataclass
class KernelTime:
    """Accumulated GPU time of one kernel (by pipeline name)."""

    name: str
    calls: int = 0
    total_ns: float = 0.0

    @property
    def mean_us(self) -> float:
        return self.total_ns / self.calls / 1000.0 if self.calls else 0.0


@dataclass
class ProfileReport:
    """Kernel times collected by :meth:`WebGPUBackend.profile`, slowest first in :meth:`rows`."""

    kernels: dict[str, KernelTime] = field(default_factory=dict)

    @property
    def total_ns(self) -> float:
        return sum(k.total_ns for k in self.kernels.values())

    def rows(self) -> list[KernelTime]:
        return sorted(self.kernels.values(), key=lambda k: k.total_ns, reverse=True)

    def table(self) -> str:
        lines = [f"{'kernel':<48} {'calls':>7} {'total ms':>10} {'mean us':>10}"]
        for k in self.rows():
            lines.append(
                f"{k.name[:48]:<48} {k.calls:>7} {k.total_ns / 1e6:>10.3f} {k.mean_us:>10.1f}"
            )
        return "\n".join(lines)


class Profiler:
    """Encodes dispatches with timestamps and accumulates a :class:`ProfileReport`."""

    def __init__(self, dev: Device, capacity: int = 2048) -> None:
        # wgpu caps a query set at 4096 queries: two per timed dispatch
        if "timestamp-query" not in dev.features:
            raise UnsupportedOpError(
                "webgpu: profiling needs the 'timestamp-query' feature, which adapter "
                f"{dev.label} lacks"
            )
        wgpu = dev.wgpu
        self._dev = dev
        self._capacity = capacity
        self._query_set = dev.device.create_query_set(
            type=wgpu.QueryType.timestamp, count=2 * capacity
        )
        size = 2 * capacity * 8
        self._resolve = dev.device.create_buffer(
            size=size, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC
        )
        self._read = dev.device.create_buffer(
            size=size, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
        )
        self._period = dev.timestamp_period()
        self._pending: list[str] = []
        self.report = ProfileReport()

    def encode(
        self, encoder: Any, records: Sequence[tuple[Any, ...]], bind_groups: BindGroupCache
    ) -> None:
        names: list[str] = []
        for index, (kernel, buffers, offset, gx, gy, gz) in enumerate(records[: self._capacity]):
            compute_pass = encoder.begin_compute_pass(
                timestamp_writes={
                    "query_set": self._query_set,
                    "beginning_of_pass_write_index": 2 * index,
                    "end_of_pass_write_index": 2 * index + 1,
                }
            )
            compute_pass.set_pipeline(kernel.pipeline)
            compute_pass.set_bind_group(0, bind_groups.get(kernel, buffers), (offset,))
            compute_pass.dispatch_workgroups(gx, gy, gz)
            compute_pass.end()
            names.append(kernel.name)
        if len(records) > self._capacity:  # the rest runs untimed
            compute_pass = encoder.begin_compute_pass()
            for kernel, buffers, offset, gx, gy, gz in records[self._capacity :]:
                compute_pass.set_pipeline(kernel.pipeline)
                compute_pass.set_bind_group(0, bind_groups.get(kernel, buffers), (offset,))
                compute_pass.dispatch_workgroups(gx, gy, gz)
            compute_pass.end()
        if names:
            count = 2 * len(names)
            encoder.resolve_query_set(self._query_set, 0, count, self._resolve, 0)
            encoder.copy_buffer_to_buffer(self._resolve, 0, self._read, 0, count * 8)
        self._pending = names

    def collect(self) -> None:
        names, self._pending = self._pending, []
        if not names:
            return
        count = 2 * len(names)
        self._read.map_sync(self._dev.wgpu.MapMode.READ, 0, count * 8)
        try:
            ticks = np.frombuffer(self._read.read_mapped(0, count * 8), dtype=np.uint64).reshape(
                -1, 2
            )
        finally:
            self._read.unmap()
        elapsed = (ticks[:, 1].astype(np.float64) - ticks[:, 0].astype(np.float64)) * self._period
        for name, ns in zip(names, elapsed, strict=True):
            entry = self.report.kernels.get(name)
            if entry is None:
                entry = self.report.kernels[name] = KernelTime(name)
            entry.calls += 1
            entry.total_ns += max(float(ns), 0.0)
