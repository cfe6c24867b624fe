"""Llama-family decoders (``model_type`` llama, mistral, qwen2, qwen3) as ``LlamaForCausalLM``.

Parameter names equal the keys of Hugging Face ``LlamaForCausalLM`` checkpoints (Mistral, Qwen2
and Qwen3 share them). Supported: grouped-query attention, RoPE (``rope_type`` default,
``linear`` and ``llama3``; ``rope_theta`` at the top level as transformers 4 writes it or in
``rope_parameters`` as transformers 5 does), RMSNorm, SwiGLU, tied or untied embeddings,
q/k/v biases (Qwen2, ``attention_bias``), q/k RMSNorm (Qwen3), sliding-window attention
(Mistral's ``sliding_window``; Qwen's ``use_sliding_window`` / ``layer_types``). Anything else
(another rope type, partial rotary embeddings, ...) raises UnsupportedArchitectureError naming
the option. Generation (cache, sampling) is :mod:`ipfs_accelerate.models.generation`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import CheckpointError, UnsupportedArchitectureError
from ipfs_accelerate.models._config import check_activation, from_dict, require_model_type
from ipfs_accelerate.models._module import Embedding, Linear, Module, ModuleList, activation
from ipfs_accelerate.models.generation._cache import (
    FULL_ATTENTION,
    SLIDING_ATTENTION,
    CacheShape,
    DecodeStep,
)
from ipfs_accelerate.tensor import Tensor, from_numpy

__all__ = ["LlamaConfig", "LlamaForCausalLM", "RMSNorm", "RotaryEmbedding"]

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
ROPE_TYPES = ("default", "linear", "llama3")
_CONTEXT = "LlamaForCausalLM"


@dataclass
class LlamaConfig:
    """The fields of a Llama/Mistral/Qwen2/Qwen3 ``config.json`` the model uses."""

    model_type: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 0
    head_dim: int = 0
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    #: per layer, "full_attention" or "sliding_attention"
    layer_types: list[str] = field(default_factory=list)
    sliding_window: int | None = None
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_options: dict[str, Any] = field(default_factory=dict)

    @property
    def qkv_bias(self) -> bool:
        return self.attention_bias or self.model_type == "qwen2"

    @property
    def o_bias(self) -> bool:
        return self.attention_bias and self.model_type != "qwen2"

    @property
    def qk_norm(self) -> bool:
        return self.model_type == "qwen3"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LlamaConfig:
        model_type = require_model_type(data, MODEL_TYPES, _CONTEXT)
        plain = {k: v for k, v in data.items() if k not in ("layer_types", "sliding_window")}
        config = from_dict(cls, plain, context=f"{_CONTEXT} ({model_type})")
        config.model_type = model_type
        config.tie_word_embeddings = bool(data.get("tie_word_embeddings", False))
        config.attention_bias = bool(data.get("attention_bias", False))
        config.mlp_bias = bool(data.get("mlp_bias", False)) and model_type == "llama"
        heads = config.num_attention_heads
        config.num_key_value_heads = config.num_key_value_heads or heads
        if heads % config.num_key_value_heads:
            raise UnsupportedArchitectureError(
                f"{_CONTEXT}: num_attention_heads {heads} is not a multiple of "
                f"num_key_value_heads {config.num_key_value_heads}"
            )
        if not config.head_dim:
            if config.hidden_size % heads:
                raise UnsupportedArchitectureError(
                    f"{_CONTEXT}: hidden_size {config.hidden_size} is not divisible by "
                    f"num_attention_heads {heads} (and config.json gives no head_dim)"
                )
            config.head_dim = config.hidden_size // heads
        if config.head_dim % 2:
            raise UnsupportedArchitectureError(f"{_CONTEXT}: head_dim {config.head_dim} is odd")
        check_activation(config.hidden_act, _CONTEXT)
        _read_attention_layout(config, data)
        _read_rope(config, data)
        return config


def _read_attention_layout(config: LlamaConfig, data: Mapping[str, Any]) -> None:
    """Which layers attend through a sliding window, and its size."""
    window = data.get("sliding_window")
    layers = config.num_hidden_layers
    if config.model_type == "mistral":
        uses_window = window is not None
        types = [SLIDING_ATTENTION if uses_window else FULL_ATTENTION] * layers
    else:
        uses_window = bool(data.get("use_sliding_window", False)) and window is not None
        first = int(data.get("max_window_layers", layers) or 0)
        types = [
            SLIDING_ATTENTION if uses_window and i >= first else FULL_ATTENTION
            for i in range(layers)
        ]
        given = data.get("layer_types")
        if given is not None:
            if not isinstance(given, list) or len(given) != layers:
                raise CheckpointError(
                    f"{_CONTEXT}: layer_types must list {layers} layer types, got {given!r}"
                )
            unknown = sorted({t for t in given if t not in (FULL_ATTENTION, SLIDING_ATTENTION)})
            if unknown:
                raise UnsupportedArchitectureError(
                    f"{_CONTEXT}: layer_types {unknown} are not implemented "
                    f"({FULL_ATTENTION} and {SLIDING_ATTENTION} are)"
                )
            types = [str(t) for t in given]
    if SLIDING_ATTENTION in types:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise CheckpointError(
                f"{_CONTEXT}: sliding_window must be a positive int, got {window!r}"
            )
        config.sliding_window = window
    config.layer_types = types


def _read_rope(config: LlamaConfig, data: Mapping[str, Any]) -> None:
    params = data.get("rope_parameters") or data.get("rope_scaling") or {}
    if not isinstance(params, Mapping):
        raise CheckpointError(f"{_CONTEXT}: rope_parameters must be an object, got {params!r}")
    if FULL_ATTENTION in params or SLIDING_ATTENTION in params:
        raise UnsupportedArchitectureError(
            f"{_CONTEXT}: rope_parameters per layer type are not implemented"
        )
    theta = params.get("rope_theta", data.get("rope_theta", 10000.0))
    if isinstance(theta, bool) or not isinstance(theta, int | float) or theta <= 0:
        raise CheckpointError(f"{_CONTEXT}: rope_theta must be a positive number, got {theta!r}")
    config.rope_theta = float(theta)
    rope_type = str(params.get("rope_type", params.get("type", "default")))
    if rope_type not in ROPE_TYPES:
        raise UnsupportedArchitectureError(
            f"{_CONTEXT}: rope_type {rope_type!r} is not implemented"
            f" (supported: {', '.join(ROPE_TYPES)})"
        )
    partial = params.get("partial_rotary_factor", data.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise UnsupportedArchitectureError(
            f"{_CONTEXT}: partial_rotary_factor {partial!r} is not implemented (1.0 is)"
        )
    needed = {
        "default": (),
        "linear": ("factor",),
        "llama3": (
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ),
    }[rope_type]
    options: dict[str, Any] = {}
    for name in needed:
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise CheckpointError(
                f"{_CONTEXT}: rope_type {rope_type!r} needs a positive number {name}, got {value!r}"
            )
        options[name] = float(value)
    if rope_type == "llama3" and options["high_freq_factor"] <= options["low_freq_factor"]:
        raise CheckpointError(f"{_CONTEXT}: llama3 rope needs high_freq_factor > low_freq_factor")
    config.rope_type, config.rope_options = rope_type, options


class RotaryEmbedding:
    """cos/sin tables of rotary position embeddings for given positions, computed in the
    graph from a positions tensor (so that a captured decode step takes positions as an input)."""

    def __init__(self, head_dim: int, theta: float, rope_type: str, options: Mapping[str, Any]):
        exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
        inv_freq = (1.0 / (theta**exponents)).astype(np.float32)
        if rope_type == "linear":
            inv_freq = inv_freq / np.float32(options["factor"])
        elif rope_type == "llama3":
            inv_freq = _llama3_frequencies(inv_freq, options)
        self.inv_freq = inv_freq.astype(np.float32)
        self._frequencies: dict[str, Tensor] = {}

    def __call__(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """(cos, sin), each (B, 1, L, head_dim), for int64 positions (B, L): float32 angles
        ``position * inv_freq`` as transformers computes them (exact positions below 2**24)."""
        batch, length = positions.shape
        freqs = positions.astype("float32").reshape(batch, 1, length, 1) * self._inv_freq(
            positions.device
        )
        cos, sin = ops.cos(freqs), ops.sin(freqs)
        # both halves of the head see the same angles (rotate_half's layout)
        return ops.concat([cos, cos], axis=-1), ops.concat([sin, sin], axis=-1)

    def _inv_freq(self, device: str) -> Tensor:
        found = self._frequencies.get(device)
        if found is None:
            from ipfs_accelerate import hal

            found = from_numpy(self.inv_freq.reshape(1, 1, 1, -1), device)
            hal.mark_parameter(found)  # a constant of every graph that reads it
            self._frequencies[device] = found
        return found


def _llama3_frequencies(
    inv_freq: np.ndarray[Any, Any], options: Mapping[str, float]
) -> np.ndarray[Any, Any]:
    """Llama 3.1's frequency-dependent scaling (as transformers' _compute_llama3_parameters)."""
    factor = options["factor"]
    low, high = options["low_freq_factor"], options["high_freq_factor"]
    old_context = options["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    result: np.ndarray[Any, Any] = np.where(medium, smoothed, scaled).astype(np.float32)
    return result


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x * cos + rotate_half(x) * sin`` over the last axis (halves, as transformers)."""
    half = x.shape[-1] // 2
    rotated = ops.concat([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


class RMSNorm(Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last axis."""

    weight: Tensor

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.eps = float(eps)
        self.declare("weight", (size,))

    def __call__(self, x: Tensor) -> Tensor:
        scale = ops.rsqrt(ops.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return x * scale * self.weight


class LlamaAttention(Module):
    def __init__(self, config: LlamaConfig, kind: str) -> None:
        super().__init__()
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim, self.kind = config.head_dim, kind
        hidden, d = config.hidden_size, config.head_dim
        self.q_proj = Linear(hidden, self.heads * d, bias=config.qkv_bias)
        self.k_proj = Linear(hidden, self.kv_heads * d, bias=config.qkv_bias)
        self.v_proj = Linear(hidden, self.kv_heads * d, bias=config.qkv_bias)
        self.o_proj = Linear(self.heads * d, hidden, bias=config.o_bias)
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        if config.qk_norm:
            self.q_norm = RMSNorm(d, config.rms_norm_eps)
            self.k_norm = RMSNorm(d, config.rms_norm_eps)

    def __call__(self, x: Tensor, step: DecodeStep, layer: int, cos: Tensor, sin: Tensor) -> Tensor:
        batch, length, _ = x.shape
        d = self.head_dim
        q = self.q_proj(x).reshape(batch, length, self.heads, d)
        k = self.k_proj(x).reshape(batch, length, self.kv_heads, d)
        v = self.v_proj(x).reshape(batch, length, self.kv_heads, d)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = rotate(q.permute(0, 2, 1, 3), cos, sin)
        k = rotate(k.permute(0, 2, 1, 3), cos, sin)
        # a key/value head's query heads stacked along the query axis: one product per kv head
        groups = self.heads // self.kv_heads
        q = q.reshape(batch, self.kv_heads, groups * length, d)
        out = step.attend(layer, q, k, v.permute(0, 2, 1, 3), self.kind, groups)
        out = out.reshape(batch, self.heads, length, d).permute(0, 2, 1, 3)
        return self.o_proj(out.reshape(batch, length, self.heads * d))


class LlamaMLP(Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.act = config.hidden_act
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = Linear(hidden, inner, bias=bias)
        self.up_proj = Linear(hidden, inner, bias=bias)
        self.down_proj = Linear(inner, hidden, bias=bias)

    def __call__(self, x: Tensor) -> Tensor:
        return self.down_proj(activation(self.act, self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(Module):
    def __init__(self, config: LlamaConfig, kind: str) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, kind)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def __call__(self, x: Tensor, step: DecodeStep, layer: int, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), step, layer, cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        self.layers = ModuleList([LlamaDecoderLayer(config, kind) for kind in config.layer_types])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(Module):
    """The decoder with its language-model head: ``model(input_ids, step) -> logits``.

    ``step`` comes from a :class:`~ipfs_accelerate.models.generation.KVCache` (see
    :meth:`cache_shape`); the generation engine drives prefill and decoding.
    """

    config_class: ClassVar[type[LlamaConfig]] = LlamaConfig
    base_model_prefix: ClassVar[str] = "model"
    #: 4-bit weights take int8 inputs per weight block where the backend has the kernel
    #: (models/_precision.py INT4_ACTIVATIONS): a decode step multiplies a few rows
    int4_block_activations: ClassVar[bool] = True
    is_head_model: ClassVar[bool] = True
    tied_weights: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}
    #: int8: the vocabulary projection (a decode step's largest read: 28 MB of SmolLM2's 135M
    #: parameters) in 8-bit blocks of 32 with block-rounded inputs, an integer product on
    #: webnn; per output channel it ran as a folded float32 product (four times the bytes)
    int8_block_weights: ClassVar[tuple[str, ...]] = ("lm_head.weight",)
    # rotary tables some older checkpoints saved as buffers
    ignored_keys: ClassVar[tuple[str, ...]] = (
        "model.rotary_emb.inv_freq",
        *(f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(256)),
    )

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(
            config.head_dim, config.rope_theta, config.rope_type, config.rope_options
        )

    @property
    def context_length(self) -> int:
        return self.config.max_position_embeddings

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def cache_shape(self) -> CacheShape:
        c = self.config
        return CacheShape(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, c.sliding_window)

    def __call__(self, input_ids: Tensor, step: DecodeStep, *, last_only: bool = True) -> Tensor:
        """Logits of the new tokens ``input_ids`` (B, L): (B, vocab) of the last column with
        ``last_only``, else (B, L, vocab)."""
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.rotary(step.position_ids())
        for n, layer in enumerate(self.model.layers):
            x = layer(x, step, n, cos, sin)
        if last_only:
            x = x[:, -1]
        return self.lm_head(self.model.norm(x))


def model_class_for(config: Mapping[str, Any], weights: Mapping[str, Any] | None) -> type[Module]:
    """The class a llama-family checkpoint loads into (see ``loading.MODEL_FAMILIES``)."""
    check_tied_head(config, weights, "lm_head.weight", tied_by_default=False)
    return LlamaForCausalLM


def check_tied_head(
    config: Mapping[str, Any],
    weights: Mapping[str, Any] | None,
    key: str,
    *,
    tied_by_default: bool,
) -> None:
    """A checkpoint without its output projection must say that it ties it to the embedding
    (``tied_by_default``: transformers' default of ``tie_word_embeddings`` for the family)."""
    if weights is None or key in weights or config.get("tie_word_embeddings", tied_by_default):
        return
    raise CheckpointError(
        f"checkpoint has no {key!r} and config.json sets tie_word_embeddings=false:"
        " config and weights disagree"
    )
