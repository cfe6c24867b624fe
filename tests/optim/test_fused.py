"""The cpu backend's fused optimizer steps: taken when present, equal to torch.optim and to
the composed update, refused (composed instead) where writing in place would be wrong."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import ipfs_accelerate as ia
from ipfs_accelerate import hal, optim

KINDS: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "adamw": (optim.AdamW, torch.optim.AdamW, {"lr": 0.02, "weight_decay": 0.1}),
    "adamw-amsgrad": (optim.AdamW, torch.optim.AdamW, {"lr": 0.01, "amsgrad": True}),
    "sgd-nesterov": (
        optim.SGD,
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.02},
    ),
    "sgd-dampening": (optim.SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}),
    "sgd": (optim.SGD, torch.optim.SGD, {"lr": 0.1}),
}


def _arrays(seed: int, shape: tuple[int, ...] = (6, 4)) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _steps(opt: Any, params: list[Any], make_grad: Any, steps: int = 4) -> None:
    for step in range(steps):
        for i, p in enumerate(params):
            p.grad = make_grad(_arrays(100 + 10 * step + i, tuple(p.shape)))
        opt.step()


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_fused_step_runs_and_equals_torch_and_the_composed_update(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours_cls, torch_cls, kwargs = KINDS[kind]
    cpu = hal.get_backend("cpu")
    name = "adamw_step" if ours_cls is optim.AdamW else "sgd_step"
    calls: list[bool] = []
    original = getattr(cpu, name)

    def counting(*args: Any) -> bool:
        calls.append(original(*args))
        return calls[-1]

    monkeypatch.setattr(cpu, name, counting)
    fused = [ia.tensor(_arrays(i), requires_grad=True) for i in range(2)]
    _steps(ours_cls(fused, **kwargs), fused, ia.tensor)
    assert calls and all(calls)  # every update went through the kernel, in place

    monkeypatch.setattr(cpu, "fused", cpu.fused - {name})
    composed = [ia.tensor(_arrays(i), requires_grad=True) for i in range(2)]
    _steps(ours_cls(composed, **kwargs), composed, ia.tensor)
    theirs = [torch.tensor(_arrays(i), requires_grad=True) for i in range(2)]
    _steps(torch_cls(theirs, **kwargs), theirs, lambda a: torch.from_numpy(a.copy()))
    assert len(calls) == 8  # the composed run did not call the kernel
    for f, c, t in zip(fused, composed, theirs, strict=True):
        np.testing.assert_allclose(f.numpy(), t.detach().numpy(), rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(f.numpy(), c.numpy(), rtol=2e-6, atol=1e-7)


def test_the_gradient_is_only_read_and_the_parameter_updated_in_place() -> None:
    p = ia.tensor(_arrays(0), requires_grad=True)
    memory = p._data
    grad = _arrays(1)
    p.grad = ia.tensor(grad.copy())
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()
    opt.step()
    np.testing.assert_array_equal(p.grad.numpy(), grad)
    assert p._data is memory  # views of the parameter see the update, as with copy_


def test_a_saved_operand_changed_by_a_fused_step_is_reported() -> None:
    p = ia.tensor(_arrays(0), requires_grad=True)
    loss = (p * p).sum()
    p.grad = ia.tensor(_arrays(1))
    optim.AdamW([p], lr=0.1).step()
    with pytest.raises(ia.errors.AutogradError, match="modified in place"):
        loss.backward()


def test_state_dict_snapshots_do_not_follow_later_fused_steps() -> None:
    params = [ia.tensor(_arrays(0), requires_grad=True)]
    opt = optim.AdamW(params, lr=0.1)
    _steps(opt, params, ia.tensor, steps=1)
    saved = opt.state_dict()
    before = saved["state"][0]["exp_avg"].numpy().copy()
    _steps(opt, params, ia.tensor, steps=1)
    np.testing.assert_array_equal(saved["state"][0]["exp_avg"].numpy(), before)
    # and loading it does not tie the loaded optimizer's state to the dict's tensors
    other = [ia.tensor(_arrays(0), requires_grad=True)]
    loaded = optim.AdamW(other, lr=0.1)
    loaded.load_state_dict(saved)
    _steps(loaded, other, ia.tensor, steps=1)
    np.testing.assert_array_equal(saved["state"][0]["exp_avg"].numpy(), before)


def test_parameters_that_cannot_be_written_in_place_are_composed(tmp_path: Any) -> None:
    # a read-only (memory-mapped) weight: copy_ gives it a buffer of its own, the file stays
    path = tmp_path / "w.npy"
    np.save(path, _arrays(0))
    mapped = np.load(path, mmap_mode="r")
    p = ia.from_numpy(mapped).requires_grad_()
    q = torch.tensor(_arrays(0), requires_grad=True)
    p.grad, q.grad = ia.tensor(_arrays(1)), torch.from_numpy(_arrays(1))
    optim.AdamW([p], lr=0.1).step()
    torch.optim.AdamW([q], lr=0.1).step()
    np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=2e-5, atol=2e-6)
    np.testing.assert_array_equal(np.load(path), _arrays(0))
    # a gradient that is the parameter's own memory: updating in place would change it
    r = ia.tensor(_arrays(2), requires_grad=True)
    s = torch.tensor(_arrays(2), requires_grad=True)
    r.grad, s.grad = r.detach(), s.detach().clone()
    optim.SGD([r], lr=0.1, weight_decay=0.5).step()
    torch.optim.SGD([s], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(r.numpy(), s.detach().numpy(), rtol=2e-5, atol=2e-6)


def test_cpu_zeros_are_fresh_writable_memory_and_negative_zero_stays_negative() -> None:
    z = ia.zeros((3, 4))
    z[0, 0] = 5.0  # the zeros are a buffer of their own, not a shared read-only view
    assert z.numpy().sum() == 5.0 and ia.zeros((3, 4)).numpy().sum() == 0.0
    assert np.signbit(ia.full((2,), -0.0).numpy()).all()


@pytest.mark.parametrize("kind", ["adamw-amsgrad", "sgd-nesterov", "sgd-dampening"])
def test_a_parameter_updated_in_cache_sized_pieces_equals_torch(kind: str) -> None:
    from ipfs_accelerate.hal.cpu._optim import CHUNK

    ours_cls, torch_cls, kwargs = KINDS[kind]
    shape = (3, CHUNK + CHUNK // 3)  # several pieces, the last one short
    ours = [ia.tensor(_arrays(0, shape), requires_grad=True)]
    theirs = [torch.tensor(_arrays(0, shape), requires_grad=True)]
    _steps(ours_cls(ours, **kwargs), ours, ia.tensor, steps=3)
    _steps(torch_cls(theirs, **kwargs), theirs, lambda a: torch.from_numpy(a.copy()), steps=3)
    np.testing.assert_allclose(ours[0].numpy(), theirs[0].detach().numpy(), rtol=2e-5, atol=2e-6)
