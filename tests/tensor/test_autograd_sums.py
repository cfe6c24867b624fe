"""The engine's gradient sums: terms after the second are added in place into the sum the
engine allocated, and never into a gradient that a rule passed on to several operands."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import ipfs_accelerate as ia


def _pair(values: list[float]) -> tuple[ia.Tensor, torch.Tensor]:
    array = np.array(values, dtype=np.float32)
    return ia.tensor(array, requires_grad=True), torch.tensor(array, requires_grad=True)


def _shared_then_grown(x: Any, y: Any, z: Any) -> Any:
    # p's gradient (a sum of three) goes on to x and y as one tensor; x's gradient starts as
    # that shared tensor and then grows by two more terms (the order is the point)
    p = x + y
    return (x * 5.0).sum() + (x * 3.0).sum() + (p + p + p).sum() + z.sum()


def _many_consumers(x: Any, y: Any, z: Any) -> Any:
    h = x * 3.0
    p = x + y
    return ((p + p + p) * 2.0).sum() + (x * 5.0).sum() + (h + h + h + h + z).sum()


@pytest.mark.parametrize("loss", [_shared_then_grown, _many_consumers])
def test_summed_gradients_equal_torch(device: str, loss: Any) -> None:
    (x, tx), (y, ty), (z, tz) = _pair([1.0, 2.0]), _pair([3.0, -1.0]), _pair([0.5, 4.0])
    xs = [t.to(device).detach().requires_grad_() for t in (x, y, z)]
    loss(*xs).backward()
    loss(tx, ty, tz).backward()
    for ours, theirs in zip(xs, (tx, ty, tz), strict=True):
        assert ours.grad is not None and theirs.grad is not None
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-6)


def test_a_leaf_whose_gradient_is_the_callers_keeps_it_unchanged() -> None:
    x = ia.tensor([1.0, 2.0], requires_grad=True)
    seed = ia.tensor([1.0, 1.0])
    (x + x + x + x).backward(seed)
    assert seed.tolist() == [1.0, 1.0]
    assert x.grad is not None and x.grad.tolist() == [4.0, 4.0]
