"""Compiled pipelines cached by (WGSL source, entry point); bind groups cached by buffers.

Every kernel binds, in order: the parameter block (binding 0, a uniform with a dynamic
offset into the ring buffer), its read-only inputs, its outputs, and, for kernels that can
fail, the error buffer. So a layout is fully described by (inputs, outputs, checked) and a
bind group by its layout and the ids of its buffers.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ipfs_accelerate.hal.webgpu._kernels._wgsl import PARAM_BYTES
from ipfs_accelerate.hal.webgpu._memory import DeviceBuffer

LayoutKey = tuple[int, int, bool]


class Kernel:
    """A compiled compute pipeline and what it binds."""

    __slots__ = (
        "checked",
        "entry",
        "layout",
        "layout_key",
        "n_in",
        "n_out",
        "name",
        "pipeline",
        "source",
    )

    def __init__(
        self, name: str, source: str, entry: str, pipeline: Any, layout: Any, layout_key: LayoutKey
    ) -> None:
        self.name = name
        self.source = source
        self.entry = entry
        self.pipeline = pipeline
        self.layout = layout
        self.layout_key = layout_key
        self.n_in, self.n_out, self.checked = layout_key

    def __repr__(self) -> str:
        return f"Kernel({self.name!r}, in={self.n_in}, out={self.n_out}, checked={self.checked})"


class PipelineCache:
    """Compiles each distinct (source, entry point) once."""

    def __init__(self, device: Any, wgpu: Any) -> None:
        self._device = device
        self._wgpu = wgpu
        self._pipelines: dict[tuple[str, str], Kernel] = {}
        self._layouts: dict[LayoutKey, tuple[Any, Any]] = {}
        #: number of pipelines compiled (a repeated computation must not raise it)
        self.compiles = 0

    def layout(self, key: LayoutKey) -> tuple[Any, Any]:
        """(bind group layout, pipeline layout) for ``key``."""
        found = self._layouts.get(key)
        if found is None:
            wgpu = self._wgpu
            n_in, n_out, checked = key
            compute = wgpu.ShaderStage.COMPUTE
            entries: list[dict[str, Any]] = [
                {
                    "binding": 0,
                    "visibility": compute,
                    "buffer": {
                        "type": "uniform",
                        "has_dynamic_offset": True,
                        "min_binding_size": PARAM_BYTES,
                    },
                }
            ]
            for i in range(n_in):
                entries.append(
                    {
                        "binding": 1 + i,
                        "visibility": compute,
                        "buffer": {"type": "read-only-storage"},
                    }
                )
            for i in range(n_out + (1 if checked else 0)):
                entries.append(
                    {"binding": 1 + n_in + i, "visibility": compute, "buffer": {"type": "storage"}}
                )
            group_layout = self._device.create_bind_group_layout(entries=entries)
            pipeline_layout = self._device.create_pipeline_layout(bind_group_layouts=[group_layout])
            found = (group_layout, pipeline_layout)
            self._layouts[key] = found
        return found

    def get(self, name: str, source: str, layout_key: LayoutKey, entry: str = "main") -> Kernel:
        key = (source, entry)
        kernel = self._pipelines.get(key)
        if kernel is None:
            group_layout, pipeline_layout = self.layout(layout_key)
            module = self._device.create_shader_module(code=source, label=name)
            pipeline = self._device.create_compute_pipeline(
                layout=pipeline_layout, compute={"module": module, "entry_point": entry}, label=name
            )
            kernel = Kernel(name, source, entry, pipeline, group_layout, layout_key)
            self._pipelines[key] = kernel
            self.compiles += 1
        return kernel

    def __len__(self) -> int:
        return len(self._pipelines)


class BindGroupCache:
    """Bind groups keyed by (layout, buffer ids), least recently used dropped beyond
    ``capacity``."""

    def __init__(self, device: Any, uniform: Any, capacity: int = 8192) -> None:
        self._device = device
        self._uniform = uniform
        self._capacity = capacity
        self._groups: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._by_buffer: dict[int, set[tuple[Any, ...]]] = {}
        #: bind groups created (a repeated computation with recycled buffers reuses them)
        self.creations = 0

    def get(self, kernel: Kernel, buffers: tuple[DeviceBuffer, ...]) -> Any:
        # buffers hash and compare by identity: the key costs no per-buffer work
        key = (kernel.layout_key, buffers)
        group = self._groups.get(key)
        if group is not None:
            self._groups.move_to_end(key)  # least recently *used* goes first
            return group
        entries: list[dict[str, Any]] = [
            {"binding": 0, "resource": {"buffer": self._uniform, "offset": 0, "size": PARAM_BYTES}}
        ]
        for i, b in enumerate(buffers):
            entries.append(
                {"binding": 1 + i, "resource": {"buffer": b.buffer, "offset": 0, "size": b.size}}
            )
        group = self._device.create_bind_group(layout=kernel.layout, entries=entries)
        self.creations += 1
        self._groups[key] = group
        for b in buffers:
            self._by_buffer.setdefault(b.uid, set()).add(key)
        if len(self._groups) > self._capacity:
            old_key, _ = self._groups.popitem(last=False)
            for b in old_key[1]:
                keys = self._by_buffer.get(b.uid)
                if keys is not None:
                    keys.discard(old_key)
        return group

    def forget(self, buf: DeviceBuffer) -> None:
        """Drop every bind group that references ``buf`` (it is being destroyed)."""
        for key in self._by_buffer.pop(buf.uid, ()):
            self._groups.pop(key, None)

    def __len__(self) -> int:
        return len(self._groups)
