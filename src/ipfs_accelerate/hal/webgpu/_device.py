"""Adapter and device: selection by power preference, features, limits, dtypes, device loss."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from typing import Any

from ipfs_accelerate.errors import (
    BackendError,
    BackendLimitError,
    BackendUnavailableError,
    DeviceLostError,
    UnsupportedDtypeError,
)
from ipfs_accelerate.hal.webgpu._kernels._wgsl import WTYPES, WType

#: features this backend uses when the adapter has them
WANTED_FEATURES = (
    "shader-f16",
    "shader-f64",
    "shader-int64",
    "timestamp-query",
    "timestamp-query-inside-passes",
    "timestamp-query-inside-encoders",
)

#: limits raised to the adapter's maximum (the WebGPU defaults are far lower than real devices)
RAISED_LIMITS = (
    "max-storage-buffer-binding-size",
    "max-buffer-size",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroup-size-x",
    "max-compute-workgroup-size-y",
    "max-storage-buffers-per-shader-stage",
    "max-compute-workgroups-per-dimension",
)

#: limits reported by info()
REPORTED_LIMITS = (
    *RAISED_LIMITS,
    "max-uniform-buffer-binding-size",
    "min-uniform-buffer-offset-alignment",
    "min-storage-buffer-offset-alignment",
    "max-bind-groups",
    "max-compute-workgroup-size-z",
)

_ADAPTER_TYPES = {
    "cpu": "cpu",
    "discretegpu": "discrete",
    "discrete": "discrete",
    "integratedgpu": "integrated",
    "integrated": "integrated",
    "virtualgpu": "virtual",
    "virtual": "virtual",
}


def normalize_adapter_type(raw: Any) -> str:
    """wgpu's adapter type ("CPU", "DiscreteGPU"...) as BackendInfo.adapter_type."""
    return _ADAPTER_TYPES.get(str(raw or "").replace(" ", "").lower(), "unknown")


class Device:
    """One WebGPU adapter and the device opened on it.

    ``power_preference`` is "high-performance" (default, or $IPFS_ACCELERATE_WEBGPU_POWER) or
    "low-power". ``disabled_features`` hides adapter features (tests use it to play an adapter
    without shader-f64 or shader-int64).
    """

    def __init__(
        self, power_preference: str | None = None, disabled_features: Iterable[str] = ()
    ) -> None:
        try:
            import wgpu
        except ImportError as exc:  # pragma: no cover - wgpu is in the webgpu extra
            raise BackendUnavailableError(
                "webgpu: the 'wgpu' package is not installed "
                "(pip install 'ipfs-accelerate[webgpu]')"
            ) from exc
        self.wgpu = wgpu
        preference = power_preference or os.environ.get(
            "IPFS_ACCELERATE_WEBGPU_POWER", "high-performance"
        )
        try:
            adapter = wgpu.gpu.request_adapter_sync(power_preference=preference)
        except Exception as exc:
            raise BackendUnavailableError(
                f"webgpu: no WebGPU adapter found ({type(exc).__name__}: {exc})"
            ) from exc
        if adapter is None:
            raise BackendUnavailableError(
                "webgpu: no WebGPU adapter found (no Vulkan, Metal or D3D12 driver)"
            )
        self.adapter = adapter
        info = dict(adapter.info)
        self.vendor = str(info.get("vendor") or info.get("vendor_id") or "")
        self.device_name = str(info.get("device") or info.get("description") or "WebGPU adapter")
        self.description = str(info.get("description") or "")
        self.adapter_type = normalize_adapter_type(info.get("adapter_type"))
        self.api = str(info.get("backend_type") or "")
        self.adapter_info = {
            k: (v if isinstance(v, int | float | str) else str(v)) for k, v in info.items()
        }
        disabled = set(disabled_features)
        available = set(adapter.features)
        self.features = frozenset(
            f for f in WANTED_FEATURES if f in available and f not in disabled
        )
        adapter_limits = dict(adapter.limits)
        required = {name: adapter_limits[name] for name in RAISED_LIMITS if name in adapter_limits}
        try:
            self.device = adapter.request_device_sync(
                required_features=sorted(self.features), required_limits=required
            )
        except Exception as exc:
            raise BackendUnavailableError(
                f"webgpu: adapter {self.device_name!r} could not open a device "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        self.queue = self.device.queue
        self.limits = {
            k: int(v) for k, v in dict(self.device.limits).items() if isinstance(v, int | float)
        }
        self.max_binding = self.limits.get("max-storage-buffer-binding-size", 128 << 20)
        self.max_buffer = self.limits.get("max-buffer-size", 256 << 20)
        self.max_groups = self.limits.get("max-compute-workgroups-per-dimension", 65535)
        self.max_invocations = self.limits.get("max-compute-invocations-per-workgroup", 256)
        self.lost_reason: str | None = None
        #: called once when the device is found lost (the backend leaves the registry then)
        self.on_lost: list[Callable[[], None]] = []
        self.dtypes = tuple(
            name for name, w in WTYPES.items() if w.feature is None or w.feature in self.features
        )

    # ------------------------------------------------------------------ description

    @property
    def label(self) -> str:
        """How error messages name the adapter."""
        return f"{self.device_name} ({self.api}, {self.adapter_type})"

    def timestamp_period(self) -> float:
        """Nanoseconds per timestamp tick (1.0 where wgpu does not say)."""
        try:
            from wgpu.backends.wgpu_native._ffi import lib

            period = float(lib.wgpuQueueGetTimestampPeriod(self.queue._internal))
            return period if period > 0 else 1.0
        except Exception:  # private API of wgpu-py; the spec's unit is the nanosecond
            return 1.0

    # ------------------------------------------------------------------ checks

    def wtype(self, dtype_name: str, op: str) -> WType:
        """The device representation of a dtype, or UnsupportedDtypeError naming the adapter."""
        wtype = WTYPES[dtype_name]
        if wtype.feature is not None and wtype.feature not in self.features:
            raise UnsupportedDtypeError(
                f"webgpu: {op}: dtype {dtype_name} needs the '{wtype.feature}' feature, which "
                f"adapter {self.label} does not have; use device 'cpu' for {dtype_name} tensors"
            )
        return wtype

    def check_binding(self, nbytes: int, op: str) -> None:
        """Refuse a tensor larger than one storage binding may be."""
        if nbytes > self.max_binding:
            raise BackendLimitError(
                f"webgpu: {op}: a tensor of {nbytes} bytes exceeds adapter {self.label}'s "
                f"max_storage_buffer_binding_size of {self.max_binding} bytes; split it or use "
                "device 'cpu'"
            )

    def check_alive(self) -> None:
        if self.lost_reason is not None:
            raise self.mark_lost(self.lost_reason)

    def mark_lost(self, reason: str) -> DeviceLostError:
        """Record a device loss (once) and return the error to raise."""
        if self.lost_reason is None:
            self.lost_reason = reason
            for callback in self.on_lost:
                with contextlib.suppress(Exception):  # a failing observer must not hide the loss
                    callback()
        return DeviceLostError(
            f"webgpu: the device on adapter {self.label} was lost ({self.lost_reason}); its "
            "tensors are gone. New tensors go to a fresh device (or 'cpu' if none can start)"
        )

    def failure(self, exc: BaseException, doing: str) -> BackendError:
        """The typed error for a wgpu exception raised while ``doing`` something: a lost device
        (wgpu says "lost" or "destroyed") or a backend failure naming the adapter."""
        text = f"{type(exc).__name__}: {exc}"
        lowered = text.lower()
        if self.lost_reason is not None or "lost" in lowered or "destroyed" in lowered:
            return self.mark_lost(" ".join(text.split())[:300])
        return BackendError(f"webgpu: {doing} failed on adapter {self.label}: {text}")
