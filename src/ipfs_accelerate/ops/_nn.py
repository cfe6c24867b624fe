"""Matrix and neural-network ops: matmul, linear, conv1d/conv2d, softmax, layer_norm,
scaled_dot_product_attention (PyTorch semantics where numpy has no counterpart).

Each op uses the backend's fused kernel when it lists one in ``Backend.fused`` and otherwise
composes the result from primitives on the same backend.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import numpy as np

from ipfs_accelerate.errors import DtypeError, InvalidArgumentError, ShapeError
from ipfs_accelerate.ops import _elementwise as ew
from ipfs_accelerate.ops import _reduce as red
from ipfs_accelerate.ops import _shape as shp
from ipfs_accelerate.ops._core import (
    as_tensor,
    broadcast_shapes,
    cast_to,
    describe,
    normalize_axis,
    promote,
    run,
    same_backend,
)
from ipfs_accelerate.ops._quantized import is_quantized, quantized_linear, quantized_matmul
from ipfs_accelerate.tensor._dtype import DType, bool_, float_result_dtype
from ipfs_accelerate.tensor._tensor import Tensor

__all__ = [
    "conv1d",
    "conv2d",
    "dropout",
    "layer_norm",
    "linear",
    "log_softmax",
    "matmul",
    "scaled_dot_product_attention",
    "softmax",
]


def _floating(op: str, *tensors: Tensor) -> tuple[DType, list[Tensor]]:
    """Promote to one dtype, then to numpy's float for it when it is integral."""
    dtype = (
        tensors[0].dtype
        if all(t.dtype is tensors[0].dtype for t in tensors)
        else promote(op, *tensors)
    )
    if dtype is bool_:
        raise DtypeError(f"{op}: not defined for bool tensors")
    if not dtype.is_floating:
        dtype = float_result_dtype(dtype, op)
    return dtype, [cast_to(t, dtype) for t in tensors]


# ----------------------------------------------------------------------------- matmul, linear


def matmul(a: Any, b: Any) -> Tensor:
    """numpy's matmul: matrix product of the last two axes with broadcast batch axes; a 1-D
    operand is a vector (its axis is removed from the result). ``b`` may be a 2-D
    :class:`~ipfs_accelerate.quantization.QuantizedTensor` (see :func:`linear`)."""
    if is_quantized(b):
        return quantized_matmul(a, b)
    if is_quantized(a):
        raise DtypeError(
            "matmul: only the second operand may be a QuantizedTensor (the weight); "
            "dequantize() the first"
        )
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    a = as_tensor(a, op="matmul", like=like)
    b = as_tensor(b, op="matmul", like=like)
    backend = same_backend("matmul", (a, b))
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(
            f"matmul: operands must be at least 1-D, got {describe(a)} and {describe(b)}"
        )
    a2 = shp.reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
    b2 = shp.reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ShapeError(
            f"matmul: inner dimensions differ: {a.shape} @ {b.shape} "
            f"({a2.shape[-1]} != {b2.shape[-2]})"
        )
    batch = broadcast_shapes(a2.shape[:-2], b2.shape[:-2], "matmul")
    dtype = a.dtype if a.dtype is b.dtype else promote("matmul", a, b)
    a2, b2 = cast_to(a2, dtype), cast_to(b2, dtype)
    shape = (*batch, a2.shape[-2], b2.shape[-1])
    result = run(backend, "matmul", (a2, b2, shape), shape, dtype)
    if a.ndim == 1 or b.ndim == 1:
        final = (
            shape[:-2]
            + ((a2.shape[-2],) if a.ndim > 1 else ())
            + ((b2.shape[-1],) if b.ndim > 1 else ())
        )
        result = shp.reshape(result, final)
    return result


def linear(x: Any, weight: Any, bias: Any = None, *, activations: str = "float") -> Tensor:
    """``x @ weight.T + bias`` with ``weight`` of shape (out_features, in_features), as PyTorch
    and Hugging Face checkpoints store it; ``x`` is (..., in_features).

    ``weight`` may be a :class:`~ipfs_accelerate.quantization.QuantizedTensor` on ``x``'s
    device; then ``activations="int8"`` also quantizes ``x`` on the fly (uint8, one scale per
    tensor), ``"int8_row"`` does so with one scale and zero point per row of ``x`` (per token),
    and ``"float"`` keeps it in float (see :mod:`ipfs_accelerate.ops._quantized`).
    """
    if is_quantized(weight):
        return quantized_linear(x, weight, bias, activations)
    if activations != "float":
        raise InvalidArgumentError(
            f"linear: activations={activations!r} needs a QuantizedTensor weight; a float "
            "weight takes activations='float'"
        )
    x = as_tensor(x, op="linear")
    weight = as_tensor(weight, op="linear", like=x)
    tensors = [x, weight]
    if weight.ndim != 2:
        raise ShapeError(
            f"linear: weight must be 2-D (out_features, in_features), got {describe(weight)}"
        )
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"linear: input {describe(x)} does not end in in_features={weight.shape[1]} "
            f"of weight {weight.shape}"
        )
    if bias is not None:
        bias = as_tensor(bias, op="linear", like=x)
        if bias.shape != (weight.shape[0],):
            raise ShapeError(
                f"linear: bias must have shape ({weight.shape[0]},), got {describe(bias)}"
            )
        tensors.append(bias)
    backend = same_backend("linear", tensors)
    dtype, cast = _floating("linear", *tensors)
    x, weight = cast[0], cast[1]
    bias = cast[2] if bias is not None else None
    shape = (*x.shape[:-1], weight.shape[0])
    if "linear" in backend.fused:
        return run(backend, "linear", (x, weight, bias), shape, dtype)
    out = matmul(x, shp.permute(weight, (1, 0)))
    return ew.add(out, bias) if bias is not None else out


# ----------------------------------------------------------------------------- convolution


def _tuple(value: Any, n: int, op: str, name: str) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (int(value),) * n
    items = tuple(value)
    if len(items) != n or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items
    ):
        raise InvalidArgumentError(f"{op}: {name} must be an int or {n} ints, got {value!r}")
    return tuple(int(v) for v in items)


def _conv(
    op: str,
    spatial: int,
    x: Any,
    weight: Any,
    bias: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
) -> Tensor:
    x = as_tensor(x, op=op)
    weight = as_tensor(weight, op=op, like=x)
    unbatched = x.ndim == spatial + 1
    if unbatched:
        x = shp.unsqueeze(x, 0)
    if x.ndim != spatial + 2:
        raise ShapeError(
            f"{op}: input must be {spatial + 1}-D (unbatched) or {spatial + 2}-D, got {describe(x)}"
        )
    if weight.ndim != spatial + 2:
        raise ShapeError(
            f"{op}: weight must be {spatial + 2}-D (out_channels, in_channels/groups, *kernel), "
            f"got {describe(weight)}"
        )
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise InvalidArgumentError(f"{op}: groups must be a positive int, got {groups!r}")
    n, c_in = x.shape[:2]
    c_out = weight.shape[0]
    if c_in % groups or c_out % groups:
        raise ShapeError(
            f"{op}: in_channels {c_in} and out_channels {c_out} "
            f"must be divisible by groups={groups}"
        )
    if weight.shape[1] != c_in // groups:
        raise ShapeError(
            f"{op}: weight {weight.shape} expects {weight.shape[1] * groups} input channels, "
            f"input has {c_in} ({describe(x)})"
        )
    strides = _tuple(stride, spatial, op, "stride")
    dilations = _tuple(dilation, spatial, op, "dilation")
    if any(s < 1 for s in strides) or any(d < 1 for d in dilations):
        raise InvalidArgumentError(
            f"{op}: stride and dilation must be >= 1, got {strides}, {dilations}"
        )
    kernel = weight.shape[2:]
    pads: tuple[tuple[int, int], ...]
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0),) * spatial
        elif padding == "same":
            if any(s != 1 for s in strides):
                raise InvalidArgumentError(f"{op}: padding='same' needs stride 1, got {strides}")
            totals = [d * (k - 1) for d, k in zip(dilations, kernel, strict=True)]
            pads = tuple((t // 2, t - t // 2) for t in totals)
        else:
            raise InvalidArgumentError(
                f"{op}: padding must be an int, a tuple, 'valid' or 'same', got {padding!r}"
            )
    else:
        pads = tuple((p, p) for p in _tuple(padding, spatial, op, "padding"))
        if any(p < 0 for p, _ in pads):
            raise InvalidArgumentError(f"{op}: padding must be >= 0, got {padding!r}")
    out_spatial = []
    for size, k, s, d, (pb, pa) in zip(x.shape[2:], kernel, strides, dilations, pads, strict=True):
        extent = size + pb + pa - d * (k - 1) - 1
        if extent < 0:
            raise ShapeError(
                f"{op}: kernel {kernel} (dilation {dilations}) "
                f"is larger than the padded input {x.shape[2:]}"
            )
        out_spatial.append(extent // s + 1)
    tensors = [x, weight]
    if bias is not None:
        bias = as_tensor(bias, op=op, like=x)
        if bias.shape != (c_out,):
            raise ShapeError(f"{op}: bias must have shape ({c_out},), got {describe(bias)}")
        tensors.append(bias)
    backend = same_backend(op, tensors)
    dtype, cast = _floating(op, *tensors)
    shape = (n, c_out, *out_spatial)
    result = run(
        backend,
        "conv",
        (
            cast[0],
            cast[1],
            cast[2] if bias is not None else None,
            strides,
            pads,
            dilations,
            int(groups),
            shape,
        ),
        shape,
        dtype,
    )
    return shp.squeeze(result, 0) if unbatched else result


def conv1d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Tensor:
    """1-D cross-correlation, PyTorch's conv1d: ``x`` (N, C_in, L) or (C_in, L), ``weight``
    (C_out, C_in/groups, K); padding is an int, "valid" or "same"."""
    return _conv("conv1d", 1, x, weight, bias, stride, padding, dilation, groups)


def conv2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Tensor:
    """2-D cross-correlation, PyTorch's conv2d: ``x`` (N, C_in, H, W) or (C_in, H, W), ``weight``
    (C_out, C_in/groups, kH, kW); stride/padding/dilation are ints or pairs, or padding
    "same"/"valid"."""
    return _conv("conv2d", 2, x, weight, bias, stride, padding, dilation, groups)


# ----------------------------------------------------------------------------- dropout


#: a mask's seed: a number, a generator to draw one from, or None (the global generator)
SeedSource = int | np.random.Generator | None

#: where dropout takes its uniform values from (``(shape, source, seed, device) -> Tensor``)
#: while a training step is recorded or captured (optim/_compiled.py): a captured step feeds
#: each mask as an input of its graph instead of freezing the first step's mask into it
dropout_uniforms: ContextVar[
    Callable[[tuple[int, ...], SeedSource, int | None, str], Tensor] | None
] = ContextVar("dropout_uniforms", default=None)


def dropout(x: Any, p: float = 0.5, *, training: bool = True, seed: SeedSource = None) -> Tensor:
    """Inverted dropout, as PyTorch: while ``training``, each element is zeroed with
    probability ``p`` and the others are scaled by ``1 / (1 - p)``; otherwise ``x`` itself.
    The mask is drawn on the host with numpy's PCG64 (as :func:`~ipfs_accelerate.rand`), so the
    same ``seed`` gives the same mask on every backend. ``seed`` may be a
    ``numpy.random.Generator``: the mask's seed is then drawn from it (as model modules'
    dropout does), which lets a compiled training step draw the next step's mask itself."""
    x = as_tensor(x, op="dropout")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise InvalidArgumentError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return x
    _, (x,) = _floating("dropout", x)
    if p == 1.0:
        return ew.mul(x, 0.0)
    from ipfs_accelerate.tensor._creation import rand

    drawn = draw_seed(seed)
    hook = dropout_uniforms.get()
    if hook is None:
        uniforms = rand(*x.shape, seed=drawn, device=x.device)
    else:
        uniforms = hook(x.shape, seed, drawn, x.device)
    keep = ew.greater_equal(uniforms, float(p))
    return ew.where(keep, ew.mul(x, 1.0 / (1.0 - p)), 0.0)


def draw_seed(seed: SeedSource) -> int | None:
    """The seed of one mask: ``seed`` itself, or the next draw of a generator."""
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63 - 1))
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise InvalidArgumentError(
            f"dropout: seed must be an int, a numpy Generator or None, got {seed!r}"
        )
    return seed


# ----------------------------------------------------------------------------- softmax, norms


def _softmax(op: str, x: Any, axis: int, log: bool) -> Tensor:
    x = as_tensor(x, op=op)
    if x.ndim == 0:
        raise ShapeError(f"{op}: needs at least 1 dimension, got a 0-d tensor")
    ax = normalize_axis(axis, x.ndim, op)
    _, (x,) = _floating(op, x)
    if "softmax" in x._backend.fused:
        return run(x._backend, "softmax", (x, ax, log), x.shape, x.dtype)
    shifted = ew.sub(x, red.max(x, ax, keepdims=True))
    exps = ew.exp(shifted)
    total = red.sum(exps, ax, keepdims=True)
    return ew.sub(shifted, ew.log(total)) if log else ew.div(exps, total)


def softmax(x: Any, axis: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis``, computed stably."""
    return _softmax("softmax", x, axis, False)


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """``x - log(sum(exp(x)))`` along ``axis``, computed stably."""
    return _softmax("log_softmax", x, axis, True)


def layer_norm(
    x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5
) -> Tensor:
    """Layer normalisation over the trailing ``normalized_shape`` axes (biased variance), then
    ``* weight + bias`` (each of shape ``normalized_shape`` when given), as PyTorch."""
    x = as_tensor(x, op="layer_norm")
    norm_shape = (
        (int(normalized_shape),)
        if isinstance(normalized_shape, numbers.Integral)
        else tuple(int(d) for d in normalized_shape)
    )
    k = len(norm_shape)
    if k == 0 or x.shape[x.ndim - k :] != norm_shape or k > x.ndim:
        raise ShapeError(
            f"layer_norm: normalized_shape {norm_shape} "
            f"does not match the trailing axes of {describe(x)}"
        )
    if not (isinstance(eps, numbers.Real) and eps >= 0):
        raise InvalidArgumentError(f"layer_norm: eps must be a non-negative number, got {eps!r}")
    tensors = [x]
    params: list[Tensor | None] = []
    for name, p in (("weight", weight), ("bias", bias)):
        if p is None:
            params.append(None)
            continue
        p = as_tensor(p, op="layer_norm", like=x)
        if p.shape != norm_shape:
            raise ShapeError(f"layer_norm: {name} must have shape {norm_shape}, got {describe(p)}")
        tensors.append(p)
        params.append(p)
    backend = same_backend("layer_norm", tensors)
    dtype, cast = _floating("layer_norm", *tensors)
    it = iter(cast[1:])
    x = cast[0]
    w = next(it) if params[0] is not None else None
    b = next(it) if params[1] is not None else None
    if "layer_norm" in backend.fused:
        return run(backend, "layer_norm", (x, w, b, k, float(eps)), x.shape, dtype)
    axes = tuple(range(x.ndim - k, x.ndim))
    centred = ew.sub(x, red.mean(x, axes, keepdims=True))
    variance = red.mean(ew.mul(centred, centred), axes, keepdims=True)
    out = ew.mul(centred, ew.rsqrt(ew.add(variance, float(eps))))
    if w is not None:
        out = ew.mul(out, w)
    if b is not None:
        out = ew.add(out, b)
    return out


# ----------------------------------------------------------------------------- attention


def scaled_dot_product_attention(
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """PyTorch's scaled_dot_product_attention: ``softmax(q @ k^T * scale + mask) @ v``.

    ``query`` (..., L, E), ``key`` (..., S, E), ``value`` (..., S, Ev); batch axes broadcast.
    ``attn_mask`` is bool (True = may attend) or additive float, broadcastable to (..., L, S).
    ``is_causal`` lets position i attend to j <= i (aligned top-left, as PyTorch); it cannot be
    combined with a mask. ``scale`` defaults to 1/sqrt(E). A row with no allowed position is NaN.
    """
    like = next((t for t in (query, key, value) if isinstance(t, Tensor)), None)
    q = as_tensor(query, op="scaled_dot_product_attention", like=like)
    k = as_tensor(key, op="scaled_dot_product_attention", like=like)
    v = as_tensor(value, op="scaled_dot_product_attention", like=like)
    op = "scaled_dot_product_attention"
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.ndim < 2:
            raise ShapeError(
                f"{op}: {name} must be at least 2-D (..., seq, dim), got {describe(t)}"
            )
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"{op}: query and key embedding sizes differ: {q.shape} vs {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"{op}: key and value sequence lengths differ: {k.shape} vs {v.shape}")
    batch = broadcast_shapes(broadcast_shapes(q.shape[:-2], k.shape[:-2], op), v.shape[:-2], op)
    L, S = q.shape[-2], k.shape[-2]
    tensors = [q, k, v]
    mask = None
    if attn_mask is not None:
        if is_causal:
            raise InvalidArgumentError(f"{op}: give either attn_mask or is_causal=True, not both")
        mask = as_tensor(attn_mask, op=op, like=q)
        try:
            fits = broadcast_shapes((*batch, L, S), mask.shape, op) == (*batch, L, S)
        except ShapeError:
            fits = False
        if not fits:
            raise ShapeError(
                f"{op}: attn_mask {mask.shape} "
                f"does not broadcast to the scores' shape {(*batch, L, S)}"
            )
        tensors.append(mask)
    backend = same_backend(op, tensors)
    dtype, (q, k, v) = _floating(op, q, k, v)
    if mask is not None and mask.dtype is not bool_:
        mask = cast_to(mask, dtype) if mask.dtype.is_floating or mask.dtype.is_integer else mask
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] else 1.0
    shape = (*batch, L, v.shape[-1])
    if "attention" in backend.fused:
        return run(
            backend,
            "attention",
            (q, k, v, mask, bool(is_causal), float(scale), shape),
            shape,
            dtype,
        )
    scores = ew.mul(matmul(q, shp.matrix_transpose(k)), float(scale))
    if is_causal:
        from ipfs_accelerate.tensor._creation import from_numpy

        mask = from_numpy(np.tril(np.ones((L, S), dtype=bool)), q.device)
    if mask is not None:
        if mask.dtype is bool_:
            scores = ew.where(mask, scores, -math.inf)
        else:
            scores = ew.add(scores, mask)
    return matmul(softmax(scores, -1), v)
