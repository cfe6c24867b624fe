"""The adapter as the HAL sees it: reporting, selection, dtypes by feature, limits, loss."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops
from ipfs_accelerate.errors import (
    BackendFallbackWarning,
    BackendLimitError,
    BackendUnavailableError,
    DeviceLostError,
    DeviceMismatchError,
    UnsupportedDtypeError,
)


def test_info_reports_the_adapter(gpu: Any) -> None:
    info = gpu.info()
    adapter = dict(gpu.device.adapter.info)
    assert info.name == "webgpu" and info.available
    assert info.device_name == adapter["device"]
    assert info.api == adapter["backend_type"] and info.api in {
        "Vulkan",
        "Metal",
        "D3D12",
        "OpenGL",
    }
    expected_type = {"CPU": "cpu", "DiscreteGPU": "discrete", "IntegratedGPU": "integrated"}.get(
        adapter["adapter_type"]
    )
    if expected_type is not None:
        assert info.adapter_type == expected_type
    assert info.limits["max-storage-buffer-binding-size"] == gpu.device.max_binding > 0
    assert "max-compute-workgroup-size-x" in info.limits
    assert set(info.features) <= set(gpu.device.adapter.features)
    assert {"float32", "int32", "uint8", "bool"} <= set(info.dtypes)
    assert ("float16" in info.dtypes) == ("shader-f16" in info.features)
    assert ("float64" in info.dtypes) == ("shader-f64" in info.features)
    assert ("int64" in info.dtypes) == ("shader-int64" in info.features)
    listed = {i.name: i for i in hal.available_backends()}
    assert listed["webgpu"].device_name == info.device_name
    assert info.as_dict()["adapter_type"] == info.adapter_type


def test_select_backend_never_picks_a_software_adapter(
    gpu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IPFS_ACCELERATE_DEVICE", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackendFallbackWarning)
        choice = hal.select_backend()
    if gpu.info().adapter_type == "cpu":
        assert choice.name == "cpu"
        assert "software" in choice.reason and gpu.info().device_name in choice.reason
    else:
        assert choice.name == "webgpu"
    assert hal.select_backend(prefer="webgpu").name == "webgpu"


def test_dtypes_follow_adapter_features(private_backend: Any) -> None:
    name, small = private_backend(disabled_features=["shader-f64", "shader-int64", "shader-f16"])
    held = {d.name for d in small.supported_dtypes}
    assert held == {"float32", "int32", "int8", "uint8", "bool"}  # int8 needs no feature (i32)
    with pytest.raises(
        UnsupportedDtypeError,
        match=r"float64 needs the 'shader-f64' feature.*adapter .*use device 'cpu'",
    ):
        ia.tensor(np.ones(2), device=name)
    with pytest.raises(UnsupportedDtypeError, match="int64.*shader-int64"):
        ia.tensor([1, 2], device=name)  # Python ints default to int64
    x = ia.tensor(np.arange(4, dtype=np.int32), device=name)
    with pytest.raises(UnsupportedDtypeError, match="int64"):
        ops.sum(x)  # integer sums accumulate in int64
    with pytest.raises(UnsupportedDtypeError, match="float16"):
        x.astype("float16")
    # what the adapter holds still works
    np.testing.assert_array_equal((x * 3).numpy(), np.arange(4, dtype=np.int32) * 3)
    assert float(ops.sum(ia.tensor(np.ones(5, np.float32), device=name)).item()) == 5.0


def test_tensors_beyond_the_binding_limit_are_refused(private_backend: Any) -> None:
    name, backend = private_backend()
    backend.device.max_binding = 1024  # play an adapter with 1 KiB bindings
    small = ia.tensor(np.ones(256, np.float32), device=name)
    assert float(ops.sum(small).item()) == 256.0
    with pytest.raises(
        BackendLimitError,
        match=r"1028 bytes exceeds adapter .* max_storage_buffer_binding_size of 1024",
    ):
        ia.tensor(np.ones(257, np.float32), device=name)
    with pytest.raises(BackendLimitError, match="concat"):
        ops.concat([small, small])


def test_no_adapter_falls_back_to_cpu_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, gpu: Any
) -> None:
    import wgpu

    from ipfs_accelerate.hal.webgpu import WebGPUBackend

    monkeypatch.setattr(wgpu.gpu, "request_adapter_sync", lambda **kwargs: None)
    hal.register_backend("webgpu_missing", WebGPUBackend, fallback="cpu")
    try:
        with pytest.warns(
            BackendFallbackWarning,
            match=r"'webgpu_missing' is unavailable: webgpu: no WebGPU adapter found"
            r".*falling back to 'cpu'",
        ):
            t = ia.zeros(3, device="webgpu_missing")
        assert t.device == "cpu"
        with pytest.raises(BackendUnavailableError, match="no WebGPU adapter"):
            hal.get_backend("webgpu_missing", fallback=False)
    finally:
        hal.unregister_backend("webgpu_missing")


def test_device_loss_is_a_typed_error_and_the_name_restarts(private_backend: Any) -> None:
    name, backend = private_backend()
    x = ia.tensor(np.arange(4, dtype=np.float32), device=name)
    y = x + 1
    backend.device.device.destroy()
    with pytest.raises(DeviceLostError, match=r"device on adapter .* was lost"):
        y.numpy()
    with pytest.raises(DeviceLostError):
        (x * 2).numpy()
    assert backend.info().available is False and "lost" in (backend.info().reason or "")
    fresh = hal.get_backend(name, fallback=False)
    assert fresh is not backend
    np.testing.assert_array_equal((ia.tensor([1.0, 2.0], device=name) * 2).numpy(), [2.0, 4.0])


def test_mixing_with_cpu_needs_to(gpu: Any) -> None:
    a = ia.ones(3, device="webgpu")
    with pytest.raises(
        DeviceMismatchError, match=r"add: operands are on different devices \(cpu, webgpu\)"
    ):
        a + ia.ones(3)
    np.testing.assert_array_equal((a + ia.ones(3).to("webgpu")).numpy(), [2, 2, 2])
