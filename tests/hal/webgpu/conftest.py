"""Fixtures of the WebGPU backend's own tests: the shared backend, and private instances
registered under throwaway names (so that breaking one, e.g. losing its device, leaves the
shared "webgpu" backend alone)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ipfs_accelerate import hal
from ipfs_accelerate.errors import BackendUnavailableError

_names = itertools.count()


@pytest.fixture(scope="session")
def gpu(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The registered "webgpu" backend (lavapipe in CI); skipped where it cannot start unless
    IPFS_ACCELERATE_REQUIRE_WEBGPU=1. Its matmul tuning goes to a session directory, not the
    user's cache."""
    try:
        backend = hal.get_backend("webgpu", fallback=False)
    except BackendUnavailableError as exc:
        if os.environ.get("IPFS_ACCELERATE_REQUIRE_WEBGPU") == "1":
            pytest.fail(f"webgpu is required here but cannot start: {exc}")
        pytest.skip(str(exc))
    from ipfs_accelerate.hal.webgpu._tuning import Tuner

    if backend._tuner is None:
        backend._tuner = Tuner(
            backend.dispatcher, tmp_path_factory.mktemp("tuning") / "webgpu_tuning.json"
        )
    return backend


@pytest.fixture
def private_backend(gpu: Any) -> Iterator[Callable[..., tuple[str, Any]]]:
    """Start a WebGPUBackend(**kwargs) registered under a fresh name; returns (name, backend)."""
    from ipfs_accelerate.hal.webgpu import WebGPUBackend

    registered: list[str] = []

    def start(**kwargs: Any) -> tuple[str, Any]:
        name = f"webgpu_test_{next(_names)}"
        hal.register_backend(name, lambda: WebGPUBackend(**kwargs), fallback="cpu")
        registered.append(name)
        return name, hal.get_backend(name, fallback=False)

    yield start
    for name in registered:
        hal.unregister_backend(name)
