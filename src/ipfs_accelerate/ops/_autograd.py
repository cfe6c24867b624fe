"""Backward rules of the backend primitives, written with the op set itself.

``ops._core.run`` records a node for each primitive that a tensor requiring grad flows into
(see tensor/_autograd.py); the engine then calls the rule registered here under the
primitive's name (``"binary.mul"``, ``"reduce.max"``, ``"slice"``...). A rule receives the
incoming gradient and the node, and returns one gradient per tensor operand, in argument order
(None where the operand gets none). Every op that is composed of primitives (losses, ``std``,
``squeeze``, ``embedding``, composed softmax...) is differentiable through them; fused kernels
(softmax, layer_norm, linear, attention, clamp) have rules of their own.

Because the rules call ops, a backward pass runs where the forward ran: eagerly on cpu,
recorded on webgpu, traced into the same graph on webnn. Gradients follow PyTorch: ties of
``max``/``min`` (reductions and element-wise) share the gradient equally, ``relu`` gives 0 at
0, ``clamp`` passes the gradient at its bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ipfs_accelerate.ops import _elementwise as ew
from ipfs_accelerate.ops import _reduce as red
from ipfs_accelerate.ops import _shape as shp
from ipfs_accelerate.ops._core import Shape, run
from ipfs_accelerate.tensor._autograd import RULES, Node, Rule, _Dropped
from ipfs_accelerate.tensor._dtype import bool_
from ipfs_accelerate.tensor._tensor import Tensor

Grads = Sequence[Tensor | None]


def _rule(name: str, *, saves: bool = False, saves_result: bool = False) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES[name] = (fn, saves, saves_result)
        return fn

    return register


def _is_operand(value: Any) -> bool:
    return value.__class__ is Tensor or value.__class__ is _Dropped


def sum_to(g: Tensor, shape: Shape) -> Tensor:
    """``g`` summed over the axes that broadcasting added or stretched to reach its shape."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = [*range(lead)]
    axes += [lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1]
    summed = red.sum(g, axes, keepdims=True) if axes else g
    return shp.reshape(summed, shape)


def _result(node: Node) -> Tensor:
    assert node.result is not None  # registered with saves_result
    return node.result


# ----------------------------------------------------------------------------- element-wise


def _unary_rule(op: str, derivative: Callable[[Tensor, Node], Tensor], **flags: bool) -> None:
    @_rule(f"unary.{op}", **flags)
    def rule(g: Tensor, node: Node) -> Grads:
        return [derivative(g, node)]


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_TANH_C = 0.044715


def _gelu(g: Tensor, node: Node) -> Tensor:
    x = node.saved(0)
    cdf = ew.mul(ew.add(ew.erf(ew.mul(x, _INV_SQRT_2)), 1.0), 0.5)
    pdf = ew.mul(ew.exp(ew.mul(ew.mul(x, x), -0.5)), _INV_SQRT_2PI)
    return ew.mul(g, ew.add(cdf, ew.mul(x, pdf)))


def _gelu_tanh(g: Tensor, node: Node) -> Tensor:
    x = node.saved(0)
    x2 = ew.mul(x, x)
    inner = ew.mul(ew.mul(x, ew.add(ew.mul(x2, _GELU_TANH_C), 1.0)), _SQRT_2_OVER_PI)
    t = ew.tanh(inner)
    d_inner = ew.mul(ew.add(ew.mul(x2, 3.0 * _GELU_TANH_C), 1.0), _SQRT_2_OVER_PI)
    left = ew.mul(ew.add(t, 1.0), 0.5)
    right = ew.mul(ew.mul(ew.mul(x, 0.5), ew.sub(1.0, ew.mul(t, t))), d_inner)
    return ew.mul(g, ew.add(left, right))


def _silu(g: Tensor, node: Node) -> Tensor:
    x = node.saved(0)
    s = ew.sigmoid(x)
    return ew.mul(g, ew.mul(s, ew.add(ew.mul(x, ew.sub(1.0, s)), 1.0)))


def _zero(g: Tensor, node: Node) -> Tensor:
    return ew.mul(g, 0.0)


_unary_rule("neg", lambda g, n: ew.neg(g))
_unary_rule("abs", lambda g, n: ew.mul(g, ew.sign(n.saved(0))), saves=True)
_unary_rule("square", lambda g, n: ew.mul(g, ew.mul(n.saved(0), 2.0)), saves=True)
_unary_rule("exp", lambda g, n: ew.mul(g, _result(n)), saves_result=True)
_unary_rule("log", lambda g, n: ew.div(g, n.saved(0)), saves=True)
_unary_rule("sqrt", lambda g, n: ew.div(g, ew.mul(_result(n), 2.0)), saves_result=True)
_unary_rule(
    "rsqrt",
    lambda g, n: ew.mul(g, ew.mul(ew.mul(ew.square(_result(n)), _result(n)), -0.5)),
    saves_result=True,
)
_unary_rule(
    "reciprocal",
    lambda g, n: ew.neg(ew.mul(g, ew.square(_result(n)))),
    saves_result=True,
)
_unary_rule(
    "erf",
    lambda g, n: ew.mul(g, ew.mul(ew.exp(ew.neg(ew.square(n.saved(0)))), 2.0 / math.sqrt(math.pi))),
    saves=True,
)
_unary_rule("sin", lambda g, n: ew.mul(g, ew.cos(n.saved(0))), saves=True)
_unary_rule("cos", lambda g, n: ew.neg(ew.mul(g, ew.sin(n.saved(0)))), saves=True)
_unary_rule(
    "tanh",
    lambda g, n: ew.mul(g, ew.sub(1.0, ew.square(_result(n)))),
    saves_result=True,
)
_unary_rule(
    "sigmoid",
    lambda g, n: ew.mul(g, ew.mul(_result(n), ew.sub(1.0, _result(n)))),
    saves_result=True,
)
_unary_rule("silu", _silu, saves=True)
_unary_rule("relu", lambda g, n: ew.where(ew.greater(_result(n), 0), g, 0.0), saves_result=True)
_unary_rule("gelu", _gelu, saves=True)
_unary_rule("gelu_tanh", _gelu_tanh, saves=True)
for _step in ("sign", "floor", "ceil", "round"):  # piecewise constant: zero gradient, as torch
    _unary_rule(_step, _zero)


def _binary_operands(node: Node) -> tuple[Any, Any, Shape]:
    _, a, b, _shape = node.args
    return a, b, _shape


def _binary_rule(op: str, saves: bool) -> Callable[[Callable[..., tuple[Any, Any]]], None]:
    """Register ``fn(g, a, b) -> (grad_a, grad_b)`` (full output shape) for ``binary.op``;
    gradients are summed back to each tensor operand's shape."""

    def register(fn: Callable[..., tuple[Any, Any]]) -> None:
        @_rule(f"binary.{op}", saves=saves)
        def rule(g: Tensor, node: Node) -> Grads:
            a, b, _ = _binary_operands(node)
            ga, gb = fn(g, a, b)
            out: list[Tensor | None] = []
            shapes = iter(node.shapes)
            for operand, grad in ((a, ga), (b, gb)):
                if _is_operand(operand):
                    shape = next(shapes)
                    out.append(None if grad is None else sum_to(grad, shape))
            return out

    return register


@_binary_rule("add", saves=False)
def _add(g: Tensor, a: Any, b: Any) -> tuple[Any, Any]:
    return g, g


@_binary_rule("sub", saves=False)
def _sub(g: Tensor, a: Any, b: Any) -> tuple[Any, Any]:
    return g, (ew.neg(g) if _is_operand(b) else None)


@_binary_rule("mul", saves=True)
def _mul(g: Tensor, a: Any, b: Any) -> tuple[Any, Any]:
    return (
        ew.mul(g, b) if _is_operand(a) else None,
        ew.mul(g, a) if _is_operand(b) else None,
    )


@_binary_rule("div", saves=True)
def _div(g: Tensor, a: Any, b: Any) -> tuple[Any, Any]:
    ga = ew.div(g, b) if _is_operand(a) else None
    gb = ew.neg(ew.div(ew.mul(g, a), ew.mul(b, b))) if _is_operand(b) else None
    return ga, gb


@_binary_rule("pow", saves=True)
def _pow(g: Tensor, a: Any, b: Any) -> tuple[Any, Any]:
    ga = gb = None
    if _is_operand(a) and not _is_operand(b):
        # a Python exponent stays a Python number: as a 0-d tensor it would live on the cpu
        # and meet a device tensor in pow (x ** 2 on webnn)
        ga = ew.mul(g, 0.0) if b == 0 else ew.mul(g, ew.mul(ew.pow(a, b - 1), b))
    elif _is_operand(a):
        # b * a**(b-1), with torch's 0 where b == 0 (0**-1 would give inf * 0)
        ga = ew.mul(g, ew.where(ew.equal(b, 0), 0.0, ew.mul(b, ew.pow(a, ew.sub(b, 1)))))
    if _is_operand(b):
        # a**b * log(a), with torch's 0 where a == 0 and b >= 0
        out = ew.pow(a, b)
        safe = ew.logical_and(ew.equal(a, 0), ew.greater_equal(b, 0))
        gb = ew.mul(g, ew.where(safe, 0.0, ew.mul(out, ew.log(a))))
    return ga, gb


def _select_rule(op: str, wins: Callable[[Any, Any], Tensor]) -> None:
    @_binary_rule(op, saves=True)
    def rule(g: Tensor, a: Any, b: Any) -> tuple[Any, Any]:
        # the larger (smaller) operand takes the gradient; ties share it, as torch
        tie = ew.equal(a, b)
        half = ew.mul(g, 0.5)
        ga = ew.where(tie, half, ew.where(wins(a, b), g, 0.0)) if _is_operand(a) else None
        gb = ew.where(tie, half, ew.where(wins(b, a), g, 0.0)) if _is_operand(b) else None
        return ga, gb


_select_rule("maximum", ew.greater)
_select_rule("minimum", ew.less)


@_binary_rule("remainder", saves=True)
def _remainder(g: Tensor, a: Any, b: Any) -> tuple[Any, Any]:
    gb = ew.neg(ew.mul(g, ew.floor_divide(a, b))) if _is_operand(b) else None
    return g, gb


@_binary_rule("floor_divide", saves=False)
def _floor_divide(g: Tensor, a: Any, b: Any) -> tuple[Any, Any]:
    zero = ew.mul(g, 0.0)
    return zero, zero


@_rule("where", saves=True)
def _where(g: Tensor, node: Node) -> Grads:
    cond, a, b, _ = node.args
    out: list[Tensor | None] = [None]  # the condition
    shapes = iter(node.shapes[1:])
    if _is_operand(a):
        out.append(sum_to(ew.where(cond, g, 0.0), next(shapes)))
    if _is_operand(b):
        out.append(sum_to(ew.where(cond, 0.0, g), next(shapes)))
    return out


@_rule("clamp", saves=True)
def _clamp(g: Tensor, node: Node) -> Grads:
    # torch's rule: the input takes the gradient inside [low, high], bounds included; a tensor
    # bound takes it where it clipped the input (and ``high`` wherever the bounds cross)
    x, low, high = node.args
    inside = None
    if low is not None:
        inside = ew.greater_equal(x, low)
    if high is not None:
        upper = ew.less_equal(x, high)
        inside = upper if inside is None else ew.logical_and(inside, upper)
    grads: list[Tensor | None] = [
        sum_to(g if inside is None else ew.where(inside, g, 0.0), node.shapes[0])
    ]
    shapes = iter(node.shapes[1:])
    if isinstance(low, Tensor):
        clipped = ew.less(x, low)
        if high is not None:
            clipped = ew.logical_and(clipped, ew.less(low, high))
        grads.append(sum_to(ew.where(clipped, g, 0.0), next(shapes)))
    if isinstance(high, Tensor):
        clipped = ew.greater(x, high)
        if low is not None:
            clipped = ew.logical_or(clipped, ew.less(high, low))
        grads.append(sum_to(ew.where(clipped, g, 0.0), next(shapes)))
    return grads


@_rule("cast")
def _cast(g: Tensor, node: Node) -> Grads:
    return [g]  # the engine converts every gradient to its operand's dtype


@_rule("copy")
def _copy(g: Tensor, node: Node) -> Grads:
    return [g]


@_rule("to_device")
def _to_device(g: Tensor, node: Node) -> Grads:
    return [shp.to_device(g, node.args[1])]


# ----------------------------------------------------------------------------- reductions


def _kept(g: Tensor, x_shape: Shape, axes: tuple[int, ...], keepdims: bool) -> Tensor:
    """The reduced gradient with its reduced axes back as size 1."""
    if keepdims:
        return g
    return shp.reshape(g, tuple(1 if i in axes else d for i, d in enumerate(x_shape)))


def _spread(g: Tensor, x_shape: Shape, axes: tuple[int, ...], keepdims: bool) -> Tensor:
    return shp.broadcast_to(_kept(g, x_shape, axes, keepdims), x_shape)


def _count(x_shape: Shape, axes: tuple[int, ...]) -> int:
    return math.prod(x_shape[a] for a in axes)


@_rule("reduce.sum")
def _sum(g: Tensor, node: Node) -> Grads:
    _, _, axes, keepdims, _, _ = node.args
    return [_spread(g, node.shapes[0], axes, keepdims)]


@_rule("reduce.mean")
def _mean(g: Tensor, node: Node) -> Grads:
    _, _, axes, keepdims, _, _ = node.args
    shape = node.shapes[0]
    return [ew.div(_spread(g, shape, axes, keepdims), float(_count(shape, axes)))]


def _extreme(g: Tensor, node: Node) -> Grads:
    _, x, axes, keepdims, _, _ = node.args
    shape = node.shapes[0]
    hit = ew.equal(x, _kept(_result(node), shape, axes, keepdims)).astype(x.dtype)
    share = ew.div(_kept(g, shape, axes, keepdims), red.sum(hit, axes, keepdims=True))
    return [ew.mul(hit, share)]


RULES["reduce.max"] = (_extreme, True, True)
RULES["reduce.min"] = (_extreme, True, True)


@_rule("reduce.prod", saves=True)
def _prod(g: Tensor, node: Node) -> Grads:
    _, x, axes, keepdims, _, _ = node.args
    shape = node.shapes[0]
    zero = ew.equal(x, 0)
    nonzero = ew.where(zero, 1.0, x)
    # the product of the other entries, exact where x has zeros: with one zero in a slice
    # only that entry sees a non-zero product; with two or more every product is zero
    others = red.prod(nonzero, axes, keepdims=True)
    zeros = red.sum(zero.astype(x.dtype), axes, keepdims=True)
    per_entry = ew.where(
        ew.equal(zeros, 0),
        ew.div(others, nonzero),
        ew.where(ew.logical_and(zero, ew.equal(zeros, 1)), others, 0.0),
    )
    return [ew.mul(_kept(g, shape, axes, keepdims), per_entry)]


@_rule("reduce.var", saves=True)
def _var(g: Tensor, node: Node) -> Grads:
    _, x, axes, keepdims, _, correction = node.args
    shape = node.shapes[0]
    centred = ew.sub(x, red.mean(x, axes, keepdims=True))
    scale = 2.0 / (_count(shape, axes) - correction)
    return [ew.mul(ew.mul(_kept(g, shape, axes, keepdims), centred), scale)]


# ----------------------------------------------------------------------------- shape ops


@_rule("reshape")
def _reshape(g: Tensor, node: Node) -> Grads:
    return [shp.reshape(g, node.shapes[0])]


@_rule("permute")
def _permute(g: Tensor, node: Node) -> Grads:
    order = node.args[1]
    inverse = [0] * len(order)
    for i, a in enumerate(order):
        inverse[a] = i
    return [shp.permute(g, inverse)]


@_rule("broadcast_to")
def _broadcast_to(g: Tensor, node: Node) -> Grads:
    return [sum_to(g, node.shapes[0])]


def unslice(g: Tensor, shape: Shape, starts: Shape, steps: Shape, sizes: Shape) -> Tensor:
    """The tensor of ``shape`` that is zero except where ``x[slice]`` took ``g``'s entries."""
    if 0 in sizes:
        from ipfs_accelerate.tensor._creation import zeros

        return zeros(shape, dtype=g.dtype, device=g.device)
    for axis, (n, start, step, size) in enumerate(zip(shape, starts, steps, sizes, strict=True)):
        if step < 0:  # the same entries in ascending order
            g = shp._slice(g, _at(g, axis, size - 1), _at(g, axis, -1, 1), g.shape)
            start, step = start + (size - 1) * step, -step
        if step > 1:  # interleave step - 1 zeros after every entry
            spread = shp.pad(shp.unsqueeze(g, axis + 1), _widths(g.ndim + 1, axis + 1, 0, step - 1))
            g = shp.reshape(spread, (*g.shape[:axis], size * step, *g.shape[axis + 1 :]))
            keep = builtin_min(size * step, n - start)
            if keep != size * step:
                dims = (*g.shape[:axis], keep, *g.shape[axis + 1 :])
                g = shp._slice(g, (0,) * g.ndim, (1,) * g.ndim, dims)
        before, after = start, n - start - g.shape[axis]
        if before or after:
            g = shp.pad(g, _widths(g.ndim, axis, before, after))
    return g


builtin_min = min


def _at(g: Tensor, axis: int, value: int, default: int = 0) -> Shape:
    return tuple(value if i == axis else default for i in range(g.ndim))


def _widths(ndim: int, axis: int, before: int, after: int) -> list[tuple[int, int]]:
    return [(before, after) if i == axis else (0, 0) for i in range(ndim)]


@_rule("slice")
def _slice(g: Tensor, node: Node) -> Grads:
    _, starts, steps, sizes = node.args
    return [unslice(g, node.shapes[0], starts, steps, sizes)]


@_rule("concat")
def _concat(g: Tensor, node: Node) -> Grads:
    axis = node.args[1]
    out: list[Tensor | None] = []
    offset = 0
    for shape in node.shapes:
        starts = tuple(offset if i == axis else 0 for i in range(g.ndim))
        out.append(shp._slice(g, starts, (1,) * g.ndim, shape))
        offset += shape[axis]
    return out


@_rule("gather", saves=True)
def _gather(g: Tensor, node: Node) -> Grads:
    _, indices, axis = node.args
    n = node.shapes[0][axis]
    idx = ew.where(ew.less(indices, 0), ew.add(indices, n), indices)
    from ipfs_accelerate.tensor._creation import zeros

    base = zeros(node.shapes[0], dtype=g.dtype, device=g.device)
    return [shp.index_add(base, axis, idx, g), None]


@_rule("index_add", saves=True)
def _index_add(g: Tensor, node: Node) -> Grads:
    _, axis, indices, _ = node.args
    return [g, None, shp.gather(g, indices, axis)]


@_rule("pad")
def _pad(g: Tensor, node: Node) -> Grads:
    _, pads, mode, _ = node.args
    shape = node.shapes[0]
    for axis, (before, after) in enumerate(pads):
        if before or after:
            g = _unpad_axis(g, axis, shape[axis], before, after, mode)
    return [g]


def _unpad_axis(g: Tensor, axis: int, n: int, before: int, after: int, mode: str) -> Tensor:
    """The gradient of one axis's padding: the centre, plus what the padded entries copied."""
    ones = (1,) * g.ndim

    def part(start: int, size: int, reverse: bool = False) -> Tensor:
        dims = tuple(size if i == axis else d for i, d in enumerate(g.shape))
        if reverse:
            return shp._slice(g, _at(g, axis, start + size - 1), _at(g, axis, -1, 1), dims)
        return shp._slice(g, _at(g, axis, start), ones, dims)

    centre = part(before, n)
    if mode == "constant":
        return centre
    if mode == "edge":
        if before:
            edge = red.sum(part(0, before), axis, keepdims=True)
            centre = ew.add(centre, shp.pad(edge, _widths(g.ndim, axis, 0, n - 1)))
        if after:
            edge = red.sum(part(before + n, after), axis, keepdims=True)
            centre = ew.add(centre, shp.pad(edge, _widths(g.ndim, axis, n - 1, 0)))
        return centre
    # reflect: padded entry before - i copies x[i], entry n - 1 + i after copies x[n - 1 - i]
    if before:
        mirrored = part(0, before, reverse=True)
        centre = ew.add(centre, shp.pad(mirrored, _widths(g.ndim, axis, 1, n - 1 - before)))
    if after:
        mirrored = part(before + n, after, reverse=True)
        centre = ew.add(centre, shp.pad(mirrored, _widths(g.ndim, axis, n - 1 - after, 1)))
    return centre


# ----------------------------------------------------------------------------- matrix, nn


@_rule("matmul", saves=True)
def _matmul(g: Tensor, node: Node) -> Grads:
    from ipfs_accelerate.ops._nn import matmul

    a, b, _ = node.args
    return [
        sum_to(matmul(g, shp.matrix_transpose(b)), node.shapes[0]) if node.needs(0) else None,
        sum_to(matmul(shp.matrix_transpose(a), g), node.shapes[1]) if node.needs(1) else None,
    ]


@_rule("linear", saves=True)
def _linear(g: Tensor, node: Node) -> Grads:
    from ipfs_accelerate.ops._nn import matmul

    x, w, bias = node.args
    out_features, in_features = w.shape
    # (a batch of rows, the usual case, is already the matrix: no reshape ops to run)
    rows = g if g.ndim == 2 else shp.reshape(g, (-1, out_features))
    grads: list[Tensor | None] = [
        matmul(g, w) if node.needs(0) else None,
        matmul(shp.permute(rows, (1, 0)), x if x.ndim == 2 else shp.reshape(x, (-1, in_features)))
        if node.needs(1)
        else None,
    ]
    if bias is not None:
        grads.append(red.sum(rows, 0))
    return grads


@_rule("quantized_linear")
def _quantized_linear(g: Tensor, node: Node) -> Grads:
    # the weight is frozen (a QuantizedTensor never requires grad): the input's gradient
    # is exact through the dequantized weight the kernel computes with
    from ipfs_accelerate.ops._nn import matmul

    _, weight, bias = node.args
    grads: list[Tensor | None] = [matmul(g, weight.dequantize(g.device).astype(g.dtype))]
    if bias is not None:
        grads.append(red.sum(shp.reshape(g, (-1, g.shape[-1])), 0))
    return grads


@_rule("softmax", saves_result=True)
def _softmax(g: Tensor, node: Node) -> Grads:
    _, axis, log = node.args
    out = _result(node)
    if log:
        return [ew.sub(g, ew.mul(ew.exp(out), red.sum(g, axis, keepdims=True)))]
    return [ew.mul(out, ew.sub(g, red.sum(ew.mul(g, out), axis, keepdims=True)))]


@_rule("cross_entropy", saves=True)
def _cross_entropy(g: Tensor, node: Node) -> Grads:
    logits, target, ignore_index, reduction, _ = node.args
    args = (logits, target, g, ignore_index, reduction)
    return [run(g._backend, "cross_entropy_backward", args, logits.shape, logits.dtype), None]


@_rule("layer_norm", saves=True)
def _layer_norm(g: Tensor, node: Node) -> Grads:
    x, weight, bias, k, eps = node.args
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    centred = ew.sub(x, red.mean(x, axes, keepdims=True))
    rstd = ew.rsqrt(ew.add(red.mean(ew.square(centred), axes, keepdims=True), float(eps)))
    xhat = ew.mul(centred, rstd)
    gxhat = ew.mul(g, weight) if weight is not None else g
    gx = ew.mul(
        rstd,
        ew.sub(
            ew.sub(gxhat, red.mean(gxhat, axes, keepdims=True)),
            ew.mul(xhat, red.mean(ew.mul(gxhat, xhat), axes, keepdims=True)),
        ),
    )
    grads: list[Tensor | None] = [gx if node.needs(0) else None]
    if weight is not None:
        grads.append(red.sum(ew.mul(g, xhat), lead) if lead else ew.mul(g, xhat))
    if bias is not None:
        grads.append(red.sum(g, lead) if lead else g)
    return grads


@_rule("attention", saves=True)
def _attention(g: Tensor, node: Node) -> Grads:
    from ipfs_accelerate.ops._nn import matmul, softmax

    q, k, v, mask, is_causal, scale, _ = node.args
    scores = ew.mul(matmul(q, shp.matrix_transpose(k)), scale)
    length, source = q.shape[-2], k.shape[-2]
    if is_causal:
        from ipfs_accelerate.tensor._creation import arange

        rows = shp.reshape(arange(length, device=q.device), (length, 1))
        mask = ew.less_equal(shp.reshape(arange(source, device=q.device), (1, source)), rows)
    if mask is not None:
        scores = ew.where(mask, scores, -math.inf) if mask.dtype is bool_ else ew.add(scores, mask)
    probs = softmax(scores, -1)
    d_probs = matmul(g, shp.matrix_transpose(v))
    d_scores = ew.mul(probs, ew.sub(d_probs, red.sum(ew.mul(d_probs, probs), -1, keepdims=True)))
    grads: list[Tensor | None] = [
        sum_to(ew.mul(matmul(d_scores, k), scale), q.shape) if node.needs(0) else None,
        sum_to(ew.mul(matmul(shp.matrix_transpose(d_scores), q), scale), k.shape)
        if node.needs(1)
        else None,
        sum_to(matmul(shp.matrix_transpose(probs), g), v.shape) if node.needs(2) else None,
    ]
    if node.args[3] is not None:
        grads.append(None if node.args[3].dtype is bool_ else sum_to(d_scores, mask.shape))
    return grads


# ----------------------------------------------------------------------------- convolution


def _conv(x: Tensor, w: Tensor, strides: Shape, pads: Any, dilations: Shape, groups: int) -> Tensor:
    from ipfs_accelerate.ops._core import run

    n, c_out = x.shape[0], w.shape[0]
    out = []
    for size, k, s, d, (pb, pa) in zip(
        x.shape[2:], w.shape[2:], strides, dilations, pads, strict=True
    ):
        out.append((size + pb + pa - d * (k - 1) - 1) // s + 1)
    shape = (n, c_out, *out)
    return run(
        x._backend, "conv", (x, w, None, strides, pads, dilations, groups, shape), shape, x.dtype
    )


def _pad_or_crop(g: Tensor, axis: int, before: int, after: int) -> Tensor:
    """``g`` with ``before``/``after`` zeros added along ``axis`` (negative amounts crop)."""
    if before < 0 or after < 0:
        start, stop = max(-before, 0), g.shape[axis] - max(-after, 0)
        dims = tuple(stop - start if i == axis else d for i, d in enumerate(g.shape))
        g = shp._slice(g, _at(g, axis, start), (1,) * g.ndim, dims)
        before, after = max(before, 0), max(after, 0)
    if before or after:
        g = shp.pad(g, _widths(g.ndim, axis, before, after))
    return g


def _dilate(g: Tensor, axis: int, step: int) -> Tensor:
    """``step - 1`` zeros between consecutive entries along ``axis``."""
    if step == 1 or g.shape[axis] <= 1:
        return g
    size = g.shape[axis]
    spread = shp.pad(shp.unsqueeze(g, axis + 1), _widths(g.ndim + 1, axis + 1, 0, step - 1))
    merged = shp.reshape(spread, (*g.shape[:axis], size * step, *g.shape[axis + 1 :]))
    dims = tuple((size - 1) * step + 1 if i == axis else d for i, d in enumerate(merged.shape))
    return shp._slice(merged, (0,) * merged.ndim, (1,) * merged.ndim, dims)


@_rule("conv", saves=True)
def _conv_rule(g: Tensor, node: Node) -> Grads:
    x, _, bias = node.args[:3]
    spatial = x.ndim - 2
    grads: list[Tensor | None] = [
        _conv_input_grad(g, node) if node.needs(0) else None,
        _conv_weight_grad(g, node) if node.needs(1) else None,
    ]
    if bias is not None:
        grads.append(red.sum(g, (0, *range(2, 2 + spatial))))
    return grads


def _conv_input_grad(g: Tensor, node: Node) -> Tensor:
    x, w, _, strides, pads, dilations, groups, _ = node.args
    spatial = x.ndim - 2
    c_out, c_in_group, kernel = w.shape[0], w.shape[1], w.shape[2:]
    # the transposed convolution, as a stride-1 convolution of the dilated, padded gradient
    # with the spatially flipped kernel whose in/out channels swap within each group
    up = g
    for i in range(spatial):
        axis = 2 + i
        up = _dilate(up, axis, strides[i])
        reach = dilations[i] * (kernel[i] - 1)
        (pb, pa), size = pads[i], x.shape[axis]
        uncovered = (size + pb + pa - reach - 1) % strides[i]
        up = _pad_or_crop(up, axis, reach - pb, reach - pa + uncovered)
    flipped = w
    for i in range(spatial):
        axis = 2 + i
        flipped = shp._slice(
            flipped, _at(flipped, axis, kernel[i] - 1), _at(flipped, axis, -1, 1), flipped.shape
        )
    per_group = shp.reshape(flipped, (groups, c_out // groups, c_in_group, *kernel))
    order = (0, 2, 1, *range(3, 3 + spatial))
    swapped = shp.reshape(
        shp.permute(per_group, order), (groups * c_in_group, c_out // groups, *kernel)
    )
    return _conv(up, swapped, (1,) * spatial, ((0, 0),) * spatial, dilations, groups)


def _conv_weight_grad(g: Tensor, node: Node) -> Tensor:
    x, w, _, strides, pads, dilations, groups, _ = node.args
    spatial = x.ndim - 2
    c_in_group, kernel = w.shape[1], w.shape[2:]
    no_pads = ((0, 0),) * spatial
    # correlate the padded input with the gradient, batch and channels exchanged so that each
    # group's input channels meet its own output channels
    padded = shp.pad(x, [(0, 0), (0, 0), *pads]) if any(p != (0, 0) for p in pads) else x
    n = x.shape[0]
    rows = shp.reshape(padded, (n, groups, c_in_group, *padded.shape[2:]))
    rows = shp.reshape(
        shp.permute(rows, (2, 1, 0, *range(3, 3 + spatial))),
        (c_in_group, groups * n, *padded.shape[2:]),
    )
    kernels = shp.permute(g, (1, 0, *range(2, 2 + spatial)))
    full = _conv(rows, kernels, dilations, no_pads, strides, groups)
    cropped = shp._slice(full, (0,) * full.ndim, (1,) * full.ndim, (*full.shape[:2], *kernel))
    return shp.permute(cropped, (1, 0, *range(2, 2 + spatial)))
