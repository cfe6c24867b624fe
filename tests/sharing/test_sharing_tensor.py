"""SharedTensor and SharedTensorView: holds, pins, zero-copy views, copy_to."""

from __future__ import annotations

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import hal
from ipfs_accelerate.errors import (
    BackendUnavailableError,
    DtypeError,
    InvalidArgumentError,
    ShapeError,
    SharingError,
    UnknownBackendError,
    ViewBoundsError,
)
from ipfs_accelerate.sharing import SharedTensor, SharedTensorView, TensorSharingManager, content_id


def test_holds_real_zeroed_data_on_its_backend() -> None:
    t = SharedTensor("emb", [2, 768], dtype="float16", producer_model="bert")
    assert isinstance(t.data, ia.Tensor)
    assert t.data.shape == (2, 768) and t.shape == (2, 768)
    assert t.data.dtype == "float16" and t.dtype == "float16"
    assert t.data.device == "cpu" and t.storage_type == "cpu"
    assert not t.data.numpy().any()
    assert t.get_memory_usage() == 2 * 768 * 2 == t.data.nbytes
    assert t.reference_count == 0  # the constructor holds nothing, not even for the producer
    assert "emb" in repr(t) and "float16" in repr(t)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "uint8", "bool"])
def test_memory_usage_follows_dtype(dtype: str) -> None:
    t = SharedTensor("x", (3, 5), dtype=dtype)
    assert t.get_memory_usage() == 15 * np.dtype(dtype).itemsize


def test_acquire_release_are_counted_per_model() -> None:
    t = SharedTensor("w", (4,))
    assert t.acquire("bert") and t.acquire("bert") and t.acquire("vit")
    assert t.reference_count == 3
    assert t.holders == {"bert": 2, "vit": 1}
    assert t.release("bert") is True
    assert t.reference_count == 2 and t.holders == {"bert": 1, "vit": 1}
    assert t.release("bert") is True
    assert t.release("bert") is False  # bert holds nothing any more: nothing changes
    assert t.release("never-acquired") is False
    assert t.reference_count == 1 and t.consumer_models == frozenset({"vit"})
    assert t.release("vit") is True
    assert t.reference_count == 0 and t.holders == {}


def test_can_be_freed_respects_holds_and_pins() -> None:
    t = SharedTensor("w", (4,))
    assert t.can_be_freed()
    t.acquire("m")
    assert not t.can_be_freed()
    t.release("m")
    assert t.can_be_freed()
    t.pin()
    assert t.is_pinned and not t.can_be_freed()
    t.unpin()
    assert t.can_be_freed()


def _parent() -> SharedTensor:
    return SharedTensor("p", (4, 6), data=ia.tensor(np.arange(24, dtype=np.float32).reshape(4, 6)))


def test_flat_view_is_zero_copy_both_ways() -> None:
    parent = _parent()
    view = parent.create_view("v", 5, 8)
    assert isinstance(view, SharedTensorView)
    assert view.shape == (8,) and view.data.shape == (8,)
    np.testing.assert_array_equal(view.data.numpy(), np.arange(5, 13, dtype=np.float32))
    assert np.shares_memory(view.data.numpy(), parent.data.numpy())
    parent.data[1, 0] = -1.0  # element 6 of the flattened parent, element 1 of the view
    assert view.data.numpy()[1] == -1.0
    view.data[0] = 99.0  # and a write through the view lands in the parent
    assert parent.data.numpy()[0, 5] == 99.0
    assert view.get_memory_usage() == 0
    assert view.dtype == "float32" and view.storage_type == "cpu"


def test_box_view_takes_one_offset_and_size_per_dimension() -> None:
    parent = _parent()
    view = parent.create_view("box", [1, 2], [2, 3])
    expected = np.arange(24, dtype=np.float32).reshape(4, 6)[1:3, 2:5]
    np.testing.assert_array_equal(view.data.numpy(), expected)
    assert np.shares_memory(view.data.numpy(), parent.data.numpy())
    parent.data[2, 4] = 1000.0
    assert view.data.numpy()[1, 2] == 1000.0
    whole = parent.create_view("whole", (0, 0), (4, 6))
    np.testing.assert_array_equal(whole.data.numpy(), parent.data.numpy())


@pytest.mark.parametrize(
    ("offset", "size", "fragment"),
    [
        (20, 5, "elements [20, 25) lie outside the parent's 24 elements"),
        (-1, 2, "elements [-1, 1)"),
        (0, 0, "1 <= size"),
        (24, 1, "offset + size <= 24"),
        ([0, 4], [4, 3], "along axis 1 the range [4, 7) lies outside [0, 6)"),
        ([3, 0], [2, 1], "along axis 0 the range [3, 5) lies outside [0, 4)"),
        ([0, 0], [0, 1], "along axis 0 the range [0, 0)"),
    ],
)
def test_view_outside_its_parent_names_the_bounds(
    offset: object, size: object, fragment: str
) -> None:
    parent = _parent()
    with pytest.raises(ViewBoundsError) as info:
        parent.create_view("bad", offset, size)  # type: ignore[arg-type]
    message = str(info.value)
    assert fragment in message
    assert "'bad'" in message and "'p'" in message and "(4, 6)" in message
    assert isinstance(info.value, ValueError)  # catchable as the built-in too


@pytest.mark.parametrize(
    ("offset", "size", "fragment"),
    [
        ([0], [1], "one entry per dimension of the parent (2)"),
        (0, [1, 1], "both be ints"),
        ([0, 0.5], [1, 1], "must hold ints"),
        ("0", "1", "both be ints"),
        (True, 1, "both be ints"),
    ],
)
def test_malformed_view_arguments(offset: object, size: object, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        _parent().create_view("bad", offset, size)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_duplicate_view_name_is_refused() -> None:
    parent = _parent()
    parent.create_view("v", 0, 2)
    with pytest.raises(SharingError, match="already has a view named 'v'"):
        parent.create_view("v", 2, 2)


def test_acquiring_a_view_holds_its_parent() -> None:
    parent = _parent()
    view = parent.create_view("v", 0, 6)
    view.acquire("t5")
    assert view.reference_count == 1
    assert parent.reference_count == 1 and parent.consumer_models == frozenset({"t5"})
    assert not parent.can_be_freed()
    assert parent.release("t5") is False  # t5 holds the view, not the parent itself
    assert view.release("t5") is True
    assert parent.reference_count == 0 and parent.can_be_freed()
    assert view.release("t5") is False


def test_a_pinned_view_keeps_its_parent() -> None:
    parent = _parent()
    view = parent.create_view("v", 0, 6)
    view.pin()
    assert not view.can_be_freed() and not parent.can_be_freed()
    view.unpin()
    assert view.can_be_freed() and parent.can_be_freed()


def test_existing_data_is_held_without_a_copy() -> None:
    array = np.arange(6, dtype=np.float32)
    t = SharedTensor("w", (6,), data=array)
    assert np.shares_memory(t.data.numpy(), array)
    tensor = ia.tensor(array)
    assert SharedTensor("w", (6,), data=tensor).data is tensor


def test_strided_data_is_stored_row_major() -> None:
    base = ia.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    t = SharedTensor("w", (3, 2), data=base.T)
    np.testing.assert_array_equal(t.data.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3).T)
    assert t.data.numpy().flags.c_contiguous
    view = t.create_view("v", 1, 4)  # flat views index the row-major order
    np.testing.assert_array_equal(view.data.numpy(), [3.0, 1.0, 4.0, 2.0])


def test_copy_to_moves_the_data_to_another_backend(cpu2: str) -> None:
    source = _parent()
    source.content_id = content_id(source.data)
    source.acquire("bert")
    copy = source.copy_to(cpu2)
    assert copy.name == "p_cpu2"
    assert copy.storage_type == "cpu2" and copy.data.device == "cpu2"
    assert copy.data.backend is hal.get_backend("cpu2")
    np.testing.assert_array_equal(copy.data.numpy(), source.data.numpy())
    assert not np.shares_memory(copy.data._data, source.data._data)  # a real, separate copy
    source.data[0, 0] = 123.0
    assert copy.data.numpy()[0, 0] == 0.0
    assert copy.content_id == source.content_id  # same bytes, same id
    assert copy.reference_count == 0  # holds stay with the original
    back = copy.copy_to("cpu", name="roundtrip")
    assert back.name == "roundtrip" and back.data.device == "cpu"
    np.testing.assert_array_equal(back.data.numpy(), copy.data.numpy())


def test_copy_to_the_same_backend_is_an_independent_clone() -> None:
    source = _parent()
    copy = source.copy_to("cpu")
    assert copy.data.device == "cpu"
    assert not np.shares_memory(copy.data.numpy(), source.data.numpy())


def test_copy_to_unknown_or_unavailable_backend_raises(broken_backend: str) -> None:
    source = _parent()
    with pytest.raises(UnknownBackendError, match="'tpu'"):
        source.copy_to("tpu")
    # never falls back silently: data asked for on "gone" must not quietly stay on the CPU
    with pytest.raises(BackendUnavailableError, match="no such device in this test"):
        source.copy_to(broken_backend)


def test_tensor_allocated_on_another_backend(cpu2: str) -> None:
    t = SharedTensor("w", (3,), storage_type=cpu2)
    assert t.data.device == "cpu2"
    moved = SharedTensor("m", (2,), storage_type=cpu2, data=ia.tensor([1.0, 2.0]))
    assert moved.data.device == "cpu2"
    np.testing.assert_array_equal(moved.data.numpy(), [1.0, 2.0])


def test_bad_constructor_arguments() -> None:
    with pytest.raises(DtypeError, match="unsupported dtype 'complex64'"):
        SharedTensor("w", (2,), dtype="complex64")
    with pytest.raises(UnknownBackendError, match="unknown backend 'gpu'"):
        SharedTensor("w", (2,), storage_type="gpu")
    with pytest.raises(ShapeError, match="negative dimension -2"):
        SharedTensor("w", (3, -2))
    with pytest.raises(InvalidArgumentError, match="name must be a non-empty string"):
        SharedTensor("", (2,))
    with pytest.raises(ShapeError, match=r"data has shape \(3,\) but shape \(2,\) was given"):
        SharedTensor("w", (2,), data=np.zeros(3, dtype=np.float32))
    with pytest.raises(DtypeError, match="data has dtype float64 but dtype='float32'"):
        SharedTensor("w", (2,), data=np.zeros(2))
    with pytest.raises(InvalidArgumentError, match="model name must be a non-empty string"):
        SharedTensor("w", (2,)).acquire("")


def test_freed_tensor_and_its_views_refuse_use() -> None:
    manager = TensorSharingManager()
    t = manager.register_shared_tensor("w", (4,))
    view = manager.create_tensor_view("w", "v", 0, 2)
    manager.optimize_memory_usage()
    assert t.is_freed and view.is_freed and t.get_memory_usage() == 0
    with pytest.raises(SharingError, match=r"'w' was freed \(freed by optimize_memory_usage\(\)\)"):
        _ = t.data
    with pytest.raises(SharingError, match="'w' was freed"):
        t.acquire("m")
    with pytest.raises(SharingError, match="view 'v' was freed"):
        _ = view.data
    with pytest.raises(SharingError, match="view 'v' was freed"):
        view.acquire("m")
    assert t.release("m") is False
