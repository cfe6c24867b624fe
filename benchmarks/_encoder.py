"""The BERT encoder the WebGPU and WebNN benchmarks run: its weights, and the forward pass
written once for ``ipfs_accelerate.ops`` (any backend) and torch.nn.functional, and once
directly in numpy.

Post-norm layers as in BERT/MiniLM: q/k/v linear, scaled dot-product attention with a
padding mask, output linear, residual, layer norm, GELU MLP, residual, layer norm. Linear
weights are (out, in), as in PyTorch / Hugging Face checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


def encoder_weights(
    hidden: int, intermediate: int, layers: int, seed: int = 0
) -> list[dict[str, Array]]:
    """Per layer, the parameters of a BERT layer (float32, seeded)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> Array:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    out = []
    for _ in range(layers):
        p = {
            f"{n}.weight": w(hidden, hidden) for n in ("query", "key", "value", "attention_output")
        }
        p.update(
            {
                f"{n}.bias": w(hidden)
                for n in ("query", "key", "value", "attention_output", "output")
            }
        )
        p.update(
            {"intermediate.weight": w(intermediate, hidden), "intermediate.bias": w(intermediate)}
        )
        p.update({"output.weight": w(hidden, intermediate)})
        for norm in ("ln1", "ln2"):
            p[f"{norm}.weight"] = 1.0 + w(hidden)
            p[f"{norm}.bias"] = w(hidden)
        out.append(p)
    return out


def encoder(
    x: Any, mask: Any, layers: list[dict[str, Any]], heads: int, library: str, eps: float = 1e-12
) -> Any:
    """The encoder on tensors of ``library``: "ops" (ipfs_accelerate.ops, on x's device) or
    "torch" (torch.nn.functional). ``mask`` as scaled_dot_product_attention takes it:
    boolean (True attends) or additive."""
    if library == "torch":
        import torch.nn.functional as F

        linear, attention, gelu = F.linear, F.scaled_dot_product_attention, F.gelu

        def layer_norm(t: Any, w: Any, b: Any) -> Any:
            return F.layer_norm(t, (t.shape[-1],), w, b, eps)
    else:
        from ipfs_accelerate import ops

        linear, attention, gelu = ops.linear, ops.scaled_dot_product_attention, ops.gelu

        def layer_norm(t: Any, w: Any, b: Any) -> Any:
            return ops.layer_norm(t, t.shape[-1], w, b, eps)

    batch, seq, hidden = x.shape
    for p in layers:

        def split(t: Any) -> Any:
            return t.reshape(batch, seq, heads, hidden // heads).permute(0, 2, 1, 3)

        q, k, v = (
            split(linear(x, p[f"{n}.weight"], p[f"{n}.bias"])) for n in ("query", "key", "value")
        )
        attended = (
            attention(q, k, v, attn_mask=mask).permute(0, 2, 1, 3).reshape(batch, seq, hidden)
        )
        x = layer_norm(
            linear(attended, p["attention_output.weight"], p["attention_output.bias"]) + x,
            p["ln1.weight"],
            p["ln1.bias"],
        )
        mlp = linear(
            gelu(linear(x, p["intermediate.weight"], p["intermediate.bias"])),
            p["output.weight"],
            p["output.bias"],
        )
        x = layer_norm(mlp + x, p["ln2.weight"], p["ln2.bias"])
    return x


def encoder_ops(
    x: Any, mask: Any, layers: list[dict[str, Any]], heads: int, eps: float = 1e-12
) -> Any:
    """The encoder with ipfs_accelerate.ops on x's device."""
    return encoder(x, mask, layers, heads, "ops", eps)


def encoder_torch(
    x: Any, mask: Any, layers: list[dict[str, Any]], heads: int, eps: float = 1e-12
) -> Any:
    """The same encoder with torch.nn.functional."""
    return encoder(x, mask, layers, heads, "torch", eps)


def encoder_numpy(
    x: Array, mask: Array, layers: list[dict[str, Array]], heads: int, eps: float = 1e-12
) -> Array:
    """The same encoder written directly in numpy (float32, GELU through the numpy erf the
    cpu backend uses: Abramowitz-Stegun 7.1.26 would be too coarse for a fair comparison)."""
    from ipfs_accelerate.hal.cpu._math import erf

    batch, seq, hidden = x.shape
    dim = hidden // heads
    additive = (
        mask if mask.dtype != np.bool_ else np.where(mask, np.float32(0), np.float32(-np.inf))
    )

    def linear(t: Array, w: Array, b: Array) -> Array:
        return (t.reshape(-1, t.shape[-1]) @ w.T + b).reshape(*t.shape[:-1], w.shape[0])

    def split(t: Array) -> Array:
        return t.reshape(batch, seq, heads, dim).transpose(0, 2, 1, 3)

    def layer_norm(t: Array, w: Array, b: Array) -> Array:
        mean = t.mean(-1, keepdims=True)
        var = ((t - mean) ** 2).mean(-1, keepdims=True)
        return (t - mean) / np.sqrt(var + eps) * w + b

    for p in layers:
        q, k, v = (
            split(linear(x, p[f"{n}.weight"], p[f"{n}.bias"])) for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1 / math.sqrt(dim)) + additive
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attended = (
            ((scores / scores.sum(-1, keepdims=True)) @ v)
            .transpose(0, 2, 1, 3)
            .reshape(batch, seq, hidden)
        )
        x = layer_norm(
            x + linear(attended, p["attention_output.weight"], p["attention_output.bias"]),
            p["ln1.weight"],
            p["ln1.bias"],
        )
        f1 = linear(x, p["intermediate.weight"], p["intermediate.bias"])
        mlp = linear(
            0.5 * f1 * (1 + erf(f1 * np.float32(1 / math.sqrt(2)))),
            p["output.weight"],
            p["output.bias"],
        )
        x = layer_norm(x + mlp, p["ln2.weight"], p["ln2.bias"])
    return x
