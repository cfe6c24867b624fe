"""Creating tensors: the creation functions, seeded random numbers, dtype inference and
checks, sharing memory with numpy, on every backend."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.errors import DtypeError, InvalidArgumentError, ShapeError, TensorOverflowError
from tests.ops._helpers import assert_close, supported


def test_creation_functions(device: str) -> None:
    dtypes = supported(device)
    assert_close(ia.zeros(2, 3, device=device), np.zeros((2, 3), np.float32))
    if "int32" in dtypes:
        assert_close(ia.ones((4,), dtype="int32", device=device), np.ones(4, np.int32))
    else:
        assert_close(ia.ones(4, device=device), np.ones(4, np.float32))
    has_int64 = "int64" in dtypes
    sevens = np.full((2, 2), 7, np.int64) if has_int64 else np.full((2, 2), 7)
    assert_close(ia.full((2, 2), 7, device=device), sevens, check_dtype=has_int64)
    assert_close(ia.full((2,), 2.5, device=device), np.full(2, 2.5, np.float32))
    assert_close(ia.arange(5, device=device).astype("float32"), np.arange(5, dtype=np.float32))
    assert_close(
        ia.arange(1.0, 2.0, 0.25, device=device), np.arange(1.0, 2.0, 0.25).astype(np.float32)
    )
    assert_close(
        ia.arange(5, 0, -2, device=device).astype("float32"),
        np.arange(5, 0, -2).astype(np.float32),
    )
    z = ia.zeros(2, 3, device=device)
    assert_close(ia.zeros_like(z), np.zeros((2, 3), np.float32))
    assert_close(ia.ones_like(z), np.ones((2, 3), np.float32))
    assert_close(ia.full_like(z, 3.0), np.full((2, 3), 3.0, np.float32))


def test_random_is_seeded_and_identical_across_backends(device: str) -> None:
    a = ia.rand(3, 4, seed=7, device=device).numpy()
    b = ia.rand(3, 4, seed=7, device="cpu").numpy()
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and (a >= 0).all() and (a < 1).all()
    c = ia.rand((1000,), low=-2.0, high=-1.0, seed=1, device=device).numpy()
    assert (c >= -2).all() and (c < -1).all()
    n1 = ia.randn(500, seed=3, device=device).numpy()
    n2 = ia.randn(500, seed=3, device="cpu").numpy()
    np.testing.assert_array_equal(n1, n2)
    assert abs(float(n1.mean())) < 0.2 and 0.8 < float(n1.std()) < 1.2
    assert not np.array_equal(ia.rand(10, seed=1).numpy(), ia.rand(10, seed=2).numpy())


def test_tensor_creation_infers_and_checks_dtypes() -> None:
    assert ia.tensor([1.0, 2.0]).dtype == "float32"
    assert ia.tensor([1, 2]).dtype == "int64"
    assert ia.tensor([True]).dtype == ia.bool_
    assert ia.tensor(np.array([1, 2], dtype=np.float64)).dtype == ia.float64
    assert ia.tensor(3.5).shape == ()
    with pytest.raises(TensorOverflowError, match=r"300.*uint8"):
        ia.tensor([1, 300], dtype="uint8")
    with pytest.raises(DtypeError, match="truncate"):
        ia.tensor([1.5], dtype="int32")
    with pytest.raises(TensorOverflowError):
        ia.tensor([1e300])
    with pytest.raises(InvalidArgumentError, match="ragged"):
        ia.tensor([[1, 2], [3]])
    with pytest.raises(DtypeError, match="unsupported dtype 'int7'"):
        ia.zeros(2, dtype="int7")
    with pytest.raises(DtypeError, match="complex128"):
        ia.from_numpy(np.zeros(2, dtype=np.complex128))
    with pytest.raises(ShapeError, match="negative"):
        ia.zeros(-1)


def test_from_numpy_shares_memory_and_copy_does_not() -> None:
    array = np.zeros(3, dtype=np.float32)
    shared = ia.from_numpy(array)
    copied = ia.tensor(array)
    array[0] = 5
    assert shared.numpy()[0] == 5
    assert copied.numpy()[0] == 0


def test_tensor_module_and_function_are_one_name() -> None:
    # a fresh interpreter: which of the two imports comes first must not matter
    code = (
        "import ipfs_accelerate.tensor as m\n"
        "import ipfs_accelerate as ia\n"
        "from ipfs_accelerate.tensor import Tensor\n"
        "print(type(ia.tensor([1.0])).__name__, m is ia.tensor)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert out.split() == ["Tensor", "True"]
