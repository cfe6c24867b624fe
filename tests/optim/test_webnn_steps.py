"""A training step on webnn is one graph per step signature: forward, backward and the
optimizer's update compile once, then every step reuses the graph (the optimizer's per-step
numbers, bias corrections and a scheduled learning rate, are graph inputs, not constants)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import ipfs_accelerate as ia
from ipfs_accelerate import ops, optim
from tests.conftest import start_backend


def _arrays() -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    return {
        "w0": rng.standard_normal((8, 6)).astype(np.float32) * 0.3,
        "b0": rng.standard_normal(8).astype(np.float32) * 0.1,
        "w1": rng.standard_normal((3, 8)).astype(np.float32) * 0.3,
        "x": rng.standard_normal((5, 6)).astype(np.float32),
        "y": rng.standard_normal((5, 3)).astype(np.float32),
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda p: optim.AdamW(p, lr=0.05, weight_decay=0.1),
        lambda p: optim.SGD(p, lr=0.05, momentum=0.9),
    ],
    ids=["adamw", "sgd"],
)
def test_steps_reuse_one_graph_and_equal_torch(make: Any) -> None:
    backend = start_backend("webnn")
    a = _arrays()
    params = {
        k: ia.tensor(v, device="webnn", requires_grad=True) for k, v in a.items() if k[0] in "wb"
    }
    x, y = ia.tensor(a["x"], device="webnn"), ia.tensor(a["y"], device="webnn")
    opt = make(list(params.values()))
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in a.items() if k[0] in "wb"}
    ref = (torch.optim.AdamW if isinstance(opt, optim.AdamW) else torch.optim.SGD)(
        list(theirs.values()), **{k: v for k, v in opt.defaults.items()}
    )
    compilations, dispatches = [], []
    for _ in range(6):
        before = (backend.stats.compilations, backend.stats.dispatches)
        opt.zero_grad()
        h = ops.relu(ops.linear(x, params["w0"], params["b0"]))
        ops.mse_loss(ops.linear(h, params["w1"]), y).backward()
        opt.step()
        params["w0"].numpy()
        compilations.append(backend.stats.compilations - before[0])
        dispatches.append(backend.stats.dispatches - before[1])
        ref.zero_grad()
        h_t = torch.relu(
            torch.nn.functional.linear(torch.from_numpy(a["x"]), theirs["w0"], theirs["b0"])
        )
        torch.nn.functional.mse_loss(
            torch.nn.functional.linear(h_t, theirs["w1"]), torch.from_numpy(a["y"])
        ).backward()
        ref.step()
        for group in (*opt.param_groups, *ref.param_groups):  # a learning-rate schedule
            group["lr"] *= 0.9
    # the first steps differ in structure (no state yet, then state from the first step);
    # from then on the same graph runs, once per step
    assert compilations[3:] == [0, 0, 0], compilations
    assert dispatches[3:] == [1, 1, 1], dispatches
    for k, p in params.items():
        np.testing.assert_allclose(p.numpy(), theirs[k].detach().numpy(), rtol=1e-4, atol=1e-5)


def test_the_contrastive_loss_reads_nothing_back_mid_step() -> None:
    # its labels are 0..N-1 by construction: no range check that would run a graph early
    backend = start_backend("webnn")
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in ((3, 8), (5, 8)))
    x = ia.tensor(a, device="webnn", requires_grad=True)
    before = backend.stats.dispatches
    ops.multiple_negatives_ranking_loss(x, ia.tensor(b, device="webnn")).backward()
    assert x.grad is not None
    got = x.grad.numpy()
    assert backend.stats.dispatches - before == 1
    ta = torch.tensor(a, requires_grad=True)
    scores = (
        torch.nn.functional.normalize(ta, dim=-1)
        @ torch.nn.functional.normalize(torch.from_numpy(b), dim=-1).T
    )
    torch.nn.functional.cross_entropy(scores * 20.0, torch.arange(3)).backward()
    assert ta.grad is not None
    np.testing.assert_allclose(got, ta.grad.numpy(), rtol=1e-4, atol=1e-6)
