"""BERT encoders (BERT, MiniLM and other ``model_type: bert`` checkpoints), as ``BertModel``.

Parameter names equal the keys of Hugging Face ``BertModel`` checkpoints. Supported: absolute
position embeddings, any ``hidden_act`` of
:data:`~ipfs_accelerate.models._module.SUPPORTED_ACTIVATIONS`, an optional pooler. Not supported
(UnsupportedArchitectureError at load time): relative position embeddings,
decoder/cross-attention configurations.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import (
    CheckpointError,
    InvalidArgumentError,
    UnsupportedArchitectureError,
)
from ipfs_accelerate.models._config import (
    check_activation,
    from_dict,
    label_count,
    require_model_type,
)
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
from ipfs_accelerate.tensor import Tensor, from_numpy, zeros_like

__all__ = [
    "BertConfig",
    "BertForSequenceClassification",
    "BertModel",
    "BertOutput",
    "PackedTokens",
]


@dataclass
class BertConfig:
    """The fields of a BERT ``config.json`` the forward pass uses (Hugging Face defaults)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    #: the sequence-classification head's dropout; None = ``hidden_dropout_prob``
    classifier_dropout: float | None = None
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    is_decoder: bool = False
    add_cross_attention: bool = False
    #: a classifier's label count (``label_count``: id2label's length, else num_labels, else 2)
    num_labels: int = 2

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BertConfig:
        require_model_type(data, ("bert",), "BertModel")
        config = from_dict(cls, data, context="BertConfig")
        if config.position_embedding_type != "absolute":
            raise UnsupportedArchitectureError(
                f"BertModel: position_embedding_type {config.position_embedding_type!r} is not "
                "implemented (absolute is)"
            )
        if config.is_decoder or config.add_cross_attention:
            raise UnsupportedArchitectureError(
                "BertModel: decoder / cross-attention BERT configurations are not implemented"
            )
        if config.hidden_size % config.num_attention_heads:
            raise UnsupportedArchitectureError(
                f"BertModel: hidden_size {config.hidden_size} is not divisible by "
                f"num_attention_heads {config.num_attention_heads}"
            )
        check_activation(config.hidden_act, "BertModel")
        config.num_labels = label_count(data, "BertConfig")
        return config


@dataclass
class BertOutput:
    last_hidden_state: Tensor
    pooler_output: Tensor | None


@dataclass(frozen=True)
class PackedTokens:
    """The real tokens of a padded (rows, length) batch, one per row of a (tokens, hidden)
    matrix, for :meth:`BertModel.packed`: its dense layers skip the padding (even a batch
    sorted by length has some; docs/models.md), attention runs padded.

    Made by :meth:`from_batch` (host arrays). ``keep`` (T,) holds the flat index
    ``row * length + position`` of each packed token; ``place`` (rows * length,) the packed
    row of each padded slot (0 for padding, which attention masks out).
    """

    input_ids: np.ndarray[Any, Any]
    token_type_ids: np.ndarray[Any, Any]
    positions: np.ndarray[Any, Any]
    keep: np.ndarray[Any, Any]
    place: np.ndarray[Any, Any]
    attention_mask: np.ndarray[Any, Any]

    @property
    def tokens(self) -> int:
        return int(self.keep.shape[0])

    @property
    def rows(self) -> int:
        return int(self.attention_mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.attention_mask.shape[1])

    @classmethod
    def from_batch(
        cls,
        input_ids: np.ndarray[Any, Any],
        attention_mask: np.ndarray[Any, Any],
        token_type_ids: np.ndarray[Any, Any] | None = None,
    ) -> PackedTokens:
        ids = np.asarray(input_ids)
        mask = np.asarray(attention_mask)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise InvalidArgumentError(
                "PackedTokens: input_ids and attention_mask must be (batch, length) of one shape, "
                f"got {ids.shape} and {mask.shape}"
            )
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
        if types.shape != ids.shape:
            raise InvalidArgumentError(
                f"PackedTokens: token_type_ids must have shape {ids.shape}, got {types.shape}"
            )
        present = mask != 0
        empty = np.flatnonzero(~present.any(axis=1))
        if empty.size:
            raise InvalidArgumentError(
                f"PackedTokens: row {int(empty[0])} has no token (its attention_mask is all zero)"
            )
        keep = np.flatnonzero(present.reshape(-1)).astype(np.int64)
        place = np.zeros(ids.size, dtype=np.int64)
        place[keep] = np.arange(keep.size, dtype=np.int64)
        return cls(
            input_ids=ids.reshape(-1)[keep].astype(np.int64),
            token_type_ids=types.reshape(-1)[keep].astype(np.int64),
            positions=keep % ids.shape[1],
            keep=keep,
            place=place,
            attention_mask=present.astype(np.int64),
        )


@dataclass(frozen=True)
class _Layout:
    """A packed batch's gather indices on the model's device."""

    keep: Tensor
    place: Tensor
    rows: int
    length: int

    def padded(self, x: Tensor) -> Tensor:
        """(T, H) packed rows -> (rows, length, H); padding slots hold token 0's row."""
        return ops.gather(x, self.place, axis=0).reshape(self.rows, self.length, x.shape[-1])

    def packed(self, x: Tensor) -> Tensor:
        """(rows, length, H) -> (T, H)."""
        return ops.gather(x.reshape(self.rows * self.length, x.shape[-1]), self.keep, axis=0)


class BertEmbeddings(Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        length = input_ids.shape[1]
        positions = cast("Tensor", self.position_embeddings.weight)[:length]
        x = self.word_embeddings(input_ids) + positions + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))

    def packed(self, input_ids: Tensor, positions: Tensor, token_type_ids: Tensor) -> Tensor:
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x + self.token_type_embeddings(token_type_ids)))


class BertSelfAttention(Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(config.hidden_size, config.hidden_size)
        self.value = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def __call__(self, x: Tensor, mask: Tensor | None, layout: _Layout | None = None) -> Tensor:
        if layout is None:
            q, k, v = (
                split_heads(proj(x), self.num_heads) for proj in (self.query, self.key, self.value)
            )
            return merge_heads(self._attend(q, k, v, mask))
        # packed: the projections see the real tokens only, attention the padded layout
        q, k, v = (
            split_heads(layout.padded(proj(x)), self.num_heads)
            for proj in (self.query, self.key, self.value)
        )
        return layout.packed(merge_heads(self._attend(q, k, v, mask)))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return attend(q, k, v, mask, self.dropout)


class BertSelfOutput(Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def __call__(self, x: Tensor, mask: Tensor | None, layout: _Layout | None = None) -> Tensor:
        return self.output(self.self(x, mask, layout), x)


class BertIntermediate(Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.act = config.hidden_act
        self.dense = Linear(config.hidden_size, config.intermediate_size)

    def __call__(self, x: Tensor) -> Tensor:
        return activation(self.act, self.dense(x))


class BertLayerOutput(Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertLayer(Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertLayerOutput(config)

    def __call__(self, x: Tensor, mask: Tensor | None, layout: _Layout | None = None) -> Tensor:
        attended = self.attention(x, mask, layout)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def __call__(self, x: Tensor, mask: Tensor | None, layout: _Layout | None = None) -> Tensor:
        for layer in self.layer:
            x = layer(x, mask, layout)
        return x


class BertPooler(Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def __call__(self, hidden: Tensor) -> Tensor:
        return ops.tanh(self.dense(hidden[:, 0]))


class BertModel(Module):
    """The BERT encoder: ``model(input_ids, attention_mask, token_type_ids) -> BertOutput``.

    ``input_ids``, ``attention_mask`` (1 = token, 0 = padding) and ``token_type_ids`` are int
    tensors (B, L) on the model's device; ``pooler_output`` is None when the checkpoint has
    no pooler or ``pool=False`` (sentence embeddings pool the hidden states themselves).
    """

    config_class: ClassVar[type[BertConfig]] = BertConfig

    base_model_prefix: ClassVar[str] = "bert"
    optional_prefixes: ClassVar[tuple[str, ...]] = ("pooler.",)
    quantizable_embeddings: ClassVar[tuple[str, ...]] = ("embeddings.word_embeddings.weight",)
    ignored_keys: ClassVar[tuple[str, ...]] = (
        "embeddings.position_ids",
        "embeddings.token_type_ids",
    )

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler: BertPooler | None = BertPooler(config)

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        pool: bool = True,
    ) -> BertOutput:
        if input_ids.ndim != 2:
            raise InvalidArgumentError(
                f"{type(self).__name__}: input_ids must be (batch, length), got shape "
                f"{input_ids.shape}"
            )
        self._check_length(input_ids.shape[1])
        if token_type_ids is None:
            token_type_ids = zeros_like(input_ids)
        mask = None
        if attention_mask is not None:
            # (B, 1, 1, S): every query of a sequence may attend to its non-padding keys
            mask = (attention_mask != 0).reshape(
                attention_mask.shape[0], 1, 1, attention_mask.shape[1]
            )
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids), mask)
        pooled = self.pooler(hidden) if pool and self.pooler is not None else None
        return BertOutput(hidden, pooled)

    def packed(self, batch: PackedTokens, *, padded: bool = False) -> Tensor:
        """The last hidden states (T, hidden) of a packed batch's tokens, in ``batch.keep``'s
        order; with ``padded``, laid out (rows, length, hidden) as the batch was, padding
        slots holding token 0's state. Equal to
        ``last_hidden_state`` at the real tokens of the padded forward; the dense layers see
        no padding."""
        device = self.embeddings.word_embeddings.weight.device
        arrays = self.packed_arrays(batch)
        tensors = [from_numpy(array, device) for array in arrays]
        return self.packed_from(tensors, batch.rows, batch.length, padded=padded)

    def packed_arrays(self, batch: PackedTokens) -> list[np.ndarray[Any, Any]]:
        """The host arrays :meth:`packed_from` takes (as tensors) for ``batch``: the packed
        tokens' flat indices, each padded slot's packed row, the attention mask (rows, 1, 1,
        length) bool, the input ids, position ids and token type ids of the packed tokens.
        (A captured forward takes them as its inputs: ``TextEmbedder``.)"""
        self._check_length(batch.length)
        return [
            batch.keep,
            batch.place,
            batch.attention_mask.reshape(batch.rows, 1, 1, batch.length) != 0,
            batch.input_ids,
            self._packed_positions(batch),
            batch.token_type_ids,
        ]

    def packed_from(
        self, tensors: Sequence[Tensor], rows: int, length: int, *, padded: bool = False
    ) -> Tensor:
        """:meth:`packed` of the tensors of :meth:`packed_arrays` (a batch of ``rows`` rows of
        ``length`` positions)."""
        keep, place, mask, input_ids, positions, token_type_ids = tensors
        layout = _Layout(keep, place, rows, length)
        x = self.embeddings.packed(input_ids, positions, token_type_ids)
        hidden = self.encoder(x, mask, layout)
        return layout.padded(hidden) if padded else hidden

    def _packed_positions(self, batch: PackedTokens) -> np.ndarray[Any, Any]:
        """The position ids of a packed batch's tokens (a family with other positions, such
        as RoBERTa's, overrides this)."""
        return batch.positions

    @property
    def max_input_tokens(self) -> int:
        """The most tokens one sequence may have (special tokens included)."""
        return self.config.max_position_embeddings

    def _check_length(self, length: int) -> None:
        if length > self.config.max_position_embeddings:
            raise InvalidArgumentError(
                f"BertModel: sequence length {length} exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}; truncate the input (the tokenizer does)"
            )


class BertForSequenceClassification(Module):
    """BERT with a linear classifier on the pooled [CLS] state (cross-encoders, text
    classifiers): ``model(input_ids, attention_mask, token_type_ids) -> logits (B, num_labels)``.
    """

    config_class: ClassVar[type[BertConfig]] = BertConfig

    base_model_prefix: ClassVar[str] = "bert"
    is_head_model: ClassVar[bool] = True
    ignored_keys: ClassVar[tuple[str, ...]] = (
        "bert.embeddings.position_ids",
        "bert.embeddings.token_type_ids",
    )

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.dropout = Dropout(classifier_dropout(config))

    @property
    def max_input_tokens(self) -> int:
        return self.config.max_position_embeddings

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        pooled = self.bert(input_ids, attention_mask, token_type_ids).pooler_output
        if pooled is None:  # pragma: no cover - the pooler is required by this class's keys
            raise UnsupportedArchitectureError(
                "BertForSequenceClassification: the checkpoint has no pooler"
            )
        return self.classifier(self.dropout(pooled))

    def packed(self, batch: PackedTokens) -> Tensor:
        """The logits (rows, num_labels) of a packed batch (see :meth:`BertModel.packed`):
        equal to the padded call's, the dense layers seeing no padding."""
        hidden = self.bert.packed(batch, padded=True)  # row r's [CLS] stays at position 0
        pooler = self.bert.pooler
        if pooler is None:  # pragma: no cover - the pooler is required by this class's keys
            raise UnsupportedArchitectureError(
                "BertForSequenceClassification: the checkpoint has no pooler"
            )
        return self.classifier(self.dropout(pooler(hidden)))


def classifier_dropout(config: BertConfig) -> float:
    """The classification head's dropout probability, as transformers reads it."""
    chosen = config.classifier_dropout
    if chosen is None:
        return config.hidden_dropout_prob
    if isinstance(chosen, bool) or not isinstance(chosen, numbers.Real):
        raise CheckpointError(f"config value classifier_dropout={chosen!r} is not a number")
    return float(chosen)


#: architectures whose checkpoints carry a sequence-classification head
_CLASSIFIER_ARCHITECTURES = ("BertForSequenceClassification",)


def model_class_for(config: Mapping[str, Any], weights: Mapping[str, Any] | None) -> type[Module]:
    """The class a ``bert`` checkpoint loads into (see ``loading.MODEL_FAMILIES``): the
    sequence classifier when the checkpoint has its head (``classifier.weight``, or, without
    the keys, a classifier in ``architectures``), else the encoder."""
    if weights is not None:
        has_head = "classifier.weight" in weights and any(k.startswith("bert.") for k in weights)
    else:
        has_head = any(a in _CLASSIFIER_ARCHITECTURES for a in config.get("architectures") or [])
    return BertForSequenceClassification if has_head else BertModel
