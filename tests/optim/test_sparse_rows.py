"""Embedding tables update only the rows a step can change: an embedding's gradient is its
lookups' rows scattered into zeros, and the optimizers' host kernels (hal/cpu/_optim.py)
update the rows whose gradient or moments can be nonzero plus the weight decay of the rest,
eagerly on cpu and in ``compile_step``'s host update on webnn (where the graph gives the
rows, not the dense table). The parameters must equal torch.optim's dense updates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import ipfs_accelerate as ia
from ipfs_accelerate import ops, optim
from ipfs_accelerate.hal.cpu import _optim, _rows
from tests.conftest import start_backend

Array = np.ndarray[Any, Any]

ROWS, WIDTH, CLASSES, STEPS = 400, 6, 3, 6

OPTIMIZERS: dict[str, tuple[Callable[..., Any], Callable[..., Any], dict[str, Any]]] = {
    "adamw": (optim.AdamW, torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.1}),
    "adamw-amsgrad": (
        optim.AdamW,
        torch.optim.AdamW,
        {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True},
    ),
    "sgd-nesterov": (
        optim.SGD,
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
    ),
    "sgd-decay": (optim.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.1}),
}


def _data(spread: int = 40) -> tuple[Array, Array, list[tuple[Array, Array]]]:
    """A table, a head, and batches whose ids come from ``spread`` rows (a few per step)."""
    rng = np.random.default_rng(3)
    table = rng.standard_normal((ROWS, WIDTH)).astype(np.float32)
    head = rng.standard_normal((WIDTH, CLASSES)).astype(np.float32)
    pool = rng.choice(ROWS, spread, replace=False)
    batches = [
        (pool[rng.integers(0, spread, (4, 5))], rng.integers(0, CLASSES, 4)) for _ in range(STEPS)
    ]
    return table, head, batches


def _ours(
    device: str, kind: str, data: tuple[Array, Array, list[tuple[Array, Array]]]
) -> list[Array]:
    table, head, batches = data
    w = ia.tensor(table, device=device, requires_grad=True)
    h = ia.tensor(head, device=device, requires_grad=True)
    make, _, options = OPTIMIZERS[kind]
    opt = make([("table", w), ("head", h)], **options)

    def loss_fn(ids: ia.Tensor, labels: ia.Tensor) -> ia.Tensor:
        pooled = ops.mean(ops.embedding(ids, w), axis=1)
        return ops.cross_entropy(ops.matmul(pooled, h), labels)

    step = optim.compile_step(loss_fn, opt)
    out = []
    for ids, labels in batches:
        step(ids, labels)
        out.append(w.numpy().copy())
    if step.captures:
        # the table's gradient left the replayed graph as rows
        assert all(signature.sparse == {0} for signature in step._signatures.values())
    return out


def _torch(kind: str, data: tuple[Array, Array, list[tuple[Array, Array]]]) -> list[Array]:
    table, head, batches = data
    w = torch.tensor(table, requires_grad=True)
    h = torch.tensor(head, requires_grad=True)
    _, make, options = OPTIMIZERS[kind]
    opt = make([w, h], **options)
    out = []
    for ids, labels in batches:
        opt.zero_grad()
        pooled = torch.nn.functional.embedding(torch.from_numpy(ids), w).mean(1)
        torch.nn.functional.cross_entropy(pooled @ h, torch.from_numpy(labels)).backward()
        opt.step()
        out.append(w.detach().numpy().copy())
    return out


class _RowUpdates:
    """Counts the updates that took the row kernels."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = _optim._put_rows

        def counted(*args: Any) -> None:
            self.count += 1
            real(*args)

        monkeypatch.setattr(_optim, "_put_rows", counted)


@pytest.mark.parametrize("device", ["cpu", "webnn"])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_row_updates_equal_torch_dense_updates(
    device: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_backend(device)
    rows = _RowUpdates(monkeypatch)
    data = _data()
    ours, theirs = _ours(device, kind, data), _torch(kind, data)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-6)
    # every step but webnn's first (traced, the update composed from ops) took the rows;
    # SGD with weight decay moves every row, so it takes the full pass
    expected = 0 if kind == "sgd-decay" else STEPS - (device == "webnn")
    assert rows.count == expected


def test_rows_are_bit_identical_to_the_full_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data()
    rows = _RowUpdates(monkeypatch)
    with_rows = _ours("cpu", "adamw-amsgrad", data)
    assert rows.count == STEPS
    monkeypatch.setattr(_optim, "ROW_SHARE", 0.0)  # every update takes the full pass
    full = _ours("cpu", "adamw-amsgrad", data)
    assert rows.count == STEPS
    for a, b in zip(with_rows, full, strict=True):
        assert np.array_equal(a, b)


def test_untouched_rows_only_decay_and_their_moments_stay_zero() -> None:
    table, head, batches = _data()
    w = ia.tensor(table, requires_grad=True)
    opt = optim.AdamW([w], lr=0.05, weight_decay=0.1)
    ids = batches[0][0]
    ops.sum(ops.embedding(ia.tensor(ids), w)).backward()
    opt.step()
    touched = np.unique(ids)
    others = np.setdiff1d(np.arange(ROWS), touched)
    np.testing.assert_array_equal(w.numpy()[others], table[others] * np.float32(1.0 - 0.05 * 0.1))
    assert not np.array_equal(w.numpy()[touched], table[touched] * np.float32(1 - 0.005))
    state = opt.state[0]
    assert not state["exp_avg"].numpy()[others].any()
    assert state["exp_avg"].numpy()[touched].any()


def test_rows_spreading_over_the_table_switch_to_the_full_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _RowUpdates(monkeypatch)
    data = _data(spread=ROWS)  # ~20 new rows a step: past a quarter of the table by step 6
    ours, theirs = _ours("cpu", "adamw", data), _torch("adamw", data)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-6)
    assert 0 < rows.count < STEPS


def test_a_loaded_state_and_a_written_gradient_are_not_trusted() -> None:
    """Moments loaded from a state dict are read, not assumed zero; a gradient written in
    place after its rows were recorded takes the full pass."""
    table, head, batches = _data()
    torch_w = torch.tensor(table, requires_grad=True)
    torch_opt = torch.optim.AdamW([torch_w], lr=0.05, weight_decay=0.1)
    w = ia.tensor(table, requires_grad=True)
    opt = optim.AdamW([w], lr=0.05, weight_decay=0.1)
    for index, (ids, _) in enumerate(batches):
        if index == 3:  # a new optimizer over the same parameter, its state loaded
            saved = opt.state_dict()
            opt = optim.AdamW([w], lr=0.05, weight_decay=0.1)
            opt.load_state_dict(saved)
        opt.zero_grad()
        torch_opt.zero_grad()
        ops.sum(ops.embedding(ia.tensor(ids), w) ** 2).backward()
        torch.nn.functional.embedding(torch.from_numpy(ids), torch_w).pow(2).sum().backward()
        assert w.grad is not None and torch_w.grad is not None
        if index == 4:  # a row outside the lookups gets a gradient, through the op set
            assert _rows.marked_rows(w.grad._data) is not None
            w.grad[ROWS - 1] = 1.0
            assert _rows.marked_rows(w.grad._data) is None
            with torch.no_grad():
                torch_w.grad[ROWS - 1] = 1.0
        opt.step()
        torch_opt.step()
        np.testing.assert_allclose(w.numpy(), torch_w.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dense_use", [False, True], ids=["two-lookups", "lookup-and-dense"])
def test_a_gradient_summed_over_lookups_keeps_its_rows(
    dense_use: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two lookups of one table (anchors and positives) sum two row-sparse gradients: the
    sum's rows are the union, and the rows still take the update. A term that reads the
    whole table (here a penalty on it) makes every row's gradient nonzero: the full pass."""
    rows = _RowUpdates(monkeypatch)
    table, _, batches = _data()
    w = ia.tensor(table, requires_grad=True)
    torch_w = torch.tensor(table, requires_grad=True)
    opt = optim.AdamW([w], lr=0.05, weight_decay=0.1)
    torch_opt = torch.optim.AdamW([torch_w], lr=0.05, weight_decay=0.1)
    for ids, _ in batches:
        first, second = ids[:2], ids[2:]
        opt.zero_grad()
        torch_opt.zero_grad()
        loss = ops.sum(ops.embedding(ia.tensor(first), w)) - ops.sum(
            ops.embedding(ia.tensor(second), w) ** 2
        )
        ref = torch.nn.functional.embedding(torch.from_numpy(first), torch_w).sum() - (
            torch.nn.functional.embedding(torch.from_numpy(second), torch_w).pow(2).sum()
        )
        if dense_use:
            loss = loss + ops.sum(w * w) * 0.01
            ref = ref + (torch_w * torch_w).sum() * 0.01
        loss.backward()
        ref.backward()
        opt.step()
        torch_opt.step()
        np.testing.assert_allclose(w.numpy(), torch_w.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert rows.count == (0 if dense_use else STEPS)
