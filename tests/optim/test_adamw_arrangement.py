"""AdamW composed from ops (the update graph backends run, and cpu where its fused kernel
declines) arranges the last step as m / (sqrt(v) + eps * c) * (lr * c / (1 - beta1^t)):
still torch.optim.AdamW's numbers at the edges where the two arrangements could part
(no learning rate, beta2 = 0 so that c = 1, a large eps, eps = 0 with some zero gradients,
AMSGrad), and on cpu the composed update equals the fused kernel's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import ipfs_accelerate as ia
from ipfs_accelerate import optim

EDGE_CASES = [
    {"lr": 0.0, "weight_decay": 0.1},
    {"lr": 0.01, "betas": (0.0, 0.0)},
    {"lr": 0.01, "eps": 1.0, "weight_decay": 0.0},
    {"lr": 0.01, "eps": 0.0, "amsgrad": True},
]


def _steps(device: str, kwargs: dict[str, Any], composed: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    start = rng.standard_normal((64, 33)).astype(np.float32)
    ours = ia.tensor(start, device=device, requires_grad=True)
    opt = optim.AdamW([ours], **kwargs)
    if composed:  # the op-by-op update even where the backend has a fused kernel
        opt._update_in_place = lambda *args: False  # type: ignore[method-assign]
    out = []
    for step in range(3):
        grad = rng.standard_normal((64, 33)).astype(np.float32)
        grad[step::5] = 0.0  # rows with no gradient: sqrt(v) can be 0 there
        ours.grad = ia.tensor(grad, device=device)
        opt.step()
        out.append(ours.numpy().copy())
    return out


def _torch_steps(kwargs: dict[str, Any]) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    theirs = torch.tensor(rng.standard_normal((64, 33)).astype(np.float32), requires_grad=True)
    opt = torch.optim.AdamW([theirs], **kwargs)
    out = []
    for step in range(3):
        grad = rng.standard_normal((64, 33)).astype(np.float32)
        grad[step::5] = 0.0
        theirs.grad = torch.from_numpy(grad)
        opt.step()
        out.append(theirs.detach().numpy().copy())
    return out


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # eps=0: 0/0
@pytest.mark.parametrize(
    "kwargs", EDGE_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items())
)
def test_composed_adamw_equals_torch_at_the_edges(device: str, kwargs: dict[str, Any]) -> None:
    expected = _torch_steps(kwargs)
    for composed in (False, True):
        got = _steps(device, kwargs, composed)
        for step, (ours, theirs) in enumerate(zip(got, expected, strict=True)):
            np.testing.assert_allclose(
                ours, theirs, rtol=2e-5, atol=2e-6, err_msg=f"step {step}, composed={composed}"
            )
            assert np.isnan(ours).sum() == np.isnan(theirs).sum()


def test_composed_and_fused_cpu_updates_agree() -> None:
    kwargs = {"lr": 0.03, "weight_decay": 0.02, "betas": (0.85, 0.95), "eps": 1e-7}
    fused, composed = _steps("cpu", kwargs), _steps("cpu", kwargs, composed=True)
    for a, b in zip(fused, composed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
