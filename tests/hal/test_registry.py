"""The hardware abstraction layer: registry, discovery, selection, fallback, device checks."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops
from ipfs_accelerate.errors import (
    BackendFallbackWarning,
    BackendUnavailableError,
    DeviceMismatchError,
    UnknownBackendError,
    UnsupportedOpError,
)
from ipfs_accelerate.hal.cpu import CPUBackend


class SecondCPU(CPUBackend):
    """A second numpy backend: a distinct device for mixing and transfer tests."""

    name: ClassVar[str] = "cpu2"


class NoMatmulCPU(CPUBackend):
    """A backend that lacks matmul and fused ops: the op layer must fall back for matmul only."""

    name: ClassVar[str] = "nomatmul"
    fused: ClassVar[frozenset[str]] = frozenset()
    calls: ClassVar[list[str]] = []

    def matmul(self, a: Any, b: Any, out_shape: Any) -> Any:
        raise UnsupportedOpError("nomatmul: matmul is not implemented")

    def binary(self, op: str, a: Any, b: Any, out_shape: Any) -> Any:
        self.calls.append(op)
        return super().binary(op, a, b, out_shape)


def _broken() -> hal.Backend:
    raise RuntimeError("no adapter found (simulated)")


@pytest.fixture
def extra_backends() -> Iterator[None]:
    hal.register_backend("cpu2", SecondCPU)
    hal.register_backend("nomatmul", NoMatmulCPU)
    hal.register_backend("broken", _broken, fallback="cpu")
    hal.register_backend("broken_strict", _broken, fallback=None)
    yield
    for name in ("cpu2", "nomatmul", "broken", "broken_strict"):
        hal.unregister_backend(name)


def test_cpu_backend_reports_itself() -> None:
    infos = {info.name: info for info in hal.available_backends()}
    cpu = infos["cpu"]
    assert cpu.available and cpu.adapter_type == "cpu" and cpu.api == "numpy"
    assert set(cpu.dtypes) == {
        "float16", "float32", "float64", "int32", "int64", "int8", "uint8", "bool"
    }  # fmt: skip
    assert cpu.memory_bytes and cpu.memory_bytes > 0
    assert cpu.device_name
    assert cpu.as_dict()["name"] == "cpu"


def test_unknown_backend_is_a_typed_error_listing_the_known_ones() -> None:
    with pytest.raises(
        UnknownBackendError, match=r"unknown backend 'tpu'; registered backends: cpu, webgpu, webnn"
    ):
        hal.get_backend("tpu")
    with pytest.raises(UnknownBackendError):
        ia.zeros(2, device="tpu")


def test_backend_that_cannot_start_falls_back_with_a_warning(extra_backends: None) -> None:
    with pytest.warns(
        BackendFallbackWarning,
        match=r"'broken' is unavailable: RuntimeError: no adapter found .*falling back to 'cpu'",
    ):
        t = ia.zeros(2, device="broken")
    assert t.device == "cpu"
    with pytest.raises(BackendUnavailableError, match="no adapter found"):
        hal.get_backend("broken", fallback=False)
    with pytest.raises(BackendUnavailableError, match="no adapter found"):
        hal.get_backend("broken_strict")
    listed = {i.name: i for i in hal.available_backends(include_unavailable=True)}
    assert not listed["broken"].available and "no adapter found" in (listed["broken"].reason or "")
    assert "broken" not in {i.name for i in hal.available_backends()}


def test_missing_op_falls_back_to_cpu_and_result_returns_to_the_device(
    extra_backends: None,
) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(12, dtype=np.float32).reshape(3, 4)
    ta, tb = ia.tensor(a, device="nomatmul"), ia.tensor(b, device="nomatmul")
    with pytest.warns(
        BackendFallbackWarning,
        match=r"nomatmul: matmul is not implemented; running matmul on 'cpu'",
    ):
        out = ta @ tb
    assert out.device == "nomatmul"
    np.testing.assert_array_equal(out.numpy(), a @ b)
    # linear is not fused on this backend: it composes from matmul (falls back) and add (native)
    NoMatmulCPU.calls.clear()
    with pytest.warns(BackendFallbackWarning):
        y = ops.linear(ta, ia.ones(5, 3, device="nomatmul"), ia.ones(5, device="nomatmul"))
    assert y.device == "nomatmul" and NoMatmulCPU.calls == ["add"]
    np.testing.assert_allclose(y.numpy(), a @ np.ones((3, 5)) + 1)


def test_mixing_devices_without_to_is_refused(extra_backends: None) -> None:
    x, y = ia.ones(3), ia.ones(3, device="cpu2")
    with pytest.raises(
        DeviceMismatchError,
        match=r"add: operands are on different devices \(cpu, cpu2\).*\.to\(device\)",
    ):
        x + y
    with pytest.raises(DeviceMismatchError, match="matmul"):
        ops.matmul(ia.ones(2, 2), ia.ones(2, 2, device="cpu2"))
    with pytest.raises(DeviceMismatchError, match="concat"):
        ops.concat([x, y])
    moved = y.to("cpu")
    assert moved.device == "cpu"
    np.testing.assert_array_equal((x + moved).numpy(), [2, 2, 2])
    y2 = x.to("cpu2")
    y2[0] = 5  # a real copy: the source is untouched
    assert x.numpy()[0] == 1


def test_select_backend_explains_its_choice(
    extra_backends: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IPFS_ACCELERATE_DEVICE", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackendFallbackWarning)
        choice = hal.select_backend()
        assert (
            choice.name in {"cpu", "webgpu"}
            and choice.reason
            and str(choice).startswith(choice.name)
        )
        preferred = hal.select_backend(prefer=["broken", "cpu2"])
        assert preferred.name == "cpu2" and "preferred by the caller" in preferred.reason
        monkeypatch.setenv("IPFS_ACCELERATE_DEVICE", "cpu2")
        assert hal.select_backend(model_type="bert").name == "cpu2"
    with pytest.raises(UnknownBackendError, match="tpu"):
        hal.select_backend(prefer="tpu")


def test_default_device_can_be_set(extra_backends: None) -> None:
    hal.set_default_device("cpu2")
    try:
        assert ia.zeros(1).device == "cpu2"
    finally:
        hal.set_default_device(None)
    assert ia.zeros(1).device == "cpu"
    with pytest.raises(UnknownBackendError):
        hal.set_default_device("tpu")


def test_reset_backend_retries_start(extra_backends: None) -> None:
    with pytest.raises(BackendUnavailableError):
        hal.get_backend("broken", fallback=False)
    hal.register_backend("broken", SecondCPU)  # e.g. a driver appeared
    assert hal.get_backend("broken", fallback=False).name == "cpu2"
    hal.reset_backend("broken")


def test_a_registered_backend_gets_the_op_suite_without_a_test_edit() -> None:
    """tests/conftest.py parametrises ``device`` from the registry, so a backend registered
    before the suite is collected runs the op tests (here one of them) with no test edit."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, pytest\n"
        "from ipfs_accelerate import hal\n"
        "from ipfs_accelerate.hal.cpu import CPUBackend\n"
        "class ExtraCPU(CPUBackend):\n"
        "    name = 'extra-cpu'\n"
        "hal.register_backend('extra-cpu', ExtraCPU, fallback=None)\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-k', 'extra-cpu',\n"
        "                      'tests/ops/test_reduce.py::test_std_is_sqrt_var']))\n"
    )
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
