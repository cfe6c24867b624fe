"""optim.compile_step: on webnn a training step is traced, then captured, then replayed as one
graph per step with the batch, parameters, optimizer state, step numbers and dropout masks
as inputs; the replayed steps give the parameters the traced steps give (and torch.optim's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import ipfs_accelerate as ia
from ipfs_accelerate import ops, optim
from ipfs_accelerate.errors import InvalidArgumentError, NonFiniteLossError
from tests.conftest import start_backend

STEPS = 5


def _arrays() -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    return {
        "w0": rng.standard_normal((8, 6)).astype(np.float32) * 0.3,
        "b0": rng.standard_normal(8).astype(np.float32) * 0.1,
        "w1": rng.standard_normal((3, 8)).astype(np.float32) * 0.3,
    }


def _batches() -> list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    rng = np.random.default_rng(1)
    return [
        (rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 3, 5).astype(np.int64))
        for _ in range(STEPS)
    ]


OPTIMIZERS: dict[str, Callable[[Any], Any]] = {
    "adamw": lambda p: optim.AdamW(p, lr=0.05, weight_decay=0.1),
    "sgd": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
}


def _model(device: str, dropout: np.random.Generator | None) -> tuple[dict[str, ia.Tensor], Any]:
    params = {k: ia.tensor(v, device=device, requires_grad=True) for k, v in _arrays().items()}

    def loss_fn(x: ia.Tensor, y: ia.Tensor) -> ia.Tensor:
        h = ops.relu(ops.linear(x, params["w0"], params["b0"]))
        if dropout is not None:
            h = ops.dropout(h, 0.25, seed=dropout)
        return ops.cross_entropy(ops.linear(h, params["w1"]), y)

    return params, loss_fn


def _train(
    device: str, kind: str, *, compiled: bool, dropout: bool, host: bool | None = None
) -> list[dict[str, np.ndarray[Any, Any]]]:
    """The parameters after each step, the learning rate halved after every step."""
    params, loss_fn = _model(device, np.random.default_rng(7) if dropout else None)
    opt = OPTIMIZERS[kind](list(params.items()))
    step = optim.compile_step(loss_fn, opt, host_update=host)
    assert step.host_update is (device == "webnn" if host is None else host)
    out = []
    for x, y in _batches():
        if compiled:
            step(x, y)
        else:
            opt.zero_grad()
            loss_fn(ia.tensor(x, device=device), ia.tensor(y, device=device)).backward()
            opt.step()
        out.append({k: p.numpy().copy() for k, p in params.items()})  # cpu: numpy() shares
        for group in opt.param_groups:
            group["lr"] *= 0.5
    return out


def _torch(kind: str) -> list[dict[str, np.ndarray[Any, Any]]]:
    params = {k: torch.tensor(v, requires_grad=True) for k, v in _arrays().items()}
    defaults = OPTIMIZERS[kind]([ia.tensor([0.0], requires_grad=True)]).defaults
    ref = (torch.optim.AdamW if kind == "adamw" else torch.optim.SGD)(
        list(params.values()), **defaults
    )
    out = []
    for x, y in _batches():
        ref.zero_grad()
        h = torch.relu(torch.nn.functional.linear(torch.from_numpy(x), params["w0"], params["b0"]))
        logits = torch.nn.functional.linear(h, params["w1"])
        torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).backward()
        ref.step()
        out.append({k: p.detach().numpy().copy() for k, p in params.items()})
        for group in ref.param_groups:
            group["lr"] *= 0.5
    return out


@pytest.mark.parametrize("host", [True, False], ids=["host-update", "graph-update"])
@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_replayed_steps_equal_traced_steps_and_torch_optim(kind: str, host: bool) -> None:
    """Both arrangements of a replayed step: the update on the host from the graph's
    gradients (the default where the backend computes on the host CPU), and inside it."""
    start_backend("webnn")
    replayed = _train("webnn", kind, compiled=True, dropout=False, host=host)
    traced = _train("webnn", kind, compiled=False, dropout=False)
    reference = _torch(kind)
    # step 1 runs traced, step 2 is captured and replayed, steps 3.. are replays only; the
    # halved learning rate of every step reaches the replays (it is an input, not a constant)
    for ours, theirs, torchs in zip(replayed, traced, reference, strict=True):
        for key in ours:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ours[key], torchs[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("host", [True, False], ids=["host-update", "graph-update"])
def test_replayed_dropout_draws_the_masks_the_traced_steps_draw(host: bool) -> None:
    start_backend("webnn")
    replayed = _train("webnn", "adamw", compiled=True, dropout=True, host=host)
    traced = _train("webnn", "adamw", compiled=False, dropout=True)
    on_cpu = _train("cpu", "adamw", compiled=False, dropout=True)
    undropped = _train("webnn", "adamw", compiled=True, dropout=False)
    for ours, theirs, cpu in zip(replayed, traced, on_cpu, strict=True):
        for key in ours:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ours[key], cpu[key], rtol=1e-5, atol=1e-5)
    # the masks differ from step to step and do something: not frozen, not skipped
    assert not np.allclose(replayed[-1]["w0"], undropped[-1]["w0"], atol=1e-4)


def test_after_warm_up_a_step_is_one_dispatch_and_no_compilation() -> None:
    backend = start_backend("webnn")
    params, loss_fn = _model("webnn", np.random.default_rng(0))
    step = optim.compile_step(loss_fn, optim.AdamW(list(params.items()), lr=0.01))
    counts = []
    for x, y in _batches():
        before = (backend.stats.compilations, backend.stats.dispatches, backend.stats.traced_ops)
        step(x, y).item()
        counts.append(
            (
                backend.stats.compilations - before[0],
                backend.stats.dispatches - before[1],
                backend.stats.traced_ops - before[2],
            )
        )
    assert step.captured == 1
    assert counts[2:] == [(0, 1, 0)] * (STEPS - 2), counts


def test_a_changed_learning_rate_takes_effect_on_replay() -> None:
    start_backend("webnn")
    params, loss_fn = _model("webnn", None)
    opt = optim.AdamW(list(params.items()), lr=0.05, weight_decay=0.1)
    step = optim.compile_step(loss_fn, opt)
    (x, y), *_ = _batches()
    step(x, y)
    step(x, y)  # captured
    before = {k: p.numpy() for k, p in params.items()}
    opt.param_groups[0]["lr"] = 0.0  # no update, no decay
    step(x, y)
    for key, value in before.items():
        np.testing.assert_array_equal(params[key].numpy(), value)
    opt.param_groups[0]["lr"] = 0.05
    step(x, y)
    assert not np.allclose(params["w0"].numpy(), before["w0"])
    assert step.captured == 1
    assert opt.state[0]["step"] == 4


def test_capture_refuses_a_loss_that_reads_an_undeclared_tensor() -> None:
    start_backend("webnn")
    params, _ = _model("webnn", None)
    batches = iter(_batches())

    def loss_fn(y: ia.Tensor) -> ia.Tensor:
        x = ia.tensor(next(batches)[0], device="webnn")  # the batch made inside the loss
        return ops.cross_entropy(ops.linear(x, params["w0"]), y)

    step = optim.compile_step(loss_fn, optim.SGD(list(params.items()), lr=0.1))
    y = np.zeros(5, dtype=np.int64)
    step(y)  # traced: fine
    with pytest.raises(InvalidArgumentError, match="not one of its inputs"):
        step(y)


def test_check_finite_drops_a_replayed_step_with_a_nan_loss() -> None:
    start_backend("webnn")
    params, loss_fn = _model("webnn", None)
    opt = optim.AdamW(list(params.items()), lr=0.05)
    step = optim.compile_step(loss_fn, opt, check_finite=True)
    (x, y), *_ = _batches()
    step(x, y)
    step(x, y)
    before = {k: p.numpy() for k, p in params.items()}
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(NonFiniteLossError, match="nan"):
        step(bad, y)
    for key, value in before.items():
        np.testing.assert_array_equal(params[key].numpy(), value)
    assert opt.state[0]["step"] == 2
    step(x, y)  # and training goes on
    assert opt.state[0]["step"] == 3


def test_on_cpu_the_step_runs_eagerly_and_equals_torch() -> None:
    ours = _train("cpu", "adamw", compiled=True, dropout=False)
    for mine, theirs in zip(ours, _torch("adamw"), strict=True):
        for key in mine:
            np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_named() -> None:
    params, loss_fn = _model("cpu", None)
    opt = optim.SGD(list(params.items()), lr=0.1)
    with pytest.raises(InvalidArgumentError, match="max_grad_norm"):
        optim.compile_step(loss_fn, opt, max_grad_norm=-1.0)
    with pytest.raises(InvalidArgumentError, match="optimizer"):
        optim.compile_step(loss_fn, object())  # type: ignore[arg-type]
    step = optim.compile_step(loss_fn, opt)
    with pytest.raises(InvalidArgumentError, match="batch input 1"):
        step(np.zeros((5, 6), np.float32), [0, 1, 2, 0, 1])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="0-d tensor"):
        optim.compile_step(lambda x: x, opt)(np.zeros(3, np.float32))
    with pytest.raises(InvalidArgumentError, match="host_update=True needs"):
        optim.compile_step(loss_fn, opt, host_update=True)  # cpu does not capture
    with pytest.raises(InvalidArgumentError, match="host_update must be"):
        optim.compile_step(loss_fn, opt, host_update="yes")  # type: ignore[arg-type]


def _host_array(t: ia.Tensor) -> np.ndarray[Any, Any]:
    array = t._backend.read_host(t)
    assert array is not None
    return array.base if array.base is not None else array


def test_host_update_writes_in_place_and_spares_what_others_still_read() -> None:
    """Replayed host-update steps write the parameters' and the state's own arrays in place
    (nothing parameter-sized allocated per step); a computation queued before a step, or
    a detached tensor, still reads the values it was given, and a state_dict loaded between
    replays is what the next step continues from."""
    start_backend("webnn")
    params, loss_fn = _model("webnn", None)
    opt = optim.AdamW(list(params.items()), lr=0.05, weight_decay=0.1)
    step = optim.compile_step(loss_fn, opt)
    batches = _batches()
    for x, y in batches[:3]:
        step(x, y)
    w0 = params["w0"]
    arrays = [_host_array(w0), _host_array(opt.state[0]["exp_avg"])]
    step(*batches[3])
    assert _host_array(w0) is arrays[0]
    assert _host_array(opt.state[0]["exp_avg"]) is arrays[1]
    before = w0.numpy()
    queued = w0 * 1.0  # not computed yet: reads w0's current values when it is
    held = w0.detach()
    step(*batches[4])
    np.testing.assert_array_equal(queued.numpy(), before)
    np.testing.assert_array_equal(held.numpy(), before)
    assert not np.array_equal(w0.numpy(), before)
    # a state_dict and parameters loaded back between replays: the next step continues
    # from them (the host arrays are rebuilt from what was loaded)
    saved = opt.state_dict()
    values = {k: p.numpy() for k, p in params.items()}
    step(*batches[0])
    first = {k: p.numpy() for k, p in params.items()}
    opt.load_state_dict(saved)
    with ia.no_grad():
        for key, value in values.items():
            params[key].copy_(ia.tensor(value, device="webnn"))
    step(*batches[0])
    for key, value in first.items():
        np.testing.assert_array_equal(params[key].numpy(), value)
    assert opt.state[0]["step"] == 6


def _two_groups(device: str) -> tuple[dict[str, ia.Tensor], Any, Any]:
    params = {k: ia.tensor(v, device=device, requires_grad=True) for k, v in _arrays().items()}
    unused = ia.tensor(np.ones(4, np.float32), device=device, requires_grad=True)
    params["unused"] = unused
    opt = optim.AdamW(
        [
            {"params": [params["w0"], params["b0"]], "lr": 0.05},
            {"params": [params["w1"], unused], "lr": 0.01, "weight_decay": 0.5},
        ]
    )

    def loss_fn(x: ia.Tensor, y: ia.Tensor) -> ia.Tensor:
        h = ops.relu(ops.linear(x, params["w0"], params["b0"]))
        return ops.cross_entropy(ops.linear(h, params["w1"]), y)

    return params, opt, loss_fn


@pytest.mark.parametrize("host", [True, False], ids=["host-update", "graph-update"])
def test_groups_an_unreached_parameter_and_eager_steps_between_replays(host: bool) -> None:
    start_backend("webnn")
    results = []
    for compiled in (True, False):
        params, opt, loss_fn = _two_groups("webnn")
        step = optim.compile_step(loss_fn, opt, host_update=host if compiled else None)
        for index, (x, y) in enumerate(_batches() * 2):
            if compiled and index != 6:
                step(x, y)
            else:  # one eager step between replays moves the parameters' step counts on
                opt.zero_grad()
                loss_fn(ia.tensor(x, device="webnn"), ia.tensor(y, device="webnn")).backward()
                opt.step()
        results.append({k: p.numpy() for k, p in params.items()})
        assert step.captured == (1 if compiled else 0)
        assert 3 not in opt.state  # the unreached parameter: never updated
    for key in results[0]:
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(results[0]["unused"], np.ones(4, np.float32))


def test_reset_forgets_the_captured_steps() -> None:
    start_backend("webnn")
    params, loss_fn = _model("webnn", None)
    step = optim.compile_step(loss_fn, optim.SGD(list(params.items()), lr=0.1))
    (x, y), *_ = _batches()
    step(x, y)
    step(x, y)
    assert step.captured == 1
    step.reset()
    assert step.captured == 0
    step(x, y)  # traced again
    assert step.captured == 0
    step(x, y)
    assert step.captured == 1
