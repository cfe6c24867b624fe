"""Fixtures for the sharing tests: a second registered backend to move data to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

from ipfs_accelerate import hal
from ipfs_accelerate.hal.cpu import CPUBackend


class DeviceLikeCPU(CPUBackend):
    """A CPU backend that behaves like a device: its memory is its own, so data crossing
    to or from it is copied (what the Backend contract asks of device backends)."""

    name: ClassVar[str] = "cpu2"

    def from_numpy(self, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.array(array, copy=True)

    def to_numpy(self, x: Any) -> np.ndarray[Any, Any]:
        return np.array(x._data, copy=True)


@pytest.fixture
def cpu2() -> Iterator[str]:
    """Register the "cpu2" backend for one test, and unregister it afterwards so that
    available_backends() of other tests is unchanged."""
    hal.register_backend("cpu2", DeviceLikeCPU, fallback=None)
    try:
        yield "cpu2"
    finally:
        hal.unregister_backend("cpu2")


@pytest.fixture
def broken_backend() -> Iterator[str]:
    """A registered backend that cannot start (its factory raises), with a cpu fallback."""

    def factory() -> CPUBackend:
        raise RuntimeError("no such device in this test")

    hal.register_backend("gone", factory, fallback="cpu")
    try:
        yield "gone"
    finally:
        hal.unregister_backend("gone")
