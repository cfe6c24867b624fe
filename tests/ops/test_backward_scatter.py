"""index_add (gather's gradient) and the gradient of a table looked up more than once, on
every backend, against torch.autograd and numpy's add.at.

On webnn both are one ScatterND with reduction "add" per lookup, scattered into the running
sum of the gradient (no zero table per lookup and no dense add): these tests pin that the
rewrite changes no value."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import IndexOutOfRangeError

CASES = [
    # (table shape, axis, indices shape)
    ((7, 3), 0, (5,)),
    ((2, 6, 3), 1, (2, 4)),  # middle axis, 2-D indices
    ((4, 5), -1, (3,)),  # last axis (inner size 1)
    ((4, 5), 1, ()),  # a 0-d index
]


@pytest.mark.parametrize("dtype", ["float32", "float16", "int32", "int64", "int8", "uint8", "bool"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-axis{c[1]}-{c[2]}")
def test_index_add_matches_add_at(device: str, dtype: str, case: Any) -> None:
    shape, axis, index_shape = case
    rng = np.random.default_rng(len(shape) * 7 + axis)
    ax = axis % len(shape)
    idx = np.asarray(rng.integers(0, shape[ax], index_shape))
    source_shape = shape[:ax] + idx.shape + shape[ax + 1 :]
    if np.dtype(dtype).kind in "iu":  # small: integer overflow is each backend's own matter
        low = 0 if np.dtype(dtype).kind == "u" else -3
        base = rng.integers(low, 4, shape).astype(dtype)
        source = rng.integers(low, 4, source_shape).astype(dtype)
    else:
        base = (rng.standard_normal(shape) * 3).astype(dtype)
        source = (rng.standard_normal(source_shape) * 3).astype(dtype)
    got = ops.index_add(
        ia.tensor(base, device=device), axis, ia.tensor(idx, device=device),
        ia.tensor(source, device=device),
    ).numpy()  # fmt: skip
    expected = base.copy()
    np.add.at(expected, (slice(None),) * ax + (idx,), source)
    assert got.dtype == expected.dtype
    if dtype == "float16":  # webnn adds in float32 and rounds once; numpy rounds every add
        np.testing.assert_allclose(got.astype(np.float32), expected, rtol=2e-3, atol=2e-2)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("bad", [3, -1])
def test_index_add_out_of_range_is_a_typed_error(device: str, bad: int) -> None:
    base = ia.zeros((3, 2), device=device)
    with pytest.raises(IndexOutOfRangeError, match="out of range"):
        ids = ia.tensor([0, bad], device=device)
        ops.index_add(base, 0, ids, ia.ones((2, 2), device=device)).numpy()


def test_index_add_with_no_indices_is_the_table(device: str) -> None:
    base = np.arange(6, dtype=np.float32).reshape(3, 2)
    empty = ia.tensor(np.zeros(0, np.int64), device=device)
    got = ops.index_add(ia.tensor(base, device=device), 0, empty, ia.zeros((0, 2), device=device))
    np.testing.assert_array_equal(got.numpy(), base)


def test_table_looked_up_twice_matches_torch(device: str) -> None:
    """Two lookups of one table (anchors and positives through one embedding), a repeated
    id within and across them, and a gradient that also flows through a dense use of the
    table: the summed gradient equals torch's."""
    rng = np.random.default_rng(3)
    table = rng.standard_normal((40, 6)).astype(np.float32)
    first = np.array([[1, 2, 2], [3, 1, 0]])
    second = np.array([2, 39, 2, 5])
    weights = rng.standard_normal((4, 6)).astype(np.float32)

    w = ia.tensor(table, device=device, requires_grad=True)
    scale = ia.tensor(weights, device=device)
    loss = (
        (ops.embedding(ia.tensor(first, device=device), w) ** 2).sum()
        + (ops.embedding(ia.tensor(second, device=device), w) * scale).sum()
        + (w * 0.5).sum()
    )
    loss.backward()

    ref = torch.tensor(table, requires_grad=True)
    torch_loss = (
        (torch.nn.functional.embedding(torch.tensor(first), ref) ** 2).sum()
        + (torch.nn.functional.embedding(torch.tensor(second), ref) * torch.tensor(weights)).sum()
        + (ref * 0.5).sum()
    )
    torch_loss.backward()
    assert w.grad is not None and ref.grad is not None
    np.testing.assert_allclose(w.grad.numpy(), ref.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_scattered_gradient_also_used_elsewhere(device: str) -> None:
    """index_add into zeros whose result is both added to and read on its own: the add
    scatters into the other addend, and the lone result still holds only its own rows."""
    rng = np.random.default_rng(4)
    dense = rng.standard_normal((5, 3)).astype(np.float32)
    rows = rng.standard_normal((4, 3)).astype(np.float32)
    idx = np.array([4, 0, 4, 2])
    spread = ops.index_add(
        ia.zeros((5, 3), device=device), 0, ia.tensor(idx, device=device),
        ia.tensor(rows, device=device),
    )  # fmt: skip
    total = ia.tensor(dense, device=device) + spread
    alone = np.zeros((5, 3), np.float32)
    np.add.at(alone, idx, rows)
    np.testing.assert_allclose(spread.numpy(), alone, rtol=1e-6)
    np.testing.assert_allclose(total.numpy(), dense + alone, rtol=1e-6)


def test_scattered_table_broadcast_in_a_sum(device: str) -> None:
    """index_add into zeros of shape (3,), added to a (4, 3) tensor: the sum broadcasts the
    scattered row, so it stays a scatter plus an add."""
    dense = np.arange(12, dtype=np.float32).reshape(4, 3)
    spread = ops.index_add(
        ia.zeros((3,), device=device), 0, ia.tensor(np.array([2, 2]), device=device),
        ia.tensor(np.array([1.5, 2.0], np.float32), device=device),
    )  # fmt: skip
    total = ia.tensor(dense, device=device) + spread
    np.testing.assert_allclose(total.numpy(), dense + np.array([0.0, 0.0, 3.5], np.float32))


def test_lookups_of_one_table_become_one_scatter_on_webnn() -> None:
    """Three lookups of one table and nothing else: the summed gradient equals torch's, and
    on webnn it is one ScatterND of all three lookups' rows into one zero table (each
    ScatterND copies the whole table: an embedding table's gradient is tens of MB)."""
    import onnx

    from tests.conftest import start_backend

    backend = start_backend("webnn")
    rng = np.random.default_rng(5)
    table = rng.standard_normal((30, 4)).astype(np.float32)
    lookups = [np.array([1, 2, 2]), np.array([[3, 0], [29, 2]]), np.array([7])]
    w = ia.tensor(table, device="webnn", requires_grad=True)
    ref = torch.tensor(table, requires_grad=True)
    ours = theirs = None
    for scale, ids in enumerate(lookups, start=1):
        mine = (ops.embedding(ia.tensor(ids, device="webnn"), w) * float(scale)).sum()
        peer = (torch.nn.functional.embedding(torch.tensor(ids), ref) * float(scale)).sum()
        ours = mine if ours is None else ours + mine
        theirs = peer if theirs is None else theirs + peer
    assert ours is not None and theirs is not None
    ours.backward()
    theirs.backward()
    assert w.grad is not None and ref.grad is not None
    np.testing.assert_allclose(w.grad.numpy(), ref.grad.numpy(), rtol=1e-6, atol=1e-6)
    compiled = next(reversed(backend._cache.values()))
    model = onnx.load_from_string(compiled.graph.export_onnx())
    assert [node.op_type for node in model.graph.node].count("ScatterND") == 1
