"""The tensor size bound: creation and ops refuse a tensor over ``hal.max_tensor_bytes()``
with TensorTooLargeError naming the size, before anything is allocated, on every backend."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops
from ipfs_accelerate.errors import ConfigurationError, InvalidArgumentError, TensorTooLargeError

HUGE = (10**6, 10**6)

CREATIONS: dict[str, Callable[[str], Any]] = {
    "zeros": lambda d: ia.zeros(HUGE, device=d),
    "ones": lambda d: ia.ones(*HUGE, device=d),
    "full": lambda d: ia.full(HUGE, 3.0, device=d),
    "rand": lambda d: ia.rand(*HUGE, seed=0, device=d),
    "randn": lambda d: ia.randn(HUGE, seed=0, device=d),
    "arange": lambda d: ia.arange(10**13, device=d),
    "arange-float": lambda d: ia.arange(0.0, 1e300, 1e-300, device=d),
}


@pytest.fixture
def small_bound() -> Iterator[int]:
    hal.set_max_tensor_bytes(1 << 20)
    yield 1 << 20
    hal.set_max_tensor_bytes(None)


@pytest.mark.parametrize("name", sorted(CREATIONS))
def test_huge_creation_is_a_typed_error_naming_the_size(device: str, name: str) -> None:
    with pytest.raises(TensorTooLargeError) as info:
        CREATIONS[name](device)
    message = str(info.value)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, InvalidArgumentError)
    if name != "arange-float":
        assert "over the limit" in message and device in message
        assert str(hal.max_tensor_bytes()) in message


def test_ia_zeros_of_a_million_squared_names_shape_and_bytes() -> None:
    with pytest.raises(TensorTooLargeError, match=r"\(1000000, 1000000\).*4000000000000 bytes"):
        ia.zeros((10**6, 10**6))


def test_like_creation_is_bounded_too(device: str, small_bound: int) -> None:
    as_bytes = ia.zeros(small_bound // 2, dtype="uint8", device=device)  # 512 KiB
    assert ia.ones_like(as_bytes).shape == (small_bound // 2,)
    with pytest.raises(TensorTooLargeError, match="float32"):  # 2 MiB as float32
        ia.zeros_like(as_bytes, dtype="float32")
    with pytest.raises(TensorTooLargeError):
        ia.full_like(as_bytes, 1.5, dtype="float32")


def test_op_results_are_bounded(device: str, small_bound: int) -> None:
    column = ia.ones((1024, 1), device=device)
    row = ia.ones((1, 1024), device=device)
    with pytest.raises(TensorTooLargeError, match="1024, 1024"):  # 4 MiB result
        ops.broadcast_to(column, (1024, 1024))
    with pytest.raises(TensorTooLargeError):
        column @ row
    with pytest.raises(TensorTooLargeError):
        column + row
    assert (column[:256] + row[:, :256]).shape == (256, 256)  # 256 KiB: fine


def test_the_bound_is_exact_and_resettable(small_bound: int) -> None:
    assert ia.zeros(small_bound // 4).shape == (small_bound // 4,)  # exactly the bound
    with pytest.raises(TensorTooLargeError):
        ia.zeros(small_bound // 4 + 1)
    assert ia.zeros(small_bound, dtype="uint8").shape == (small_bound,)
    hal.set_max_tensor_bytes(None)
    assert hal.max_tensor_bytes() > small_bound


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_a_bad_bound_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError):
        hal.set_max_tensor_bytes(bad)


def test_the_environment_variable_sets_the_default() -> None:
    code = (
        "import ipfs_accelerate as ia\n"
        "from ipfs_accelerate import hal\n"
        "assert hal.max_tensor_bytes() == 4096, hal.max_tensor_bytes()\n"
        "ia.zeros(1024)\n"
        "try:\n    ia.zeros(1025)\nexcept MemoryError as exc:\n    print(type(exc).__name__)\n"
    )
    env = {"IPFS_ACCELERATE_MAX_TENSOR_BYTES": "4096", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "TensorTooLargeError"


def test_a_bad_environment_variable_is_a_configuration_error() -> None:
    code = "import ipfs_accelerate as ia\nia.zeros(1)\n"
    env = {"IPFS_ACCELERATE_MAX_TENSOR_BYTES": "lots", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ConfigurationError" in out.stderr and "IPFS_ACCELERATE_MAX_TENSOR_BYTES" in out.stderr
