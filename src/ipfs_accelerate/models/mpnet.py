"""MPNet encoders (``model_type: mpnet``, e.g. all-mpnet-base-v2) as ``MPNetModel``, and
cross-encoders as ``MPNetForSequenceClassification``.

Parameter names equal the keys of Hugging Face MPNet checkpoints. MPNet differs from BERT in
two ways that matter here: absolute positions are counted RoBERTa-style from the padding id
(a padding token gets position 1, the real tokens 2, 3, ...), and every attention layer adds a
bias per head looked up by the bucketed relative distance between query and key, from one
table (``encoder.relative_attention_bias``) shared by all layers. There are no token types.

Like transformers, the bucketing always uses 32 buckets and a maximum distance of 128
whatever ``relative_attention_num_buckets`` says (that setting only sizes the table), and the
padding id used for positions is 1 (the id every MPNet tokenizer pads with). Supported: any
``hidden_act`` of :data:`~ipfs_accelerate.models._module.SUPPORTED_ACTIVATIONS`, an optional
pooler. A table smaller than the 32 buckets the bias reads, or a hidden size the heads do not
divide, raises UnsupportedArchitectureError.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import InvalidArgumentError, UnsupportedArchitectureError
from ipfs_accelerate.models._config import check_activation, from_dict, require_model_type
from ipfs_accelerate.models._module import (
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    ModuleList,
    activation,
    attend,
    merge_heads,
    split_heads,
)
from ipfs_accelerate.models.bert import PackedTokens, _Layout
from ipfs_accelerate.tensor import Tensor, from_numpy
from ipfs_accelerate.tensor._dtype import float32

__all__ = ["MPNetConfig", "MPNetForSequenceClassification", "MPNetModel", "MPNetOutput"]

#: the id MPNet's positions are counted from (transformers fixes it at 1, as fairseq did)
PADDING_IDX = 1
#: what transformers' ``compute_position_bias`` buckets with, independent of the config
BIAS_BUCKETS = 32
BIAS_MAX_DISTANCE = 128


@dataclass
class MPNetConfig:
    """The fields of an MPNet ``config.json`` the forward pass uses (Hugging Face defaults)."""

    vocab_size: int = 30527
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    relative_attention_num_buckets: int = 32
    pad_token_id: int = 1
    num_labels: int = 2
    id2label: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MPNetConfig:
        require_model_type(data, ("mpnet",), "MPNetModel")
        config = from_dict(cls, data, context="MPNetConfig")
        if config.id2label:
            config.num_labels = len(config.id2label)
        if config.hidden_size % config.num_attention_heads:
            raise UnsupportedArchitectureError(
                f"MPNetModel: hidden_size {config.hidden_size} is not divisible by "
                f"num_attention_heads {config.num_attention_heads}"
            )
        if config.relative_attention_num_buckets < BIAS_BUCKETS:
            raise UnsupportedArchitectureError(
                f"MPNetModel: relative_attention_num_buckets "
                f"{config.relative_attention_num_buckets} is below the {BIAS_BUCKETS} buckets "
                "MPNet's relative position bias reads"
            )
        if config.max_position_embeddings <= PADDING_IDX + 1:
            raise UnsupportedArchitectureError(
                f"MPNetModel: max_position_embeddings {config.max_position_embeddings} leaves no "
                f"position after the padding id {PADDING_IDX}"
            )
        check_activation(config.hidden_act, "MPNetModel")
        return config


@dataclass
class MPNetOutput:
    last_hidden_state: Tensor
    pooler_output: Tensor | None


def relative_position_buckets(length: int) -> np.ndarray[Any, Any]:
    """(length, length) int64: the bias bucket of each (query, key) pair. Half the buckets
    are for keys before the query, half for keys after; in each half, distances below 8 get a
    bucket each and longer ones share logarithmically spaced buckets up to 128 and beyond."""
    return _buckets(length).copy()


@functools.lru_cache(maxsize=16)
def _buckets(length: int) -> np.ndarray[Any, Any]:
    positions = np.arange(length, dtype=np.int64)
    # n > 0 where the key precedes the query (transformers' sign convention)
    n = positions[:, None] - positions[None, :]
    half = BIAS_BUCKETS // 2
    buckets = np.where(n < 0, half, 0).astype(np.int64)
    n = np.abs(n)
    exact = half // 2
    with np.errstate(divide="ignore"):
        # float32 as torch computes it, so a distance on a bucket edge lands where it does there
        ratio = np.log(n.astype(np.float32) / np.float32(exact)) / np.float32(
            math.log(BIAS_MAX_DISTANCE / exact)
        )
    far = exact + (ratio * np.float32(half - exact)).astype(np.float32)
    far = np.minimum(np.trunc(np.where(n < exact, 0, far)).astype(np.int64), half - 1)
    buckets += np.where(n < exact, n, far)
    buckets.setflags(write=False)
    return buckets


@functools.lru_cache(maxsize=16)
def _inclusive_prefix(length: int) -> np.ndarray[Any, Any]:
    """(length, length) float32 with ones on and above the diagonal: ``x @ it`` is the
    running sum of ``x`` along its last axis (exact for counts below 2**24)."""
    table = np.triu(np.ones((length, length), dtype=np.float32))
    table.setflags(write=False)
    return table


class MPNetEmbeddings(Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, input_ids: Tensor) -> Tensor:
        return self.packed(input_ids, self.positions(input_ids))

    def packed(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))

    @staticmethod
    def positions(input_ids: Tensor) -> Tensor:
        """Padding tokens at position 1, the others numbered 2, 3, ... in order, counted on
        the device (a running sum as a product with a triangular matrix: no host round trip)."""
        length = input_ids.shape[1]
        real = ops.astype(ops.not_equal(input_ids, PADDING_IDX), float32)
        counts = real @ from_numpy(_inclusive_prefix(length), input_ids.device)
        return ops.astype(counts * real, input_ids.dtype) + PADDING_IDX


class MPNetSelfAttention(Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        size = config.hidden_size
        self.q = Linear(size, size)
        self.k = Linear(size, size)
        self.v = Linear(size, size)
        self.o = Linear(size, size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def __call__(self, x: Tensor, bias: Tensor, layout: _Layout | None = None) -> Tensor:
        if layout is None:
            q, k, v = (split_heads(proj(x), self.num_heads) for proj in (self.q, self.k, self.v))
            return self.o(merge_heads(attend(q, k, v, bias, self.dropout)))
        # packed: the projections see the real tokens only, attention the padded layout
        q, k, v = (
            split_heads(layout.padded(proj(x)), self.num_heads) for proj in (self.q, self.k, self.v)
        )
        attended = merge_heads(attend(q, k, v, bias, self.dropout))
        return self.o(layout.packed(attended))


class MPNetAttention(Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.attn = MPNetSelfAttention(config)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, x: Tensor, bias: Tensor, layout: _Layout | None = None) -> Tensor:
        return self.LayerNorm(self.dropout(self.attn(x, bias, layout)) + x)


class MPNetIntermediate(Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.act = config.hidden_act
        self.dense = Linear(config.hidden_size, config.intermediate_size)

    def __call__(self, x: Tensor) -> Tensor:
        return activation(self.act, self.dense(x))


class MPNetLayerOutput(Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class MPNetLayer(Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.attention = MPNetAttention(config)
        self.intermediate = MPNetIntermediate(config)
        self.output = MPNetLayerOutput(config)

    def __call__(self, x: Tensor, bias: Tensor, layout: _Layout | None = None) -> Tensor:
        attended = self.attention(x, bias, layout)
        return self.output(self.intermediate(attended), attended)


class MPNetEncoder(Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.layer = ModuleList([MPNetLayer(config) for _ in range(config.num_hidden_layers)])
        self.relative_attention_bias = Embedding(
            config.relative_attention_num_buckets, config.num_attention_heads
        )

    def __call__(
        self, x: Tensor, attention_mask: Tensor | None, layout: _Layout | None = None
    ) -> Tensor:
        length = x.shape[1] if layout is None else layout.length
        bias = self.attention_bias(length, x.device, attention_mask)
        for layer in self.layer:
            x = layer(x, bias, layout)
        return x

    def attention_bias(self, length: int, device: str, attention_mask: Tensor | None) -> Tensor:
        """The additive attention mask every layer shares: the relative position bias
        (1 or B, heads, L, L), and the dtype's lowest value at padding keys (as transformers
        adds it, so a row of padding only stays finite)."""
        buckets = from_numpy(_buckets(length), device)
        bias = self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)
        if attention_mask is None:
            return ops.contiguous(bias)
        keys = (attention_mask != 0).reshape(attention_mask.shape[0], 1, 1, length)
        lowest = float(np.finfo(np.dtype(bias.dtype.name)).min)
        # laid out once: every layer adds it to its scores, and on the numpy backend adding a
        # transposed layout costs more than the copy (BERT-base shapes: 1.05 vs 0.63 ms a layer)
        return ops.contiguous(ops.where(keys, bias, lowest))


class MPNetPooler(Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def __call__(self, hidden: Tensor) -> Tensor:
        return ops.tanh(self.dense(hidden[:, 0]))


class MPNetModel(Module):
    """The MPNet encoder: ``model(input_ids, attention_mask) -> MPNetOutput``.

    ``input_ids`` and ``attention_mask`` (1 = token, 0 = padding) are int tensors (B, L) on
    the model's device; ``token_type_ids`` is accepted and ignored (MPNet has no segments).
    ``pooler_output`` is None when the checkpoint has no pooler or ``pool=False``.
    """

    config_class: ClassVar[type[MPNetConfig]] = MPNetConfig

    base_model_prefix: ClassVar[str] = "mpnet"
    optional_prefixes: ClassVar[tuple[str, ...]] = ("pooler.",)
    quantizable_embeddings: ClassVar[tuple[str, ...]] = ("embeddings.word_embeddings.weight",)
    ignored_keys: ClassVar[tuple[str, ...]] = ("embeddings.position_ids",)

    def __init__(self, config: MPNetConfig, *, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = MPNetEmbeddings(config)
        self.encoder = MPNetEncoder(config)
        self.pooler: MPNetPooler | None = MPNetPooler(config) if add_pooling_layer else None

    @property
    def max_input_tokens(self) -> int:
        """The longest sequence the position table holds: positions start after the padding
        id, so two rows of the table are never a real token's."""
        return self.config.max_position_embeddings - PADDING_IDX - 1

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        pool: bool = True,
    ) -> MPNetOutput:
        check_input(input_ids, attention_mask, self.max_input_tokens, "MPNetModel")
        hidden = self.encoder(self.embeddings(input_ids), attention_mask)
        pooled = self.pooler(hidden) if pool and self.pooler is not None else None
        return MPNetOutput(hidden, pooled)

    def packed(self, batch: PackedTokens, *, padded: bool = False) -> Tensor:
        """The last hidden states (T, hidden) of a packed batch's tokens, in ``batch.keep``'s
        order; with ``padded``, laid out (rows, length, hidden) as the batch was, padding
        slots holding token 0's state (:meth:`BertModel.packed
        <ipfs_accelerate.models.bert.BertModel.packed>`'s contract). Equal to
        ``last_hidden_state`` at the real tokens of the padded forward of a batch whose
        padding slots hold the padding id; the dense layers see no padding."""
        if batch.length > self.max_input_tokens:
            raise InvalidArgumentError(
                f"MPNetModel: sequence length {batch.length} exceeds the {self.max_input_tokens} "
                "positions the model holds; truncate the input (the tokenizer does)"
            )
        device = self.embeddings.LayerNorm.weight.device
        layout = _Layout(
            from_numpy(batch.keep, device), from_numpy(batch.place, device), batch.rows,
            batch.length,
        )  # fmt: skip
        mask = from_numpy(batch.attention_mask, device)
        x = self.embeddings.packed(
            from_numpy(batch.input_ids, device), from_numpy(packed_positions(batch), device)
        )
        hidden = self.encoder(x, mask, layout)
        return layout.padded(hidden) if padded else hidden


def packed_positions(batch: PackedTokens) -> np.ndarray[Any, Any]:
    """Each packed token's position, counted as the padded forward counts it: the tokens
    that are not the padding id, up to and including this one, after the padding id (a token
    that is the padding id gets the padding id). Padding slots are taken to hold the padding
    id, so they count for nothing."""
    real = (batch.input_ids != PADDING_IDX).astype(np.int64)
    rows = batch.keep // batch.length
    running = np.cumsum(real)
    # the running count restarts at each row: subtract what the rows before it counted
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    before = np.repeat(running[starts] - real[starts], np.diff(np.r_[starts, rows.size]))
    positions: np.ndarray[Any, Any] = (running - before) * real + PADDING_IDX
    return positions


def check_input(input_ids: Tensor, attention_mask: Tensor | None, limit: int, context: str) -> None:
    if input_ids.ndim != 2:
        raise InvalidArgumentError(
            f"{context}: input_ids must be (batch, length), got shape {input_ids.shape}"
        )
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise InvalidArgumentError(
            f"{context}: attention_mask has shape {attention_mask.shape}, input_ids "
            f"{input_ids.shape}; they must be equal"
        )
    if input_ids.shape[1] > limit:
        raise InvalidArgumentError(
            f"{context}: sequence length {input_ids.shape[1]} exceeds the {limit} positions the "
            "model holds; truncate the input (the tokenizer does)"
        )


class MPNetClassificationHead(Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.out_proj = Linear(config.hidden_size, config.num_labels)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, hidden: Tensor) -> Tensor:
        first = self.dropout(hidden[:, 0])
        return self.out_proj(self.dropout(ops.tanh(self.dense(first))))


class MPNetForSequenceClassification(Module):
    """MPNet with its classification head on the first token (a cross-encoder):
    ``model(input_ids, attention_mask) -> logits`` (B, num_labels)."""

    config_class: ClassVar[type[MPNetConfig]] = MPNetConfig

    base_model_prefix: ClassVar[str] = "mpnet"
    is_head_model: ClassVar[bool] = True
    quantizable_embeddings: ClassVar[tuple[str, ...]] = ("mpnet.embeddings.word_embeddings.weight",)
    # the head reads the first token's hidden state, not the pooler: a saved pooler is unused
    ignored_keys: ClassVar[tuple[str, ...]] = (
        "mpnet.embeddings.position_ids",
        "mpnet.pooler.dense.weight",
        "mpnet.pooler.dense.bias",
    )

    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.config = config
        self.mpnet = MPNetModel(config, add_pooling_layer=False)
        self.classifier = MPNetClassificationHead(config)

    @property
    def max_input_tokens(self) -> int:
        return self.mpnet.max_input_tokens

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        hidden = self.mpnet(input_ids, attention_mask, pool=False).last_hidden_state
        return self.classifier(hidden)


def model_class_for(config: Mapping[str, Any], weights: Mapping[str, Any] | None) -> type[Module]:
    """The cross-encoder when the checkpoint has a classification head (its keys say so;
    without keys, ``architectures`` does), else the base encoder (``loading.MODEL_FAMILIES``)."""
    if weights is not None:
        has_head = any(k.endswith("classifier.out_proj.weight") for k in weights)
    else:
        has_head = "MPNetForSequenceClassification" in (config.get("architectures") or [])
    return MPNetForSequenceClassification if has_head else MPNetModel
