"""The Tensor class: numpy/DLPack interop, pickling, moving between devices, item assignment
and views that share memory."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.errors import (
    DtypeError,
    InvalidArgumentError,
    ShapeError,
    TensorOverflowError,
    UnsupportedOpError,
)
from tests.ops._helpers import assert_close, on


def test_interop_protocols() -> None:
    t = ia.tensor([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(np.asarray(t), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(np.from_dlpack(t), [[1, 2], [3, 4]])
    import torch

    np.testing.assert_array_equal(torch.from_dlpack(t).numpy(), [[1, 2], [3, 4]])
    assert "dtype=float32" in repr(t) and "device='cpu'" in repr(t)
    assert str(t) == "[[1. 2.]\n [3. 4.]] (float32 on cpu)" and f"{t}" == str(t)
    assert str(ia.tensor([1, 2], dtype="int32")).endswith("(int32 on cpu)")
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert float(t[1, 1]) == 4.0 and t[0, 0].item() == 1.0
    assert len(t) == 2 and [r.shape for r in t] == [(2,), (2,)]
    assert (t.size, t.ndim, t.nbytes) == (4, 2, 16)
    with pytest.raises(InvalidArgumentError, match="ambiguous"):
        bool(t)
    assert bool(t[0, 0] == 1.0)


def test_pickle_round_trip() -> None:
    t = ia.tensor([1, 2, 3], dtype="int32")
    back = pickle.loads(pickle.dumps(t))
    assert back.dtype == "int32" and back.tolist() == [1, 2, 3] and back.device == "cpu"


def test_to_device_and_clone(device: str) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = on(device, x)
    host = t.to("cpu")
    assert host.device == "cpu"
    assert_close(host, x)
    back = host.to(device)
    assert back.device == device
    assert_close(back, x)
    c = t.clone()
    assert c is not t
    assert_close(c, x)
    assert t.to(device) is t


def test_setitem_on_cpu_and_views_share_memory() -> None:
    t = ia.zeros(3, 4)
    view = t[1:, ::2]
    t[1:, ::2] = ia.tensor([[1.0, 2.0], [3.0, 4.0]])
    t[0, 1] = 7
    expected = np.zeros((3, 4), dtype=np.float32)
    expected[1:, ::2] = [[1, 2], [3, 4]]
    expected[0, 1] = 7
    assert_close(t, expected)
    assert_close(view, expected[1:, ::2])  # the view sees the write through its parent
    with pytest.raises(DtypeError, match="truncate"):
        ia.zeros(2, dtype="int32")[0] = 1.5
    with pytest.raises(TensorOverflowError, match="uint8"):
        ia.zeros(2, dtype="uint8")[0] = 256
    with pytest.raises(ShapeError, match="broadcast"):
        t[0] = ia.ones(3)


def test_setitem_off_cpu_is_refused_with_advice(device: str) -> None:
    if device == "cpu":
        pytest.skip("item assignment is supported on cpu")
    with pytest.raises(UnsupportedOpError, match="to\\('cpu'\\)"):
        ia.zeros(3, device=device)[0] = 1.0
