"""Gradients of the op set against torch.autograd on the same inputs, on every backend, and
against central finite differences in float64 on cpu.

Each case runs an op on seeded random inputs (broadcasting, keepdims, negative axes, ties,
non-contiguous views), sends a random upstream gradient back through it, and compares every
input's gradient with torch's. The cpu backend runs every case; webgpu and webnn run the cases
marked ``everywhere`` (the backward rules are the same ops, so a few cases cover their
kernels without making the suite slow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ipfs_accelerate as ia
from ipfs_accelerate import ops


@dataclass
class Case:
    name: str
    ours: Callable[..., Any]
    ref: Callable[..., Any]
    inputs: Callable[[np.random.Generator], list[np.ndarray]]
    #: which inputs require grad (default: every floating input)
    grads: tuple[bool, ...] | None = None
    everywhere: bool = False
    marks: list[Any] = field(default_factory=list)


def _f(*shape: int, low: float = -2.0, high: float = 2.0) -> Callable[[np.random.Generator], Any]:
    return lambda rng: rng.uniform(low, high, size=shape).astype(np.float32)


def _inputs(*makers: Callable[[np.random.Generator], Any]) -> Any:
    return lambda rng: [m(rng) for m in makers]


def _ties(*shape: int) -> Callable[[np.random.Generator], Any]:
    return lambda rng: rng.integers(-2, 3, size=shape).astype(np.float32)


def _ints(high: int, *shape: int) -> Callable[[np.random.Generator], Any]:
    return lambda rng: rng.integers(0, high, size=shape).astype(np.int64)


def _unary(name: str, ours: Any, ref: Any, low: float = -2.0, high: float = 2.0, **kw: Any) -> Case:
    return Case(name, ours, ref, _inputs(_f(3, 4, low=low, high=high)), **kw)


CASES = [
    # ------------------------------------------------------------------ element-wise, unary
    _unary("neg", lambda x: -x, lambda x: -x),
    _unary("abs", ops.abs, torch.abs),
    _unary("square", ops.square, torch.square),
    _unary("exp", ops.exp, torch.exp, everywhere=True),
    _unary("log", ops.log, torch.log, low=0.2, high=3.0),
    _unary("sqrt", ops.sqrt, torch.sqrt, low=0.2, high=3.0),
    _unary("rsqrt", ops.rsqrt, torch.rsqrt, low=0.2, high=3.0),
    _unary("reciprocal", ops.reciprocal, torch.reciprocal, low=0.5, high=3.0),
    _unary("erf", ops.erf, torch.erf),
    _unary("sin", ops.sin, torch.sin),
    _unary("cos", ops.cos, torch.cos),
    _unary("tanh", ops.tanh, torch.tanh, everywhere=True),
    _unary("sigmoid", ops.sigmoid, torch.sigmoid),
    _unary("silu", ops.silu, F.silu),
    _unary("relu", ops.relu, torch.relu),
    _unary("gelu", ops.gelu, F.gelu, everywhere=True),
    _unary(
        "gelu_tanh",
        lambda x: ops.gelu(x, approximate="tanh"),
        lambda x: F.gelu(x, approximate="tanh"),
    ),
    Case("relu at zero", ops.relu, torch.relu, _inputs(_ties(4, 5))),
    _unary("floor", ops.floor, torch.floor),
    # ------------------------------------------------------------------ element-wise, binary
    Case("add broadcast", lambda a, b: a + b, lambda a, b: a + b,
         _inputs(_f(3, 1, 4), _f(2, 1)), everywhere=True),
    Case("sub broadcast", lambda a, b: a - b, lambda a, b: a - b, _inputs(_f(4,), _f(2, 3, 4))),
    Case("mul broadcast", lambda a, b: a * b, lambda a, b: a * b,
         _inputs(_f(2, 3, 4), _f(3, 1)), everywhere=True),
    Case("div broadcast", lambda a, b: a / b, lambda a, b: a / b,
         _inputs(_f(2, 3), _f(1, 3, low=0.5, high=2.0))),
    Case("pow", lambda a, b: a**b, lambda a, b: a**b,
         _inputs(_f(3, 4, low=0.3, high=2.0), _f(4, low=-1.5, high=2.0))),
    Case("scalar arithmetic", lambda x: (3.0 - x) * 2.5 / (x * x + 1.0) + 2.0 / (x + 3.0),
         lambda x: (3.0 - x) * 2.5 / (x * x + 1.0) + 2.0 / (x + 3.0), _inputs(_f(5))),
    Case("scalar power", lambda x: x**3 + 2.0**x, lambda x: x**3 + 2.0**x, _inputs(_f(2, 3))),
    Case("maximum ties", ops.maximum, torch.maximum, _inputs(_ties(3, 4), _ties(4))),
    Case("minimum ties", ops.minimum, torch.minimum, _inputs(_ties(3, 4), _ties(3, 1))),
    Case("where broadcast", lambda c, a, b: ops.where(c > 0, a, b),
         lambda c, a, b: torch.where(c > 0, a, b), _inputs(_f(3, 4), _f(4), _f(3, 1)),
         grads=(False, True, True)),
    Case("clamp at bounds", lambda x: ops.clamp(x, -1.0, 1.0), lambda x: torch.clamp(x, -1, 1),
         _inputs(_ties(4, 5))),
    Case("clamp tensor bounds", lambda x, lo: ops.clamp(x, lo, 1.5),
         lambda x, lo: torch.clamp(x, min=lo, max=torch.tensor(1.5)),
         _inputs(_f(3, 4), _f(4, low=-1.0, high=0.0))),
    Case("clamp tensor bounds ties", lambda x, lo, hi: ops.clamp(x, lo, hi),
         lambda x, lo, hi: torch.clamp(x, lo, hi), _inputs(_ties(3, 4), _ties(4), _ties(3, 1))),
    Case("remainder", ops.remainder, torch.remainder,
         _inputs(_f(3, 4, low=-3, high=3), _f(4, low=0.7, high=1.5))),
    Case("float64 promotion", lambda a, b: a * b, lambda a, b: a * b,
         lambda rng: [_f(3)(rng), _f(3)(rng).astype(np.float64)]),
    # ------------------------------------------------------------------ reductions
    Case("sum axes keepdims", lambda x: ops.sum(x, (0, -1), keepdims=True),
         lambda x: torch.sum(x, (0, -1), keepdim=True), _inputs(_f(2, 3, 4)), everywhere=True),
    Case("sum all", lambda x: x.sum(), lambda x: x.sum(), _inputs(_f(2, 3, 4))),
    Case("mean negative axis", lambda x: ops.mean(x, -2), lambda x: torch.mean(x, -2),
         _inputs(_f(2, 3, 4)), everywhere=True),
    Case("max ties all", lambda x: ops.max(x), lambda x: torch.amax(x, (0, 1)),
         _inputs(_ties(3, 4))),
    Case("max ties axis", lambda x: ops.max(x, 1, keepdims=True),
         lambda x: torch.amax(x, 1, keepdim=True), _inputs(_ties(3, 5)), everywhere=True),
    Case("min ties axes", lambda x: ops.min(x, (0, -1)), lambda x: torch.amin(x, (0, -1)),
         _inputs(_ties(3, 2, 4))),
    Case("prod", lambda x: ops.prod(x, -1), lambda x: torch.prod(x, -1),
         _inputs(_f(3, 4, low=0.5, high=1.5))),
    Case("prod with zeros", lambda x: ops.prod(x, 1), lambda x: torch.prod(x, 1),
         lambda rng: [np.array([[0, 2, 3], [0, 0, 2], [1, 2, 3]], np.float32)]),
    Case("var correction", lambda x: ops.var(x, -1, correction=1),
         lambda x: torch.var(x, -1, correction=1), _inputs(_f(3, 5))),
    Case("std keepdims", lambda x: ops.std(x, 0, keepdims=True),
         lambda x: torch.std(x, 0, correction=0, keepdim=True), _inputs(_f(4, 3))),
    # ------------------------------------------------------------------ matrix
    Case("matmul batched broadcast", ops.matmul, torch.matmul,
         _inputs(_f(2, 1, 3, 4), _f(5, 4, 2)), everywhere=True),
    Case("matmul vector", ops.matmul, torch.matmul, _inputs(_f(4), _f(3, 4, 2))),
    Case("matmul matrix vector", ops.matmul, torch.matmul, _inputs(_f(3, 4), _f(4))),
    Case("linear", ops.linear, F.linear, _inputs(_f(2, 3, 4), _f(5, 4), _f(5)), everywhere=True),
    Case("linear no bias", ops.linear, F.linear, _inputs(_f(3, 4), _f(2, 4))),
    Case("non-contiguous operands", lambda a, b: ops.matmul(a.T, b.transpose(1, 0)) * a.T[:, :1],
         lambda a, b: torch.matmul(a.T, b.transpose(1, 0)) * a.T[:, :1],
         _inputs(_f(4, 3), _f(2, 4))),
    # ------------------------------------------------------------------ shape
    Case("reshape", lambda x: x.reshape(4, -1) * 2.0, lambda x: x.reshape(4, -1) * 2.0,
         _inputs(_f(2, 3, 2))),
    Case("permute", lambda x: x.permute(2, 0, 1), lambda x: x.permute(2, 0, 1),
         _inputs(_f(2, 3, 4)), everywhere=True),
    Case("getitem steps", lambda x: x[1:, ::-2, None, 2],
         lambda x: x[1:, torch.arange(4, -1, -2), None, 2],
         _inputs(_f(3, 5, 4)), everywhere=True),
    Case("getitem strided", lambda x: x[..., 1::3], lambda x: x[..., 1::3], _inputs(_f(2, 8))),
    Case("getitem array", lambda x: x[[0, 2, 0, -1]], lambda x: x[[0, 2, 0, -1]],
         _inputs(_f(4, 3))),
    Case("boolean mask", lambda x: x[x > 0], lambda x: x[x > 0], _inputs(_f(3, 4))),
    Case("concat", lambda a, b: ops.concat([a, b, a], axis=-1),
         lambda a, b: torch.cat([a, b, a], -1), _inputs(_f(2, 3), _f(2, 2)), everywhere=True),
    Case("stack", lambda a, b: ops.stack([a, b], 1), lambda a, b: torch.stack([a, b], 1),
         _inputs(_f(2, 3), _f(2, 3))),
    Case("split", lambda x: ops.split(x, sizes=[1, 3, 1], axis=1)[1] * ops.split(x, 5, 1)[4],
         lambda x: torch.split(x, [1, 3, 1], 1)[1] * torch.split(x, 1, 1)[4],
         _inputs(_f(2, 5))),
    Case("gather repeats", lambda x: ops.gather(x, [[2, 0], [2, -1]], axis=1),
         lambda x: x[:, torch.tensor([[2, 0], [2, -1]]) % 3], _inputs(_f(3, 3, 2)),
         everywhere=True),
    Case("expand", lambda x: x.expand(2, -1, 4), lambda x: x.expand(2, -1, 4),
         _inputs(_f(3, 1))),
    Case("squeeze unsqueeze", lambda x: x.squeeze(1).unsqueeze(0).flatten(),
         lambda x: x.squeeze(1).unsqueeze(0).flatten(), _inputs(_f(2, 1, 3))),
    Case("pad constant", lambda x: ops.pad(x, ((1, 2), (0, 3)), value=1.5),
         lambda x: F.pad(x, (0, 3, 1, 2), value=1.5), _inputs(_f(2, 3)), everywhere=True),
    Case("pad edge", lambda x: ops.pad(x, ((2, 1), (1, 2)), mode="edge"),
         lambda x: F.pad(x[None], (1, 2, 2, 1), mode="replicate")[0], _inputs(_f(3, 3))),
    Case("pad reflect", lambda x: ops.pad(x, ((2, 1), (1, 2)), mode="reflect"),
         lambda x: F.pad(x[None], (1, 2, 2, 1), mode="reflect")[0], _inputs(_f(4, 4))),
    # ------------------------------------------------------------------ nn
    Case("softmax", lambda x: ops.softmax(x, 0), lambda x: torch.softmax(x, 0),
         _inputs(_f(3, 4)), everywhere=True),
    Case("log_softmax", lambda x: ops.log_softmax(x, -1), lambda x: torch.log_softmax(x, -1),
         _inputs(_f(2, 3, 5)), everywhere=True),
    Case("layer_norm affine", lambda x, w, b: ops.layer_norm(x, (3, 4), w, b),
         lambda x, w, b: F.layer_norm(x, (3, 4), w, b), _inputs(_f(2, 3, 4), _f(3, 4), _f(3, 4)),
         everywhere=True),
    Case("layer_norm plain", lambda x: ops.layer_norm(x, 5), lambda x: F.layer_norm(x, (5,)),
         _inputs(_f(3, 5))),
    Case("embedding", lambda w: ops.embedding([[1, 3], [1, 1]], w),
         lambda w: F.embedding(torch.tensor([[1, 3], [1, 1]]), w), _inputs(_f(5, 3)),
         everywhere=True),
    Case("embedding padding_idx", lambda w: ops.embedding([[1, 0], [0, 3]], w, padding_idx=0),
         lambda w: F.embedding(torch.tensor([[1, 0], [0, 3]]), w, padding_idx=0),
         _inputs(_f(4, 3))),
    Case("attention bool mask",
         lambda q, k, v, m: ops.scaled_dot_product_attention(q, k, v, m > 0.5),
         lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m > 0.5),
         _inputs(_f(2, 3, 4), _f(2, 5, 4), _f(2, 5, 3), _f(3, 5, low=0.3, high=1.0)),
         grads=(True, True, True, False), everywhere=True),
    Case("attention causal",
         lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3),
         lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3),
         _inputs(_f(1, 2, 4, 3), _f(2, 1, 4, 3), _f(1, 4, 2))),
    Case("attention float mask",
         ops.scaled_dot_product_attention, F.scaled_dot_product_attention,
         _inputs(_f(2, 3, 4), _f(2, 3, 4), _f(2, 3, 2), _f(3, 3))),
    # ------------------------------------------------------------------ losses
    Case("mse mean", ops.mse_loss, F.mse_loss, _inputs(_f(3, 4), _f(3, 4)), everywhere=True),
    Case("mse sum", lambda a, b: ops.mse_loss(a, b, reduction="sum"),
         lambda a, b: F.mse_loss(a, b, reduction="sum"), _inputs(_f(5), _f(5)),
         grads=(True, False)),
    Case("cross_entropy ignore smoothing",
         lambda x, t: ops.cross_entropy(x, t, ignore_index=2, label_smoothing=0.1),
         lambda x, t: F.cross_entropy(x, t, ignore_index=2, label_smoothing=0.1),
         _inputs(_f(6, 4), lambda rng: np.array([0, 2, 3, 1, 2, 3])), everywhere=True),
    Case("cross_entropy spatial sum",
         lambda x, t: ops.cross_entropy(x, t, reduction="sum"),
         lambda x, t: F.cross_entropy(x, t, reduction="sum"),
         _inputs(_f(2, 3, 4), _ints(3, 2, 4))),
    Case("cross_entropy probabilities",
         lambda x, t: ops.cross_entropy(x, t, label_smoothing=0.2),
         lambda x, t: F.cross_entropy(x, t, label_smoothing=0.2),
         _inputs(_f(3, 4), lambda rng: rng.dirichlet(np.ones(4), 3).astype(np.float32)),
         grads=(True, True)),
]  # fmt: skip


def _run(case: Case, device: str, dtype: Any = None) -> tuple[list[Any], list[Any], list[bool]]:
    """(our gradients, torch's, which inputs have one) for a seeded run of ``case``."""
    rng = np.random.default_rng(abs(hash(case.name)) % 2**32)
    arrays = case.inputs(rng)
    if dtype is not None:
        arrays = [a.astype(dtype) if a.dtype.kind == "f" else a for a in arrays]
    wants = case.grads or tuple(a.dtype.kind == "f" for a in arrays)
    ours = [
        ia.tensor(a, dtype=a.dtype.name, device=device, requires_grad=w)
        for a, w in zip(arrays, wants, strict=True)
    ]
    refs = [torch.tensor(a, requires_grad=bool(w)) for a, w in zip(arrays, wants, strict=True)]
    out = case.ours(*ours)
    ref_out = case.ref(*refs)
    assert out.shape == tuple(ref_out.shape), case.name
    if out.size == 1 and out.ndim == 0:
        out.backward()
        ref_out.backward()
    else:
        upstream = rng.standard_normal(out.shape).astype(out.dtype.numpy)
        out.backward(ia.tensor(upstream, dtype=out.dtype.name, device=device))
        ref_out.backward(torch.tensor(upstream))
    got = [t.grad.numpy() if w else None for t, w in zip(ours, wants, strict=True)]
    ref = [r.grad.numpy() if w else None for r, w in zip(refs, wants, strict=True)]
    return got, ref, list(wants)


def _cases(everywhere: bool) -> list[Any]:
    return [pytest.param(c, id=c.name.replace(" ", "-")) for c in CASES
            if c.everywhere == everywhere]  # fmt: skip


@pytest.mark.parametrize("case", _cases(False))
def test_gradient_matches_torch_on_cpu(case: Case) -> None:
    """The cases not marked ``everywhere``: the rules are the same ops on every backend, so
    the cases marked everywhere (below) cover webgpu and webnn."""
    test_gradient_matches_torch("cpu", case)


@pytest.mark.parametrize("case", _cases(True))
def test_gradient_matches_torch(device: str, case: Case) -> None:
    got, ref, wants = _run(case, device)
    rtol = 1e-5 if device == "cpu" else 1e-4
    for i, (g, r, w) in enumerate(zip(got, ref, wants, strict=True)):
        if not w:
            continue
        assert g.shape == r.shape and g.dtype == r.dtype, (case.name, i, g.shape, r.shape)
        scale = max(1.0, float(np.abs(r).max(initial=0.0)))
        np.testing.assert_allclose(
            g, r, rtol=rtol, atol=rtol * scale, err_msg=f"{case.name}: input {i} on {device}"
        )


#: a sample checked against central finite differences in float64 (smooth at the inputs)
FINITE_DIFFERENCE_CASES = [
    "tanh", "gelu", "gelu_tanh", "silu", "div broadcast", "pow", "var correction", "prod",
    "matmul batched broadcast", "linear", "getitem steps", "gather repeats", "pad reflect",
    "softmax", "log_softmax", "layer_norm affine", "attention bool mask",
    "cross_entropy ignore smoothing", "cross_entropy probabilities",
]  # fmt: skip


@pytest.mark.parametrize("name", FINITE_DIFFERENCE_CASES)
def test_gradient_matches_finite_differences(name: str) -> None:
    case = next(c for c in CASES if c.name == name)
    rng = np.random.default_rng(7)
    arrays = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in case.inputs(rng)]
    wants = case.grads or tuple(a.dtype.kind == "f" for a in arrays)
    tensors = [
        ia.tensor(a, dtype=a.dtype.name, requires_grad=w)
        for a, w in zip(arrays, wants, strict=True)
    ]
    out = case.ours(*tensors)
    upstream = rng.standard_normal(out.shape)
    out.backward(ia.tensor(upstream, dtype="float64"))

    def objective(values: list[np.ndarray]) -> float:
        with ia.no_grad():
            result = case.ours(*(ia.tensor(v, dtype=v.dtype.name) for v in values))
        return float(np.sum(result.numpy() * upstream))

    step = 1e-6
    for i, (array, want) in enumerate(zip(arrays, wants, strict=True)):
        if not want:
            continue
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            shifted = [a.copy() for a in arrays]
            shifted[i][index] += step
            up = objective(shifted)
            shifted[i][index] -= 2 * step
            numeric[index] = (up - objective(shifted)) / (2 * step)
        grad = tensors[i].grad
        assert grad is not None
        np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-6, atol=1e-7, err_msg=name)


def test_dropout_gradient_is_the_seeded_mask_scaled(device: str) -> None:
    x = ia.tensor(np.linspace(0.5, 2.0, 60, dtype=np.float32).reshape(6, 10), device=device,
                  requires_grad=True)  # fmt: skip
    out = ops.dropout(x, 0.25, seed=3)
    again = ops.dropout(x.detach(), 0.25, seed=3)
    np.testing.assert_array_equal(out.numpy(), again.numpy())  # the seed fixes the mask
    kept = out.numpy() != 0
    assert 0 < kept.sum() < kept.size
    upstream = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)
    out.backward(ia.tensor(upstream, device=device))
    # torch's dropout backward is grad * mask / (1 - p): the same mask, through torch
    mask = torch.tensor(kept, dtype=torch.float32)
    xt = torch.tensor(x.numpy(), requires_grad=True)
    (xt * mask / 0.75).backward(torch.tensor(upstream))
    assert x.grad is not None
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-6)
    with ia.no_grad():
        assert ops.dropout(x, 0.25, training=False) is x


def test_index_add_matches_torch(device: str) -> None:
    base = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    source = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    idx = np.array([1, 3, 1, 0, 1])
    got = ops.index_add(ia.tensor(base, device=device), 1, ia.tensor(idx, device=device),
                        ia.tensor(source, device=device))  # fmt: skip
    expected = torch.tensor(base).index_add(1, torch.tensor(idx), torch.tensor(source))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


CONV_CASES = [
    # (spatial, input shape, weight shape, stride, padding, dilation, groups)
    (1, (2, 4, 9), (6, 2, 3), 2, 1, 1, 2),
    (1, (4, 7), (3, 4, 2), 1, 0, 2, 1),
    (2, (2, 3, 7, 6), (4, 3, 3, 2), (2, 1), (1, 2), (1, 2), 1),
    (2, (1, 4, 8, 8), (4, 1, 3, 3), 3, 2, 1, 4),
    (2, (2, 2, 5, 5), (2, 2, 3, 3), 1, "same", 2, 1),
]


@pytest.mark.parametrize("spec", CONV_CASES, ids=lambda s: f"conv{s[0]}d-{s[1]}")
def test_conv_gradients_match_torch(device: str, spec: tuple[Any, ...]) -> None:
    spatial, x_shape, w_shape, stride, padding, dilation, groups = spec
    if device != "cpu" and spec is not CONV_CASES[2]:
        pytest.skip("cpu-only case: webgpu/webnn run one convolution")
    rng = np.random.default_rng(len(x_shape) * 10 + x_shape[-1])
    x, w = rng.standard_normal(x_shape, np.float32), rng.standard_normal(w_shape, np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    ours = [ia.tensor(a, device=device, requires_grad=True) for a in (x, w, b)]
    refs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    conv, ref_conv = (ops.conv1d, F.conv1d) if spatial == 1 else (ops.conv2d, F.conv2d)
    out = conv(*ours, stride=stride, padding=padding, dilation=dilation, groups=groups)
    ref_out = ref_conv(*refs, stride=stride, padding=padding, dilation=dilation, groups=groups)
    upstream = rng.standard_normal(tuple(ref_out.shape)).astype(np.float32)
    out.backward(ia.tensor(upstream, device=device))
    ref_out.backward(torch.tensor(upstream))
    rtol = 1e-5 if device == "cpu" else 1e-4
    for name, t, r in zip(("input", "weight", "bias"), ours, refs, strict=True):
        assert t.grad is not None and r.grad is not None
        expected = r.grad.numpy()
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(
            t.grad.numpy(), expected, rtol=rtol, atol=rtol * scale, err_msg=f"{name} {spec}"
        )


_BINARY = {
    "add": (ops.add, torch.add),
    "sub": (ops.sub, torch.sub),
    "mul": (ops.mul, torch.mul),
    "div": (ops.div, torch.div),
    "maximum": (ops.maximum, torch.maximum),
}


def _assert_grads(ours: list[ia.Tensor], refs: list[torch.Tensor], what: str) -> None:
    for i, (t, r) in enumerate(zip(ours, refs, strict=True)):
        assert t.grad is not None and r.grad is not None, (what, i)
        expected = r.grad.numpy()
        scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
        np.testing.assert_allclose(
            t.grad.numpy(), expected, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{what}: input {i}"
        )


def _backward_both(out: ia.Tensor, ref_out: torch.Tensor, seed: int) -> None:
    upstream = np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32)
    out.backward(ia.tensor(upstream))
    ref_out.backward(torch.from_numpy(upstream.copy()))


@given(data=st.data())
def test_broadcast_gradients_sum_back_for_any_shapes(data: st.DataObject) -> None:
    shapes = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=3)
    ).input_shapes
    name = data.draw(st.sampled_from(sorted(_BINARY)))
    ties = name == "maximum" and data.draw(st.booleans())
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    arrays = [
        (
            rng.integers(-1, 2, s) if ties else rng.uniform(0.5, 2.0, s) * rng.choice([-1, 1], s)
        ).astype(np.float32)
        for s in shapes
    ]
    ours = [ia.tensor(a, requires_grad=True) for a in arrays]
    refs = [torch.tensor(a, requires_grad=True) for a in arrays]
    op, ref_op = _BINARY[name]
    _backward_both(op(*ours), ref_op(*refs), 1)
    _assert_grads(ours, refs, f"{name} {shapes}")


@given(data=st.data())
def test_reduction_gradients_for_any_axes(data: st.DataObject) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    name = data.draw(st.sampled_from(["sum", "mean", "max", "min", "var", "prod"]))
    keepdims = data.draw(st.booleans())
    ndim = len(shape)
    if name == "prod":  # torch's prod takes one dim
        axis: Any = data.draw(st.integers(-ndim, ndim - 1))
    else:
        picked = data.draw(st.lists(st.integers(0, ndim - 1), min_size=1, unique=True))
        axis = tuple(a - ndim if data.draw(st.booleans()) else a for a in picked)
        if data.draw(st.booleans()):
            axis = None
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    ties = name in ("max", "min") and data.draw(st.booleans())
    array = (rng.integers(-1, 2, shape) if ties else rng.uniform(0.5, 1.5, shape)).astype(
        np.float32
    )
    x = ia.tensor(array, requires_grad=True)
    xt = torch.tensor(array, requires_grad=True)
    ours = getattr(ops, name)(x, axis, keepdims=keepdims)
    dims = tuple(range(ndim)) if axis is None else axis
    ref_fn = {
        "sum": lambda: torch.sum(xt, dims, keepdim=keepdims),
        "mean": lambda: torch.mean(xt, dims, keepdim=keepdims),
        "max": lambda: torch.amax(xt, dims, keepdim=keepdims),
        "min": lambda: torch.amin(xt, dims, keepdim=keepdims),
        "var": lambda: torch.var(xt, dims, correction=0, keepdim=keepdims),
        "prod": lambda: torch.prod(xt, dims, keepdim=keepdims),
    }[name]
    _backward_both(ours, ref_fn(), 2)
    _assert_grads([x], [xt], f"{name} {shape} axis={axis} keepdims={keepdims}")
