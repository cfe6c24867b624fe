"""Graph semantics of the autograd engine, as torch's: leaves, accumulation, retain_graph,
no_grad/enable_grad, detach, shared leaves, diamonds, version counters, freeing the graph, and
the typed errors for misuse."""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import numpy as np
import pytest
import torch

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import (
    AutogradError,
    DeviceMismatchError,
    DtypeError,
    NonFiniteLossError,
    ShapeError,
    UnsupportedOpError,
)


def _grad(t: ia.Tensor) -> np.ndarray:
    assert t.grad is not None, "no gradient reached the leaf"
    return np.asarray(t.grad.numpy())


# ----------------------------------------------------------------------------- leaves


def test_creation_functions_make_leaves_that_require_grad() -> None:
    made = [
        ia.tensor([1.0, 2.0], requires_grad=True),
        ia.tensor.tensor([1.0], requires_grad=True),
        ia.zeros(2, 3, requires_grad=True),
        ia.ones(2, requires_grad=True),
        ia.full((2,), 3.0, requires_grad=True),
        ia.zeros_like(ia.ones(2), requires_grad=True),
        ia.ones_like(ia.ones(2), requires_grad=True),
        ia.full_like(ia.ones(2), 5.0, requires_grad=True),
        ia.arange(0.0, 3.0, requires_grad=True),
        ia.rand(2, seed=0, requires_grad=True),
        ia.randn(2, seed=0, requires_grad=True),
        ia.from_numpy(np.ones(3, np.float32), requires_grad=True),
    ]
    for t in made:
        assert t.requires_grad and t.is_leaf and t.grad_fn is None and t.grad is None
    plain = ia.ones(2)
    assert not plain.requires_grad and plain.is_leaf
    assert plain.requires_grad_() is plain and plain.requires_grad
    plain.requires_grad = False
    assert not plain.requires_grad


@pytest.mark.parametrize(
    "make",
    [
        lambda: ia.tensor([1, 2], requires_grad=True),
        lambda: ia.zeros(2, dtype="int64", requires_grad=True),
        lambda: ia.arange(3, requires_grad=True),
        lambda: ia.tensor([True], requires_grad=True),
        lambda: ia.ones(2, dtype="int32").requires_grad_(),
    ],
)
def test_integer_and_bool_tensors_cannot_require_grad(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DtypeError, match=r"only floating tensors can require grad, got (int|bool)"):
        make()


def test_results_are_not_leaves_and_cannot_be_made_leaves() -> None:
    x = ia.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2.0
    assert y.requires_grad and not y.is_leaf and y.grad_fn is not None
    assert "binary.mul" in repr(y.grad_fn)
    with pytest.raises(AutogradError, match="not a leaf"):
        y.requires_grad_(False)
    # integer and bool results never require grad
    assert not (x > 1.0).requires_grad
    assert not ops.argmax(x).requires_grad


# ----------------------------------------------------------------------------- accumulation


def test_gradients_accumulate_until_zeroed() -> None:
    x = ia.tensor([1.0, -2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(_grad(x), [2.0, -4.0, 6.0])
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(_grad(x), [5.0, -1.0, 9.0])
    x.grad = None
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(_grad(x), [3.0, 3.0, 3.0])


def test_a_leaf_used_twice_and_a_diamond_sum_their_paths() -> None:
    values = np.array([0.5, -1.0, 2.0], np.float32)
    x = ia.tensor(values, requires_grad=True)
    a = x.exp()
    left, right = a * 2.0, a.sin()  # diamond: x -> a -> (left, right) -> out
    out = (left * right + x * x).sum()
    out.backward()
    xt = torch.tensor(values, requires_grad=True)
    at = xt.exp()
    ((at * 2.0) * at.sin() + xt * xt).sum().backward()
    np.testing.assert_allclose(_grad(x), xt.grad.numpy(), rtol=1e-6)


def test_the_same_tensor_as_both_operands() -> None:
    x = ia.tensor([3.0], requires_grad=True)
    (x * x * x).sum().backward()
    np.testing.assert_allclose(_grad(x), [27.0])


def test_a_gradient_is_a_copy_not_an_alias_of_the_upstream_gradient() -> None:
    x = ia.tensor([1.0, 2.0], requires_grad=True)
    upstream = ia.tensor([5.0, 6.0])
    (x + 0.0).backward(upstream)
    upstream[0] = 100.0
    np.testing.assert_allclose(_grad(x), [5.0, 6.0])


def test_backward_of_a_leaf_itself() -> None:
    x = ia.tensor(2.0, requires_grad=True)
    x.backward()
    np.testing.assert_allclose(_grad(x), 1.0)


# ----------------------------------------------------------------------------- retain_graph


def test_backward_twice_needs_retain_graph() -> None:
    x = ia.tensor([1.0, 2.0], requires_grad=True)
    loss = (x.exp() * x).sum()
    loss.backward(retain_graph=True)
    first = _grad(x).copy()
    loss.backward()
    np.testing.assert_allclose(_grad(x), 2 * first, rtol=1e-6)
    with pytest.raises(AutogradError, match=r"second time \(.*\).*retain_graph=True"):
        loss.backward()


def test_a_second_backward_through_a_shared_freed_part_raises() -> None:
    x = ia.tensor([1.0, 2.0], requires_grad=True)
    hidden = x.tanh()
    hidden.sum().backward()
    with pytest.raises(AutogradError, match="unary.tanh"):
        (hidden * 2.0).sum().backward()


# ----------------------------------------------------------------------------- grad mode


def test_no_grad_records_nothing_and_enable_grad_reopens() -> None:
    x = ia.tensor([1.0, 2.0], requires_grad=True)
    with ia.no_grad():
        assert not ia.is_grad_enabled()
        y = x * 2.0
        with ia.enable_grad():
            z = x * 3.0
        w = x + 1.0
    assert ia.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None
    assert not w.requires_grad


def test_no_grad_and_enable_grad_are_decorators() -> None:
    x = ia.tensor([1.0], requires_grad=True)

    @ia.no_grad()
    def frozen(t: ia.Tensor) -> ia.Tensor:
        return t * 2.0

    @ia.enable_grad()
    def tracked(t: ia.Tensor) -> ia.Tensor:
        return t * 2.0

    assert not frozen(x).requires_grad
    with ia.no_grad():
        assert tracked(x).requires_grad
    assert frozen.__name__ == "frozen"


def test_detach_shares_data_and_stops_gradients() -> None:
    x = ia.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2.0
    d = y.detach()
    assert not d.requires_grad and d.is_leaf and d.grad_fn is None
    np.testing.assert_array_equal(d.numpy(), y.numpy())
    (x * d).sum().backward()  # d is a constant: the gradient is d, not 4x
    np.testing.assert_allclose(_grad(x), [2.0, 4.0])


# ----------------------------------------------------------------------------- in place


def test_in_place_change_of_a_saved_operand_raises_at_backward() -> None:
    w = ia.tensor([1.0, 2.0], requires_grad=True)
    x = ia.tensor([3.0, 4.0])
    y = (x * w).sum()  # mul saves x for w's gradient
    x[0] = 10.0
    with pytest.raises(AutogradError, match=r"modified in place \(version 1, saved at version 0\)"):
        y.backward()


def test_in_place_change_of_a_saved_result_raises_at_backward() -> None:
    w = ia.tensor([1.0, 2.0], requires_grad=True)
    e = (w * 1.0).detach()
    e.requires_grad_()
    y = e.exp()  # exp saves its result
    out = y.sum()
    with ia.no_grad():
        y[1] = 0.0
    with pytest.raises(AutogradError, match="output of unary.exp"):
        out.backward()


def test_an_unsaved_operand_may_change() -> None:
    w = ia.tensor([1.0, 2.0], requires_grad=True)
    x = ia.tensor([3.0, 4.0])
    y = (x + w).sum()  # add saves nothing
    x[0] = 10.0
    y.backward()
    np.testing.assert_allclose(_grad(w), [1.0, 1.0])


def test_writing_into_a_leaf_that_requires_grad() -> None:
    w = ia.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(AutogradError, match="leaf that requires grad"):
        w[0] = 5.0
    with ia.no_grad():  # how an optimizer updates parameters
        w[0] = 5.0
    np.testing.assert_allclose(w.numpy(), [5.0, 2.0])
    y = w * 2.0
    with pytest.raises(UnsupportedOpError, match="not differentiable"):
        y[0] = 1.0


# ----------------------------------------------------------------------------- memory


def test_the_graph_is_freed_after_backward() -> None:
    x = ia.tensor(np.ones((4, 4), np.float32), requires_grad=True)
    hidden = (x @ x).tanh()
    loss = (hidden * hidden).sum()
    node = weakref.ref(hidden.grad_fn)  # type: ignore[arg-type]
    saved = weakref.ref(hidden)
    del hidden
    assert saved() is not None  # the mul node keeps it for its backward
    loss.backward()
    gc.collect()
    assert saved() is None  # freed by backward, not by the cycle collector later
    del loss
    assert node() is None


def test_memory_does_not_grow_over_a_thousand_steps() -> None:
    w = ia.tensor(np.full((8, 8), 0.01, np.float32), requires_grad=True)
    x = ia.tensor(np.ones((4, 8), np.float32))

    def step() -> None:
        loss = ops.mse_loss((x @ w).tanh(), x)
        loss.backward()
        with ia.no_grad():
            w.grad = None

    for _ in range(50):
        step()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(1000):
        step()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 64 * 1024, f"{grown} bytes still held after 1000 steps"


# ----------------------------------------------------------------------------- bad input


def test_non_scalar_backward_needs_a_gradient() -> None:
    x = ia.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(AutogradError, match=r"has 2 elements: pass gradient="):
        (x * 2.0).backward()


def test_a_gradient_of_the_wrong_shape_dtype_or_device() -> None:
    x = ia.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2.0
    with pytest.raises(ShapeError, match=r"gradient of shape \(3,\) does not match .*\(2,\)"):
        y.backward(ia.ones(3))
    with pytest.raises(DtypeError, match="gradient dtype float64"):
        y.backward(ia.ones(2, dtype="float64"))
    with pytest.raises(DtypeError, match="must be a Tensor, got list"):
        y.backward([1.0, 1.0])  # type: ignore[arg-type]
    other = next((d for d in ia.hal.registered_backends() if d != "cpu"), None)
    if other is not None:
        try:
            elsewhere = ia.ones(2, device=other)
        except ia.errors.BackendUnavailableError:
            return
        with pytest.raises(DeviceMismatchError, match=rf"gradient is on '{other}'"):
            y.backward(elsewhere)


def test_backward_of_a_tensor_outside_the_graph() -> None:
    with pytest.raises(AutogradError, match="does not require grad"):
        ia.ones(1).sum().backward()


@pytest.mark.filterwarnings("ignore:invalid value encountered in log:RuntimeWarning")
def test_a_nan_loss_is_reported_naming_the_tensor() -> None:
    x = ia.tensor([1.0, -1.0], requires_grad=True)
    loss = x.log().sum()  # log(-1) is NaN
    with pytest.raises(NonFiniteLossError, match=r"Tensor\(shape=\(\), .*reduce.sum.* holds nan"):
        loss.backward()
    assert x.grad is None
    loss.backward(check_finite=False)  # asked for: the gradients of the finite terms
    np.testing.assert_allclose(_grad(x), [1.0, -1.0])


def test_a_primitive_without_a_backward_rule_says_so() -> None:
    # every primitive of the cpu backend has a rule; a backend's new primitive would not
    from ipfs_accelerate.tensor import _autograd

    x = ia.randn(2, seed=1, requires_grad=True)
    with pytest.raises(UnsupportedOpError, match=r"new_kernel: no backward rule.*ia.no_grad"):
        _autograd.record("new_kernel", (x,), x.detach())
    with ia.no_grad():  # nothing is recorded, so nothing is missing
        _autograd.record("new_kernel", (x,), x.detach())


def test_a_quantized_linear_passes_gradients_to_its_input() -> None:
    from ipfs_accelerate.quantization import quantize

    weight = quantize(ia.randn(4, 8, seed=0))
    bias = ia.randn(4, seed=2, requires_grad=True)
    x = ia.randn(3, 8, seed=1, requires_grad=True)
    upstream = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    ops.linear(x, weight, bias).backward(ia.tensor(upstream))
    dense = weight.dequantize_numpy()
    np.testing.assert_allclose(_grad(x), upstream @ dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_grad(bias), upstream.sum(0), rtol=1e-5)


def test_copy_updates_a_parameter_in_place_under_no_grad(device: str) -> None:
    w = ia.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    x = ia.tensor([1.0, 1.0, 2.0], device=device)
    loss = (w * w * x).sum()
    stale = (w * x).sum()  # saved w at version 0
    loss.backward()
    grad = w.grad
    assert grad is not None
    with pytest.raises(AutogradError, match="leaf that requires grad"):
        w.copy_(w - grad * 0.1)
    with ia.no_grad():
        assert w.copy_(w - grad * 0.1) is w
    np.testing.assert_allclose(w.numpy(), [0.8, 1.6, 1.8], rtol=1e-6)
    assert w.is_leaf and w.requires_grad and w.device == device
    with pytest.raises(AutogradError, match=r"modified in place \(version 1"):
        stale.backward()
    with ia.no_grad():
        w.copy_(0.5)  # a scalar broadcasts
        with pytest.raises(ShapeError, match="broadcast"):
            w.copy_(ia.ones(2, device=device))
    np.testing.assert_allclose(w.numpy(), [0.5, 0.5, 0.5])


def test_repr_shows_the_graph() -> None:
    x = ia.tensor([1.0], requires_grad=True)
    assert repr(x) == "Tensor([1.], dtype=float32, device='cpu', requires_grad=True)"
    assert repr(x * 2.0).endswith("grad_fn=<backward of binary.mul>)")


def test_training_steps_run_on_the_backend_of_the_tensors(device: str) -> None:
    backend = ia.get_backend(device)
    w1 = ia.randn(8, 16, seed=0, device=device, requires_grad=True)
    w2 = ia.randn(3, 16, seed=1, device=device, requires_grad=True)
    x = ia.randn(4, 8, seed=2, device=device)
    y = ia.tensor([0, 1, 2, 1], device=device)
    losses, compiled = [], []
    for _ in range(4):
        before = getattr(getattr(backend, "stats", None), "compilations", 0)
        loss = ops.cross_entropy(ops.linear(ops.gelu(x @ w1), w2), y)
        loss.backward()
        with ia.no_grad():
            for p in (w1, w2):
                assert p.grad is not None and p.grad.device == device
                p.copy_(p - p.grad * 0.1)
                p.grad = None
        losses.append(loss.item())
        w1.numpy(), w2.numpy()
        compiled.append(getattr(getattr(backend, "stats", None), "compilations", 0) - before)
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.8 * losses[0]
    if device == "webnn":  # forward and backward traced once, then the compiled graphs reused
        assert compiled[0] > 0 and compiled[1:] == [0, 0, 0]


def test_leaves_fed_by_one_gradient_get_separate_buffers() -> None:
    a = ia.tensor([1.0, 2.0], requires_grad=True)
    b = ia.tensor([3.0, 4.0], requires_grad=True)
    c = ia.tensor([[1.0, 1.0]], requires_grad=True)
    (a + b + c.reshape(2)).backward(ia.tensor([1.0, 1.0]))  # one gradient reaches all three
    assert a.grad is not None and b.grad is not None and c.grad is not None
    a.grad[0] = 7.0
    assert b.grad.tolist() == [1.0, 1.0] and c.grad.tolist() == [[1.0, 1.0]]


def test_gradients_cross_devices_with_explicit_moves(device: str) -> None:
    x = ia.tensor([1.0, 2.0, 3.0], requires_grad=True)  # a cpu leaf
    moved = x.to(device)
    assert moved.requires_grad and (device == "cpu" or moved.grad_fn is not None)
    loss = (moved * moved).sum().to("cpu")
    loss.backward()
    assert x.grad is not None and x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0], rtol=1e-6)


def test_a_write_through_a_view_counts_for_every_view() -> None:
    w = ia.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    base = ia.tensor([[1.0, 2.0], [3.0, 4.0]])
    flat = base.reshape(4)  # on cpu: a view of base's memory
    loss = (flat * w).sum()  # saves flat
    base[0, 0] = 9.0  # changes what flat holds
    with pytest.raises(AutogradError, match=r"modified in place \(version 1, saved at version 0\)"):
        loss.backward()


def test_a_pickled_leaf_keeps_requires_grad_and_a_result_comes_back_as_data() -> None:
    import pickle

    w = ia.tensor([1.0, 2.0], requires_grad=True)
    back = pickle.loads(pickle.dumps(w))
    assert back.requires_grad and back.is_leaf and back.tolist() == [1.0, 2.0]
    result = pickle.loads(pickle.dumps(w * 2.0))
    assert not result.requires_grad and result.tolist() == [2.0, 4.0]
