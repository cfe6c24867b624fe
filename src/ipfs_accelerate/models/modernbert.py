"""ModernBERT encoders (``model_type: modernbert``) as ``ModernBertModel``, and cross-encoders
as ``ModernBertForSequenceClassification``.

Parameter names equal the keys of Hugging Face ModernBERT checkpoints. The architecture:
token embeddings then a layer norm (no position table), pre-norm layers (the first has no
attention norm), one fused ``attn.Wqkv`` projection with rotary position embeddings on queries
and keys, a GeGLU MLP (``mlp.Wi`` makes the input and the gate, ``mlp.Wo`` projects back), a
final norm. Layers alternate between global attention and local attention over a sliding
window of ``local_attention`` tokens (a key at most ``local_attention // 2`` away), each kind
with its own rope theta. Norms and linear layers have biases only where the config says so
(``norm_bias``, ``attention_bias``, ``mlp_bias``, ``classifier_bias``).

The config is read in both layouts: transformers 5's ``layer_types`` and per-layer-type
``rope_parameters``, and transformers 4's ``global_attn_every_n_layers``,
``global_rope_theta`` and ``local_rope_theta``. A rope type other than ``default``, partial
rotary embeddings, an unknown layer type, activation or ``classifier_pooling`` raise
UnsupportedArchitectureError naming the option.

Batches run padded with an attention mask, or packed (:meth:`ModernBertModel.packed`, as
ModernBERT is meant to run): the dense layers then see the real tokens only, while attention
still runs on the padded layout (no variable-length attention kernel).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import (
    CheckpointError,
    InvalidArgumentError,
    UnsupportedArchitectureError,
)
from ipfs_accelerate.models._config import check_activation, from_dict, require_model_type
from ipfs_accelerate.models._module import (
    Dropout,
    Embedding,
    Linear,
    Module,
    ModuleList,
    activation,
    attend,
)
from ipfs_accelerate.models.bert import PackedTokens, _Layout
from ipfs_accelerate.tensor import Tensor, from_numpy

__all__ = [
    "ModernBertConfig",
    "ModernBertForSequenceClassification",
    "ModernBertModel",
    "ModernBertOutput",
]

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"
#: transformers' defaults when a config names no theta for a layer type
DEFAULT_THETA = {FULL_ATTENTION: 160_000.0, SLIDING_ATTENTION: 10_000.0}
CLASSIFIER_POOLING = ("cls", "mean")
_CONTEXT = "ModernBertModel"


@dataclass
class ModernBertConfig:
    """The fields of a ModernBERT ``config.json`` the forward pass uses (Hugging Face
    defaults); ``layer_types`` and ``rope_theta`` are filled from either config layout."""

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: int = 50283
    attention_bias: bool = False
    mlp_bias: bool = False
    local_attention: int = 128
    classifier_pooling: str = "cls"
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    mlp_dropout: float = 0.0
    classifier_dropout: float = 0.0
    num_labels: int = 2
    id2label: dict[str, str] = field(default_factory=dict)
    #: per layer, "full_attention" or "sliding_attention"
    layer_types: list[str] = field(default_factory=list)
    #: layer type -> rope theta
    rope_theta: dict[str, float] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def window(self) -> int:
        """The farthest a local-attention key may be from its query."""
        return self.local_attention // 2

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModernBertConfig:
        require_model_type(data, ("modernbert",), _CONTEXT)
        plain = {k: v for k, v in data.items() if k not in ("layer_types", "rope_theta")}
        config = from_dict(cls, plain, context="ModernBertConfig")
        for flag in ("norm_bias", "attention_bias", "mlp_bias", "classifier_bias"):
            setattr(config, flag, bool(data.get(flag, False)))
        if config.id2label:
            config.num_labels = len(config.id2label)
        if config.hidden_size % config.num_attention_heads:
            raise UnsupportedArchitectureError(
                f"{_CONTEXT}: hidden_size {config.hidden_size} is not divisible by "
                f"num_attention_heads {config.num_attention_heads}"
            )
        if config.head_dim % 2:
            raise UnsupportedArchitectureError(
                f"{_CONTEXT}: head_dim {config.head_dim} is odd; rotary embeddings need it even"
            )
        if config.local_attention < 2:
            raise UnsupportedArchitectureError(
                f"{_CONTEXT}: local_attention {config.local_attention} is not implemented "
                "(a window of at least 2 tokens is)"
            )
        if config.classifier_pooling not in CLASSIFIER_POOLING:
            raise UnsupportedArchitectureError(
                f"{_CONTEXT}: classifier_pooling {config.classifier_pooling!r} is not "
                f"implemented ({', '.join(CLASSIFIER_POOLING)} are)"
            )
        check_activation(config.hidden_activation, _CONTEXT)
        check_activation(config.classifier_activation, f"{_CONTEXT} classifier")
        config.layer_types = _layer_types(data, config.num_hidden_layers)
        config.rope_theta = _rope_thetas(data)
        return config


def _layer_types(data: Mapping[str, Any], layers: int) -> list[str]:
    given = data.get("layer_types")
    if given is None:
        every = data.get("global_attn_every_n_layers", 3)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise CheckpointError(
                f"{_CONTEXT}: global_attn_every_n_layers must be a positive int, got {every!r}"
            )
        return [SLIDING_ATTENTION if i % every else FULL_ATTENTION for i in range(layers)]
    if not isinstance(given, list) or len(given) != layers:
        raise CheckpointError(
            f"{_CONTEXT}: layer_types must list {layers} layer types, got {given!r}"
        )
    unknown = sorted({str(t) for t in given if t not in (FULL_ATTENTION, SLIDING_ATTENTION)})
    if unknown:
        raise UnsupportedArchitectureError(
            f"{_CONTEXT}: layer_types {unknown} are not implemented "
            f"({FULL_ATTENTION} and {SLIDING_ATTENTION} are)"
        )
    return [str(t) for t in given]


def _rope_thetas(data: Mapping[str, Any]) -> dict[str, float]:
    """Layer type -> theta, from ``rope_parameters`` (transformers 5) or the flat keys."""
    params = data.get("rope_parameters")
    if params is None:
        global_theta = data.get("global_rope_theta", DEFAULT_THETA[FULL_ATTENTION])
        # transformers 4 used the global theta for local layers when local_rope_theta is null
        local_theta = data.get("local_rope_theta", DEFAULT_THETA[SLIDING_ATTENTION])
        if local_theta is None:
            local_theta = global_theta
        for name in ("rope_scaling", "partial_rotary_factor"):
            if data.get(name) not in (None, 1, 1.0):
                raise UnsupportedArchitectureError(
                    f"{_CONTEXT}: {name} {data[name]!r} is not implemented"
                )
        thetas = {FULL_ATTENTION: global_theta, SLIDING_ATTENTION: local_theta}
    else:
        if not isinstance(params, Mapping) or not set(params) <= {FULL_ATTENTION,
                                                                  SLIDING_ATTENTION}:  # fmt: skip
            raise UnsupportedArchitectureError(
                f"{_CONTEXT}: rope_parameters must map {FULL_ATTENTION}/{SLIDING_ATTENTION} to "
                f"their parameters; {params!r} is not implemented"
            )
        thetas = {}
        for kind in (FULL_ATTENTION, SLIDING_ATTENTION):
            entry = params.get(kind) or {}
            if not isinstance(entry, Mapping):
                raise CheckpointError(f"{_CONTEXT}: rope_parameters[{kind!r}] is {entry!r}")
            rope_type = entry.get("rope_type", entry.get("type", "default"))
            if rope_type != "default":
                raise UnsupportedArchitectureError(
                    f"{_CONTEXT}: rope_type {rope_type!r} ({kind}) is not implemented (default is)"
                )
            if entry.get("partial_rotary_factor") not in (None, 1, 1.0):
                raise UnsupportedArchitectureError(
                    f"{_CONTEXT}: partial_rotary_factor {entry['partial_rotary_factor']!r} "
                    f"({kind}) is not implemented (1.0 is)"
                )
            thetas[kind] = entry.get("rope_theta", DEFAULT_THETA[kind])
    for kind, theta in thetas.items():
        if isinstance(theta, bool) or not isinstance(theta, int | float) or theta <= 0:
            raise CheckpointError(
                f"{_CONTEXT}: the rope theta of {kind} layers must be a positive number, "
                f"got {theta!r}"
            )
    return {kind: float(theta) for kind, theta in thetas.items()}


@dataclass
class ModernBertOutput:
    last_hidden_state: Tensor
    pooler_output: Tensor | None = None


@functools.lru_cache(maxsize=32)
def _rotary_tables(
    length: int, head_dim: int, theta: float, dtype: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(cos, signed sin), each (1, length, 1, head_dim): laid out for (batch, length, heads,
    head_dim) rows, positions 0..length-1, float32 arithmetic as transformers does it, then
    the model's dtype. The sine's first half is negated: ``rotate_half(x) * sin`` equals
    ``swap_halves(x) * signed_sin`` exactly (a negation rounds nothing), which spares the
    pass that negates half of every query and key."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / (np.float32(theta) ** exponents)).astype(np.float32)
    freqs = np.arange(length, dtype=np.float32)[:, None] * inv_freq[None, :]
    angles = np.concatenate([freqs, freqs], axis=-1)[None, :, None]
    cos, sin = np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
    sin[..., : head_dim // 2] *= -1
    cos.setflags(write=False)
    sin.setflags(write=False)
    return cos, sin


@functools.lru_cache(maxsize=32)
def _window_band(length: int, window: int) -> np.ndarray[Any, Any]:
    """(1, 1, length, length) bool: key within ``window`` positions of the query."""
    positions = np.arange(length)
    band = np.abs(positions[:, None] - positions[None, :]) <= window
    out = band[None, None]
    out.setflags(write=False)
    return out


def rotate(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """``x * cos + rotate_half(x) * sin`` over the last axis (halves, as transformers), with
    the tables of :func:`_rotary_tables` (sine's first half negated)."""
    half = x.shape[-1] // 2
    return x * cos + ops.concat([x[..., half:], x[..., :half]], axis=-1) * signed_sin


class NormLayer(Module):
    """Layer normalisation whose shift exists only with ``bias`` (ModernBERT's ``norm_bias``)."""

    weight: Tensor
    bias: Tensor

    def __init__(self, size: int, eps: float, bias: bool) -> None:
        super().__init__()
        self.size, self.eps, self.has_bias = size, float(eps), bias
        self.declare("weight", (size,))
        if bias:
            self.declare("bias", (size,))

    def __call__(self, x: Tensor) -> Tensor:
        bias = self.bias if self.has_bias else None
        return ops.layer_norm(x, self.size, self.weight, bias, self.eps)


class ModernBertEmbeddings(Module):
    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.tok_embeddings = Embedding(config.vocab_size, config.hidden_size)
        self.norm = NormLayer(config.hidden_size, config.norm_eps, config.norm_bias)
        self.drop = Dropout(config.embedding_dropout)

    def __call__(self, input_ids: Tensor) -> Tensor:
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


@dataclass(frozen=True)
class _Context:
    """What every layer of one forward pass reads: per layer type, its mask and rotary
    tables."""

    masks: dict[str, Tensor | None]
    rotary: dict[str, tuple[Tensor, Tensor]]
    #: a packed batch's layout (hidden states are (T, H) between the attention products)
    layout: _Layout | None = None


class ModernBertAttention(Module):
    def __init__(self, config: ModernBertConfig, kind: str) -> None:
        super().__init__()
        self.kind, self.heads, self.head_dim = kind, config.num_attention_heads, config.head_dim
        size = config.hidden_size
        self.Wqkv = Linear(size, 3 * size, bias=config.attention_bias)
        self.Wo = Linear(size, size, bias=config.attention_bias)
        # transformers applies attention_dropout to the probabilities and to Wo's output
        self.drop = Dropout(config.attention_dropout)
        self.out_drop = Dropout(config.attention_dropout)

    def __call__(self, x: Tensor, context: _Context) -> Tensor:
        layout = context.layout
        qkv = self.Wqkv(x) if layout is None else layout.padded(self.Wqkv(x))
        batch, length, width = qkv.shape
        size = width // 3
        cos, sin = context.rotary[self.kind]
        # Wqkv's output is [queries | keys | values], each heads * head_dim wide: queries and
        # keys rotate together, as (batch, length, 2 * heads, head_dim) rows (one pass each
        # of the rotation's products instead of two)
        rotated = rotate(
            qkv[..., : 2 * size].reshape(batch, length, 2 * self.heads, self.head_dim), cos, sin
        )
        q, k = (
            part.permute(0, 2, 1, 3)
            for part in (rotated[:, :, : self.heads], rotated[:, :, self.heads :])
        )
        v = qkv[..., 2 * size :].reshape(batch, length, self.heads, self.head_dim)
        out = attend(q, k, v.permute(0, 2, 1, 3), context.masks[self.kind], self.drop)
        out = out.permute(0, 2, 1, 3).reshape(batch, length, width // 3)
        return self.out_drop(self.Wo(out if layout is None else layout.packed(out)))


class ModernBertMLP(Module):
    """GeGLU: ``Wo(act(input) * gate)`` where ``Wi`` makes ``[input | gate]``."""

    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.act = config.hidden_activation
        size, inner = config.hidden_size, config.intermediate_size
        self.Wi = Linear(size, 2 * inner, bias=config.mlp_bias)
        self.Wo = Linear(inner, size, bias=config.mlp_bias)
        self.drop = Dropout(config.mlp_dropout)

    def __call__(self, x: Tensor) -> Tensor:
        value, gate = ops.split(self.Wi(x), 2, axis=-1)
        return self.Wo(self.drop(activation(self.act, value) * gate))


class ModernBertEncoderLayer(Module):
    def __init__(self, config: ModernBertConfig, index: int) -> None:
        super().__init__()
        norm = (config.hidden_size, config.norm_eps, config.norm_bias)
        # the first layer reads the embedding norm's output directly
        self.attn_norm: NormLayer | None = NormLayer(*norm) if index else None
        self.attn = ModernBertAttention(config, config.layer_types[index])
        self.mlp_norm = NormLayer(*norm)
        self.mlp = ModernBertMLP(config)

    def __call__(self, x: Tensor, context: _Context) -> Tensor:
        x = x + self.attn(self.attn_norm(x) if self.attn_norm is not None else x, context)
        return x + self.mlp(self.mlp_norm(x))


class ModernBertModel(Module):
    """The ModernBERT encoder: ``model(input_ids, attention_mask) -> ModernBertOutput``.

    ``input_ids`` and ``attention_mask`` (1 = token, 0 = padding) are int tensors (B, L) on
    the model's device; ``token_type_ids`` is accepted and ignored (no segments), and
    ``pooler_output`` is always None (ModernBERT has no pooler).
    """

    config_class: ClassVar[type[ModernBertConfig]] = ModernBertConfig

    base_model_prefix: ClassVar[str] = "model"
    quantizable_embeddings: ClassVar[tuple[str, ...]] = ("embeddings.tok_embeddings.weight",)

    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = ModernBertEmbeddings(config)
        self.layers = ModuleList(
            [ModernBertEncoderLayer(config, i) for i in range(config.num_hidden_layers)]
        )
        self.final_norm = NormLayer(config.hidden_size, config.norm_eps, config.norm_bias)

    @property
    def max_input_tokens(self) -> int:
        return self.config.max_position_embeddings

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        pool: bool = True,
    ) -> ModernBertOutput:
        if input_ids.ndim != 2:
            raise InvalidArgumentError(
                f"{_CONTEXT}: input_ids must be (batch, length), got shape {input_ids.shape}"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise InvalidArgumentError(
                f"{_CONTEXT}: attention_mask has shape {attention_mask.shape}, input_ids "
                f"{input_ids.shape}; they must be equal"
            )
        if input_ids.shape[1] > self.max_input_tokens:
            raise InvalidArgumentError(
                f"{_CONTEXT}: sequence length {input_ids.shape[1]} exceeds "
                f"max_position_embeddings {self.max_input_tokens}; truncate the input "
                "(the tokenizer does)"
            )
        x = self.embeddings(input_ids)
        context = self._context(input_ids.shape[1], x, attention_mask)
        return ModernBertOutput(self._encode(x, context))

    def packed(self, batch: PackedTokens, *, padded: bool = False) -> Tensor:
        """The last hidden states (T, hidden) of a packed batch's tokens, in ``batch.keep``'s
        order; with ``padded``, laid out (rows, length, hidden) as the batch was, padding
        slots holding token 0's state (:meth:`BertModel.packed
        <ipfs_accelerate.models.bert.BertModel.packed>`'s contract). Equal to
        ``last_hidden_state`` at the real tokens of the padded forward; the dense layers see
        no padding, attention runs padded (positions are the places in the padded rows)."""
        if batch.length > self.max_input_tokens:
            raise InvalidArgumentError(
                f"{_CONTEXT}: sequence length {batch.length} exceeds max_position_embeddings "
                f"{self.max_input_tokens}; truncate the input (the tokenizer does)"
            )
        device = self.final_norm.weight.device
        layout = _Layout(
            from_numpy(batch.keep, device), from_numpy(batch.place, device), batch.rows,
            batch.length,
        )  # fmt: skip
        x = self.embeddings(from_numpy(batch.input_ids, device))
        mask = from_numpy(batch.attention_mask, device)
        hidden = self._encode(x, self._context(batch.length, x, mask, layout))
        return layout.padded(hidden) if padded else hidden

    def _encode(self, x: Tensor, context: _Context) -> Tensor:
        for layer in self.layers:
            x = layer(x, context)
        return self.final_norm(x)

    def _context(
        self, length: int, x: Tensor, attention_mask: Tensor | None, layout: _Layout | None = None
    ) -> _Context:
        device, dtype = x.device, x.dtype.name
        kinds = set(self.config.layer_types)
        rotary = {}
        for kind in kinds:
            cos, sin = _rotary_tables(
                length, self.config.head_dim, self.config.rope_theta[kind], dtype
            )
            rotary[kind] = (from_numpy(cos, device), from_numpy(sin, device))
        keys = None
        if attention_mask is not None:
            keys = _some_key((attention_mask != 0).reshape(attention_mask.shape[0], 1, 1, length))
        masks: dict[str, Tensor | None] = {FULL_ATTENTION: keys}
        if SLIDING_ATTENTION in kinds:
            band = from_numpy(_window_band(length, self.config.window), device)
            masks[SLIDING_ATTENTION] = (
                band if keys is None else _some_key(ops.logical_and(keys, band))
            )
        return _Context(masks, rotary, layout)


def _some_key(allowed: Tensor) -> Tensor:
    """``allowed`` where a query row may attend to no key (a padding query whose window holds
    only padding, a row of padding only) opened to every key: a row with no key is NaN, and
    the next layer would spread it through that position's value to the real tokens."""
    return ops.logical_or(allowed, ops.logical_not(ops.any(allowed, axis=-1, keepdims=True)))


class ModernBertPredictionHead(Module):
    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.act = config.classifier_activation
        self.dense = Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.norm = NormLayer(config.hidden_size, config.norm_eps, config.norm_bias)

    def __call__(self, x: Tensor) -> Tensor:
        return self.norm(activation(self.act, self.dense(x)))


class ModernBertForSequenceClassification(Module):
    """ModernBERT with its classification head (a cross-encoder): ``model(input_ids,
    attention_mask) -> logits`` (B, num_labels). The head reads the first token
    (``classifier_pooling`` "cls") or the mean over the real tokens ("mean")."""

    config_class: ClassVar[type[ModernBertConfig]] = ModernBertConfig

    base_model_prefix: ClassVar[str] = "model"
    is_head_model: ClassVar[bool] = True
    quantizable_embeddings: ClassVar[tuple[str, ...]] = ("model.embeddings.tok_embeddings.weight",)

    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.config = config
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.drop = Dropout(config.classifier_dropout)

    @property
    def max_input_tokens(self) -> int:
        return self.model.max_input_tokens

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        hidden = self.model(input_ids, attention_mask).last_hidden_state
        if self.config.classifier_pooling == "cls":
            pooled = hidden[:, 0]
        elif attention_mask is None:
            pooled = ops.mean(hidden, axis=1)
        else:
            weights = ops.astype(attention_mask != 0, hidden.dtype).unsqueeze(-1)
            pooled = ops.sum(hidden * weights, axis=1) / ops.sum(weights, axis=1)
        return self.classifier(self.drop(self.head(pooled)))


def model_class_for(config: Mapping[str, Any], weights: Mapping[str, Any] | None) -> type[Module]:
    """The cross-encoder for a sequence-classification checkpoint (``classifier.weight``
    beside a ``head``, and no other task named in ``architectures``), else the base encoder
    (``loading.MODEL_FAMILIES``)."""
    architectures = list(config.get("architectures") or [])
    named = "ModernBertForSequenceClassification" in architectures
    if weights is None:
        return ModernBertForSequenceClassification if named else ModernBertModel
    keyed = "classifier.weight" in weights and "head.dense.weight" in weights
    other_task = any(a != "ModernBertForSequenceClassification" for a in architectures)
    return ModernBertForSequenceClassification if keyed and not other_task else ModernBertModel
