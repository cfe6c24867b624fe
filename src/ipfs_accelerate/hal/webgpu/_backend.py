"""The WebGPU backend: the op families (``_ops_*``) composed over one dispatcher.

The backend itself only opens the device, answers the contract's identity and host-transfer
methods, and wires the dispatcher to the fuser and the tuner; each op family records its
kernels through the dispatcher's public methods.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from ipfs_accelerate.hal._backend import BackendInfo
from ipfs_accelerate.hal.webgpu._device import REPORTED_LIMITS, Device
from ipfs_accelerate.hal.webgpu._dispatcher import Dispatcher
from ipfs_accelerate.hal.webgpu._fusion import Fuser
from ipfs_accelerate.hal.webgpu._memory import GPUArray
from ipfs_accelerate.hal.webgpu._ops_conv import ConvOps
from ipfs_accelerate.hal.webgpu._ops_elementwise import ElementwiseOps
from ipfs_accelerate.hal.webgpu._ops_layout import LayoutOps
from ipfs_accelerate.hal.webgpu._ops_matmul import MatmulOps
from ipfs_accelerate.hal.webgpu._ops_reduce import ReduceOps
from ipfs_accelerate.hal.webgpu._profiling import ProfileReport
from ipfs_accelerate.tensor._dtype import DType, as_dtype, from_numpy_dtype
from ipfs_accelerate.tensor._tensor import Tensor


class WebGPUBackend(ElementwiseOps, LayoutOps, ReduceOps, MatmulOps, ConvOps):
    """WGSL compute kernels on a WebGPU adapter (Vulkan, Metal or D3D12 through wgpu-py).

    ``power_preference`` picks the adapter ("high-performance" or "low-power");
    ``disabled_features`` hides adapter features (to try the dtype errors of a smaller
    adapter); ``tuning_cache`` is the file recording the per-adapter kernel choices
    (default ``~/.cache/ipfs_accelerate/webgpu_tuning.json`` or $IPFS_ACCELERATE_CACHE_DIR).
    """

    name: ClassVar[str] = "webgpu"
    fused: ClassVar[frozenset[str]] = frozenset(
        {"softmax", "layer_norm", "linear", "attention", "clamp", "quantized_linear"}
    )
    shares_host_memory: ClassVar[bool] = False

    def __init__(
        self,
        power_preference: str | None = None,
        *,
        disabled_features: Sequence[str] = (),
        tuning_cache: str | None = None,
    ) -> None:
        dev = Device(power_preference, disabled_features)
        self._dispatch = Dispatcher(dev)
        fusion_off = os.environ.get("IPFS_ACCELERATE_WEBGPU_FUSION", "1") == "0"
        self._fuser = None if fusion_off else Fuser(self._dispatch)
        self._fast = {}
        self._dtypes = frozenset(as_dtype(name) for name in dev.dtypes)
        self._tuning_cache = tuning_cache
        self._tuner = None
        self._fusable = None
        self._fusable_info = None
        dev.on_lost.append(self._leave_registry)

    def _leave_registry(self) -> None:
        """After a device loss, the registry forgets this instance: the next use of its name
        starts a fresh device, or falls back (with a warning) if none can start."""
        from ipfs_accelerate.hal._registry import forget_instance

        forget_instance(self)

    # ------------------------------------------------------------------ identity

    def info(self) -> BackendInfo:
        dev = self._dispatch.device
        return BackendInfo(
            name=self.name,
            available=dev.lost_reason is None,
            device_name=dev.device_name,
            vendor=dev.vendor,
            adapter_type=dev.adapter_type,
            api=dev.api,
            memory_bytes=None,
            max_buffer_bytes=self._dispatch.max_buffer_bytes,
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
        return self._dispatch.device

    @property
    def dispatcher(self) -> Dispatcher:
        """The buffer pool, recorder and kernel caches every op of this backend goes through."""
        return self._dispatch

    def stats(self) -> dict[str, int]:
        """Instrumentation counters: submits, readbacks, dispatches, pipelines compiled, bind
        groups created, buffers created, bytes allocated/in use/cached."""
        return self._dispatch.stats()

    def memory_in_use(self) -> int | None:
        return self._dispatch.pool.in_use_bytes

    def synchronize(self) -> None:
        """Submit the open batch and wait for the device (raises pending kernel errors)."""
        self._dispatch.synchronize()

    def trim(self) -> int:
        """Give cached free buffers back to the driver; returns the bytes freed."""
        return self._dispatch.trim()

    @contextlib.contextmanager
    def profile(self) -> Iterator[ProfileReport]:
        """Time every kernel on the GPU (timestamp queries) inside the ``with`` block::

        with backend.profile() as report:
            model(x).numpy()
        print(report.table())
        """
        with self._dispatch.profile() as report:
            yield report

    # ------------------------------------------------------------------ host transfers

    def from_numpy(self, array: np.ndarray[Any, Any]) -> GPUArray:
        dtype = from_numpy_dtype(array.dtype, context="webgpu: from_numpy")
        wtype = self._dispatch.wtype(dtype, "from_numpy")
        return self._dispatch.upload(np.ascontiguousarray(array, dtype=wtype.device_numpy))

    def to_numpy(self, x: Tensor) -> np.ndarray[Any, Any]:
        handle: GPUArray = x._data
        if handle.error is not None:
            raise handle.error
        wtype = self._dispatch.wtype(x.dtype, "to_numpy")
        count = x.size
        if count == 0:
            return np.empty(x.shape, dtype=x.dtype.numpy)
        raw = self._dispatch.download(handle, count * wtype.itemsize)
        array = np.frombuffer(raw, dtype=wtype.device_numpy, count=count)
        if wtype.device_numpy != x.dtype.numpy:
            array = array.astype(x.dtype.numpy)
        return array.reshape(x.shape)


__all__ = ["WebGPUBackend"]
