"""The cpu backend's fused cross entropy over class indices (an (N, C) batch): the composed
loss's numbers and gradient bit for bit, torch's within rounding, its errors and edge cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops
from ipfs_accelerate.errors import IndexOutOfRangeError

Array = np.ndarray[Any, Any]


def _loss_and_grad(
    logits: Array, target: Array, fused: bool, monkeypatch: pytest.MonkeyPatch, **kwargs: Any
) -> tuple[Array, Array, int]:
    cpu = hal.get_backend("cpu")
    calls: list[str] = []
    with monkeypatch.context() as m:
        if fused:
            original = cpu.cross_entropy

            def counting(*args: Any) -> Any:
                calls.append("fused")
                return original(*args)

            m.setattr(cpu, "cross_entropy", counting)
        else:
            m.setattr(cpu, "fused", cpu.fused - {"cross_entropy"})
        x = ia.tensor(logits, requires_grad=True)
        loss = ops.cross_entropy(x, ia.tensor(target), **kwargs)
        seed = np.linspace(0.5, 2.0, loss.size).astype(logits.dtype).reshape(loss.shape)
        loss.backward(ia.tensor(seed))
        assert x.grad is not None
        return loss.numpy().copy(), x.grad.numpy().copy(), len(calls)


def _bits(a: Array) -> Array:
    return a.view(np.int32 if a.dtype == np.float32 else np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore", [None, 3])
def test_fused_cross_entropy_is_the_composed_one_bit_for_bit_and_torchs(
    dtype: Any, reduction: str, ignore: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((300, 10)) * 4).astype(dtype)
    target = rng.integers(0, 10, 300)
    kwargs: dict[str, Any] = {"reduction": reduction}
    if ignore is not None:
        kwargs["ignore_index"] = ignore
    loss, grad, calls = _loss_and_grad(logits, target, True, monkeypatch, **kwargs)
    composed_loss, composed_grad, _ = _loss_and_grad(logits, target, False, monkeypatch, **kwargs)
    assert calls == 1
    np.testing.assert_array_equal(_bits(loss), _bits(composed_loss))
    np.testing.assert_array_equal(_bits(grad), _bits(composed_grad))

    x = torch.tensor(logits, requires_grad=True)
    theirs = F.cross_entropy(x, torch.from_numpy(target), **kwargs)
    seed = np.linspace(0.5, 2.0, theirs.numel()).astype(dtype).reshape(tuple(theirs.shape))
    theirs.backward(torch.from_numpy(seed))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, theirs.detach().numpy(), rtol=tol, atol=tol)
    assert x.grad is not None
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=tol, atol=tol)


def test_fused_cross_entropy_raises_for_a_class_out_of_range() -> None:
    logits = ia.tensor(np.zeros((4, 5), np.float32))
    with pytest.raises(IndexOutOfRangeError, match="target class 7 is out of range for 5"):
        ops.cross_entropy(logits, ia.tensor([0, 7, 1, 2]))
    with pytest.raises(IndexOutOfRangeError, match="target class -2 is out of range"):
        ops.cross_entropy(logits, ia.tensor([0, 1, -2, -100]))
    # the ignored index itself is no class, and not out of range
    assert np.isfinite(ops.cross_entropy(logits, ia.tensor([0, 1, 4, -100])).item())


def test_fused_cross_entropy_with_every_row_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    logits = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    ignored = np.full(6, -100)
    mean = ops.cross_entropy(ia.tensor(logits), ia.tensor(ignored))
    assert np.isnan(mean.item()) and torch.isnan(
        F.cross_entropy(torch.tensor(logits), torch.from_numpy(ignored))
    )
    loss, grad, calls = _loss_and_grad(logits, ignored, True, monkeypatch, reduction="sum")
    composed_loss, composed_grad, _ = _loss_and_grad(
        logits, ignored, False, monkeypatch, reduction="sum"
    )
    assert calls == 1 and loss == 0.0
    np.testing.assert_array_equal(_bits(grad), _bits(composed_grad))
    np.testing.assert_array_equal(_bits(grad), _bits(np.zeros((6, 3), np.float32)))
