"""Shape, indexing and data-movement ops against numpy, on every backend (creation, dtypes
and the Tensor class itself: tests/tensor/)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import (
    AxisError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    ShapeError,
)

from ._helpers import ALL_DTYPES, arrays, assert_close, on, shapes, supported


def _any_array(data: st.DataObject, device: str, **shape_kwargs: int) -> np.ndarray:
    dtype = data.draw(st.sampled_from(supported(device, ALL_DTYPES)), label="dtype")
    return data.draw(arrays(dtype, shapes(**shape_kwargs)), label="x")


@given(data=st.data())
def test_reshape_and_flatten(device: str, data: st.DataObject) -> None:
    x = _any_array(data, device)
    dims = list(x.shape)
    data.draw(st.randoms()).shuffle(dims)
    target = tuple(dims)
    assert_close(ops.reshape(on(device, x), target), x.reshape(target), op="reshape")
    if x.size:
        inferred = (-1, *target[1:]) if target else (-1,)
        assert_close(on(device, x).reshape(inferred), x.reshape(inferred), op="reshape -1")
    assert_close(on(device, x).flatten(), x.reshape(-1), op="flatten")


@given(data=st.data())
def test_transpose_permute_swapaxes(device: str, data: st.DataObject) -> None:
    x = _any_array(data, device)
    order = data.draw(st.permutations(range(x.ndim)))
    t = on(device, x)
    assert_close(ops.permute(t, order), np.transpose(x, order), op="permute")
    assert_close(ops.transpose(t), x.T, op="transpose")
    assert_close(t.T, x.T, op="T")
    if x.ndim >= 2:
        assert_close(t.mT, np.swapaxes(x, -1, -2), op="mT")
        a, b = (
            data.draw(st.integers(-x.ndim, x.ndim - 1)),
            data.draw(st.integers(-x.ndim, x.ndim - 1)),
        )
        assert_close(ops.swapaxes(t, a, b), np.swapaxes(x, a, b), op="swapaxes")


@given(data=st.data())
def test_broadcast_to_and_expand(device: str, data: st.DataObject) -> None:
    x = _any_array(data, device, max_dims=3, max_side=3)
    lead = data.draw(st.lists(st.integers(0, 3), max_size=2))
    target = tuple(lead) + tuple(data.draw(st.integers(0, 3)) if d == 1 else d for d in x.shape)
    expected = np.broadcast_to(x, target)
    assert_close(ops.broadcast_to(on(device, x), target), expected, op="broadcast_to")
    torch_style = tuple(lead) + tuple(
        -1 if d != 1 else t for d, t in zip(x.shape, target[len(lead) :], strict=True)
    )
    assert_close(ops.expand(on(device, x), torch_style), expected, op="expand")


@given(data=st.data())
def test_squeeze_unsqueeze(device: str, data: st.DataObject) -> None:
    x = _any_array(data, device, max_dims=3, max_side=2)
    t = on(device, x)
    assert_close(ops.squeeze(t), np.squeeze(x), op="squeeze")
    ones = [i for i, d in enumerate(x.shape) if d == 1]
    if ones:
        axis = data.draw(st.sampled_from(ones))
        assert_close(ops.squeeze(t, axis - x.ndim), np.squeeze(x, axis - x.ndim), op="squeeze axis")
    position = data.draw(st.integers(-(x.ndim + 1), x.ndim))
    assert_close(ops.unsqueeze(t, position), np.expand_dims(x, position), op="unsqueeze")


def test_squeeze_of_a_larger_axis_raises(device: str) -> None:
    with pytest.raises(ShapeError, match="axis 0 .* has size 2"):
        ops.squeeze(ia.zeros(2, 1, device=device), 0)


@given(data=st.data())
def test_concat_stack_split(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(supported(device, ALL_DTYPES)))
    base = data.draw(shapes(min_dims=1, max_dims=3, max_side=3))
    axis = data.draw(st.integers(-len(base), len(base) - 1))
    parts = []
    for _ in range(data.draw(st.integers(1, 3))):
        shape = list(base)
        shape[axis] = data.draw(st.integers(0, 3))
        parts.append(data.draw(arrays(dtype, tuple(shape))))
    joined = np.concatenate(parts, axis=axis)
    assert_close(ops.concat([on(device, p) for p in parts], axis), joined, op="concat")
    same = [data.draw(arrays(dtype, base)) for _ in range(2)]
    stack_axis = data.draw(st.integers(-len(base) - 1, len(base)))
    assert_close(
        ops.stack([on(device, p) for p in same], stack_axis), np.stack(same, stack_axis), op="stack"
    )
    points = sorted(data.draw(st.lists(st.integers(0, joined.shape[axis]), max_size=3)))
    pieces = ops.split(on(device, joined), points, axis)
    expected = np.split(joined, points, axis)
    assert len(pieces) == len(expected)
    for got, want in zip(pieces, expected, strict=True):
        assert_close(got, want, op="split")


def test_split_sections_and_sizes(device: str) -> None:
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    for got, want in zip(ops.split(on(device, x), 3, axis=1), np.split(x, 3, axis=1), strict=True):
        assert_close(got, want, op="split sections")
    q, k, v = ops.split(on(device, x), sizes=[1, 2, 3], axis=-1)
    assert_close(v, x[:, 3:], op="split sizes")
    with pytest.raises(ShapeError, match="do not divide"):
        ops.split(on(device, x), 4, axis=1)
    with pytest.raises(ShapeError, match="sum to 6"):
        ops.split(on(device, x), sizes=[1, 2], axis=1)


@st.composite
def basic_keys(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[object, ...]:
    key: list[object] = []
    for dim in shape:
        kind = draw(st.sampled_from(["slice", "int", "all"] if dim else ["slice", "all"]))
        if kind == "int":
            key.append(draw(st.integers(-dim, dim - 1)))
        elif kind == "slice":
            step = draw(st.sampled_from([None, 1, 2, 3, -1, -2]))
            start = draw(st.none() | st.integers(-dim - 2, dim + 2))
            stop = draw(st.none() | st.integers(-dim - 2, dim + 2))
            key.append(slice(start, stop, step))
        else:
            key.append(slice(None))
        if draw(st.integers(0, 5)) == 0:
            key.append(None)
    if key and draw(st.booleans()):
        cut = draw(st.integers(0, len(key)))
        key = [*key[:cut], Ellipsis]
    return tuple(key)


@given(data=st.data())
def test_basic_indexing_matches_numpy(device: str, data: st.DataObject) -> None:
    x = _any_array(data, device)
    key = data.draw(basic_keys(x.shape), label="key")
    assert_close(on(device, x)[key], np.asarray(x[key]), op=f"getitem {key!r}")


@given(data=st.data())
def test_slice_op_matches_python_slices(device: str, data: st.DataObject) -> None:
    x = _any_array(data, device, min_dims=1)
    axis = data.draw(st.integers(0, x.ndim - 1))
    start, stop = data.draw(st.integers(-6, 6)), data.draw(st.integers(-6, 6))
    step = data.draw(st.sampled_from([1, 2, -1, -3]))
    key = [slice(None)] * x.ndim
    key[axis] = slice(start, stop, step)
    assert_close(
        ops.slice(on(device, x), [start], [stop], [step], [axis]), x[tuple(key)], op="slice"
    )


@given(data=st.data())
def test_gather_and_integer_array_index(device: str, data: st.DataObject) -> None:
    x = _any_array(data, device, min_dims=1, min_side=1)
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    index_dtype = data.draw(st.sampled_from(supported(device, ("int32", "int64"))))
    indices = data.draw(arrays(index_dtype, shapes(max_dims=2, max_side=3), -n, n - 1))
    assert_close(
        ops.gather(on(device, x), on(device, indices), axis),
        np.take(x, indices, axis=axis),
        op="gather",
    )
    first = data.draw(
        arrays(index_dtype, shapes(min_dims=1, max_dims=1, max_side=4), -x.shape[0], x.shape[0] - 1)
    )
    assert_close(on(device, x)[on(device, first)], x[first], op="array index")


def test_gather_out_of_range_raises(device: str) -> None:
    x = on(device, np.arange(6, dtype=np.float32).reshape(3, 2))
    with pytest.raises(IndexOutOfRangeError, match="3"):
        ops.gather(x, on(device, np.array([0, 3], dtype=np.int32)), 0).numpy()
    with pytest.raises(IndexOutOfRangeError):
        ops.gather(x, on(device, np.array([-4], dtype=np.int32)), 0).numpy()


def test_embedding_lookup(device: str) -> None:
    weight = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    ids = np.array([[1, 9, 0], [3, 3, 2]], dtype=np.int64)
    assert_close(ops.embedding(on(device, ids), on(device, weight)), weight[ids], op="embedding")
    with pytest.raises(IndexOutOfRangeError, match="10"):
        ops.embedding(on(device, np.array([10], dtype=np.int64)), on(device, weight)).numpy()


@given(data=st.data())
def test_pad_matches_numpy(device: str, data: st.DataObject) -> None:
    x = _any_array(data, device, min_dims=1, max_dims=3, min_side=2, max_side=4)
    mode = data.draw(st.sampled_from(["constant", "edge", "reflect"]))
    limit = 1 if mode == "reflect" else 3
    widths = [(data.draw(st.integers(0, limit)), data.draw(st.integers(0, limit))) for _ in x.shape]
    if mode == "constant":
        value = data.draw(st.sampled_from([0, 1])) if x.dtype != np.bool_ else False
        expected = np.pad(x, widths, mode="constant", constant_values=value)
        actual = ops.pad(on(device, x), widths, mode, value)
    else:
        expected = np.pad(x, widths, mode=mode)
        actual = ops.pad(on(device, x), widths, mode)
    assert_close(actual, expected, op=f"pad {mode}")


def test_index_errors(device: str) -> None:
    t = ia.zeros(2, 3, device=device)
    with pytest.raises(
        IndexOutOfRangeError, match="index 5 is out of bounds for axis 1 with size 3"
    ):
        t[0, 5]
    with pytest.raises(IndexOutOfRangeError, match="too many indices"):
        t[0, 0, 0]
    with pytest.raises(InvalidArgumentError, match="single ellipsis"):
        t[..., ...]


def test_shape_errors_name_the_op(device: str) -> None:
    t = ia.zeros(2, 3, device=device)
    with pytest.raises(ShapeError, match=r"reshape: cannot reshape .* into \(4, 2\)"):
        t.reshape(4, 2)
    with pytest.raises(AxisError, match="not a permutation"):
        ops.permute(t, (0, 0))
    with pytest.raises(ShapeError, match="broadcast_to"):
        ops.broadcast_to(t, (3, 3))
    with pytest.raises(ShapeError, match="concat: all shapes must match"):
        ops.concat([t, ia.zeros(3, 3, device=device)], axis=1)
    with pytest.raises(ShapeError, match="stack"):
        ops.stack([t, ia.zeros(3, 2, device=device)])
    with pytest.raises(ShapeError, match="reflect"):
        ops.pad(t, 3, mode="reflect")
    with pytest.raises(InvalidArgumentError, match="mode"):
        ops.pad(t, 1, mode="wrap")


def test_full_size_selections_that_are_not_the_identity(device: str) -> None:
    """Selections as large as the input that still move elements (reversal, negative steps)."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = on(device, x)
    for key in [
        (slice(None), slice(None, None, -1)),
        (slice(None, None, -1),),
        (slice(2, None, -1), slice(3, None, -1)),
    ]:
        assert_close(t[key], x[key], op=f"getitem {key!r}")
    assert_close(ops.slice(t, [-1], [-4], [-1], [0]), x[-1:-4:-1], op="slice reverse")
