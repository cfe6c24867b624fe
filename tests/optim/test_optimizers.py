"""SGD, AdamW and clip_grad_norm_ against torch.optim on the same parameters and gradients,
over several steps, on cpu and the other backends; state_dict round trips; bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import ipfs_accelerate as ia
from ipfs_accelerate import optim
from ipfs_accelerate.errors import AutogradError, InvalidArgumentError, ShapeError

SHAPES = [(5, 3), (3,), (2, 2, 2)]
STEPS = 4


def _start(device: str, seed: int = 0) -> tuple[list[ia.Tensor], list[torch.Tensor]]:
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    ours = [ia.tensor(a, device=device, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    return ours, theirs


def _grads(step: int) -> list[np.ndarray[Any, Any]]:
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _run(
    device: str,
    ours_factory: Callable[[list[Any]], optim.Optimizer],
    torch_factory: Callable[[list[Any]], torch.optim.Optimizer],
    steps: int = STEPS,
) -> None:
    ours, theirs = _start(device)
    opt, ref = ours_factory(ours), torch_factory(theirs)
    for step in range(steps):
        for p, q, g in zip(ours, theirs, _grads(step), strict=True):
            p.grad = ia.tensor(g, device=device)
            q.grad = torch.from_numpy(g.copy())
        opt.step()
        ref.step()
        for p, q in zip(ours, theirs, strict=True):
            assert p.device == device
            np.testing.assert_allclose(
                p.numpy(), q.detach().numpy(), rtol=2e-5, atol=2e-6, err_msg=f"step {step}"
            )


SGD_CASES = [
    {"lr": 0.1},
    {"lr": 0.1, "weight_decay": 0.05},
    {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
    {"lr": 0.05, "momentum": 0.8, "dampening": 0.3},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.02},
]


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=lambda k: ",".join(sorted(k)))
def test_sgd_equals_torch(device: str, kwargs: dict[str, Any]) -> None:
    _run(device, lambda p: optim.SGD(p, **kwargs), lambda p: torch.optim.SGD(p, **kwargs))


ADAMW_CASES = [
    {"lr": 0.01},
    {"lr": 0.02, "weight_decay": 0.1, "betas": (0.8, 0.99), "eps": 1e-6},
    {"lr": 0.01, "weight_decay": 0.05, "amsgrad": True},
]


@pytest.mark.parametrize("kwargs", ADAMW_CASES, ids=lambda k: ",".join(sorted(k)))
def test_adamw_equals_torch(device: str, kwargs: dict[str, Any]) -> None:
    _run(device, lambda p: optim.AdamW(p, **kwargs), lambda p: torch.optim.AdamW(p, **kwargs))


def test_param_groups_use_their_own_hyperparameters() -> None:
    def ours(p: list[Any]) -> optim.Optimizer:
        return optim.AdamW([{"params": p[:1], "lr": 0.1}, {"params": p[1:]}], lr=0.01)

    def theirs(p: list[Any]) -> torch.optim.Optimizer:
        return torch.optim.AdamW([{"params": p[:1], "lr": 0.1}, {"params": p[1:]}], lr=0.01)

    _run("cpu", ours, theirs)


def test_a_parameter_without_a_gradient_is_left_alone() -> None:
    p = ia.tensor([1.0, 2.0], requires_grad=True)
    q = ia.tensor([3.0], requires_grad=True)
    opt = optim.SGD([p, q], lr=0.5)
    p.grad = ia.tensor([1.0, 1.0])
    opt.step()
    assert p.tolist() == [0.5, 1.5] and q.tolist() == [3.0]
    assert 1 not in opt.state


def test_zero_grad() -> None:
    p = ia.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    p.grad = ia.tensor([1.0, 1.0])
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and p.grad.tolist() == [0.0, 0.0]
    opt.zero_grad()
    assert p.grad is None


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_state_dict_round_trip_continues_identically(kind: str) -> None:
    def make(params: list[ia.Tensor]) -> optim.Optimizer:
        if kind == "sgd":
            return optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)
        return optim.AdamW(params, lr=0.01, amsgrad=True)

    ours, _ = _start("cpu")
    opt = make(ours)
    for step in range(2):
        for p, g in zip(ours, _grads(step), strict=True):
            p.grad = ia.tensor(g)
        opt.step()
    saved = opt.state_dict()
    copies = [ia.tensor(p.numpy(), requires_grad=True) for p in ours]
    restored = make(copies)
    restored.load_state_dict(saved)
    assert restored.state_dict()["param_groups"] == saved["param_groups"]
    for step in range(2, 4):
        for p, c, g in zip(ours, copies, _grads(step), strict=True):
            p.grad, c.grad = ia.tensor(g), ia.tensor(g)
        opt.step()
        restored.step()
    for p, c in zip(ours, copies, strict=True):
        np.testing.assert_array_equal(p.numpy(), c.numpy())
    # the snapshot did not move with the later steps
    assert saved["state"][0]["step"] == 2 if kind == "adamw" else True


def test_a_torch_state_dict_loads_and_continues_like_torch() -> None:
    ours, theirs = _start("cpu")
    ref = torch.optim.AdamW(theirs, lr=0.01, weight_decay=0.1)
    for step in range(2):
        for q, g in zip(theirs, _grads(step), strict=True):
            q.grad = torch.from_numpy(g.copy())
        ref.step()
    params = [ia.tensor(q.detach().numpy(), requires_grad=True) for q in theirs]
    opt = optim.AdamW(params, lr=0.5)
    opt.load_state_dict(ref.state_dict())
    assert opt.param_groups[0]["lr"] == 0.01
    for q, p, g in zip(theirs, params, _grads(2), strict=True):
        q.grad, p.grad = torch.from_numpy(g.copy()), ia.tensor(g)
    ref.step()
    opt.step()
    for p, q in zip(params, theirs, strict=True):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=2e-5, atol=2e-6)


def test_load_state_dict_rejects_a_mismatch() -> None:
    ours, _ = _start("cpu")
    opt = optim.SGD(ours, lr=0.1, momentum=0.9)
    for p, g in zip(ours, _grads(0), strict=True):
        p.grad = ia.tensor(g)
    opt.step()
    saved = opt.state_dict()
    other = optim.SGD(ours[:2], lr=0.1, momentum=0.9)
    with pytest.raises(InvalidArgumentError, match="saved 3 parameter"):
        other.load_state_dict(saved)
    swapped = optim.SGD([ours[1], ours[0], ours[2]], lr=0.1, momentum=0.9)
    with pytest.raises(ShapeError, match="momentum_buffer"):
        swapped.load_state_dict(saved)
    saved["param_groups"][0]["maximize"] = True
    with pytest.raises(InvalidArgumentError, match="maximize"):
        opt.load_state_dict(saved)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_equals_torch(device: str, norm_type: float, max_norm: float) -> None:
    ours, theirs = _start(device)
    for p, q, g in zip(ours, theirs, _grads(0), strict=True):
        p.grad = ia.tensor(g, device=device)
        q.grad = torch.from_numpy(g.copy())
    total = optim.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    np.testing.assert_allclose(total.item(), expected.item(), rtol=1e-5)
    for p, q in zip(ours, theirs, strict=True):
        assert p.grad is not None and q.grad is not None
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_clip_grad_norm_reports_a_nonfinite_norm() -> None:
    p = ia.tensor([1.0, 2.0], requires_grad=True)
    p.grad = ia.tensor([float("nan"), 1.0])
    with pytest.raises(AutogradError, match="nan"):
        optim.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert np.isnan(optim.clip_grad_norm_([p], 1.0).item())  # torch's default: no error


def test_bad_parameters_and_hyperparameters_are_named() -> None:
    frozen = ia.tensor([1.0, 2.0])
    with pytest.raises(InvalidArgumentError, match=r"'head.weight' .*does not require grad"):
        optim.AdamW([("head.weight", frozen)])
    with pytest.raises(InvalidArgumentError, match="parameter 1 of group 0"):
        optim.SGD([ia.tensor([1.0], requires_grad=True), frozen], lr=0.1)
    leaf = ia.tensor([1.0], requires_grad=True)
    with pytest.raises(InvalidArgumentError, match="not a leaf"):
        optim.SGD([leaf * 2.0], lr=0.1)
    with pytest.raises(InvalidArgumentError, match="more than one parameter group"):
        optim.SGD([{"params": [leaf]}, {"params": [leaf]}], lr=0.1)
    with pytest.raises(InvalidArgumentError, match="lr must be"):
        optim.SGD([leaf], lr=-1.0)
    with pytest.raises(InvalidArgumentError, match="betas"):
        optim.AdamW([leaf], betas=(0.9, 1.0))
    with pytest.raises(InvalidArgumentError, match="nesterov"):
        optim.SGD([leaf], lr=0.1, nesterov=True)
    with pytest.raises(InvalidArgumentError, match="empty"):
        optim.AdamW([])
    with pytest.raises(InvalidArgumentError, match="unknown hyperparameter"):
        optim.AdamW([{"params": [leaf], "momentum": 0.9}])
