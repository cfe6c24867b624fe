"""RoBERTa and XLM-RoBERTa encoders (``model_type`` ``roberta`` and ``xlm-roberta``) as
``RobertaModel``, and their cross-encoder/classifier head ``RobertaForSequenceClassification``.

The layers are BERT's (same checkpoint keys under ``encoder.``); what differs is where the
positions start. Position ids count the non-padding tokens of a row from
``pad_token_id + 1`` (a padding token sits at position ``pad_token_id``), as fairseq and
transformers number them: a right-padded row of ``n`` tokens uses positions
``pad+1 .. pad+n``. So only ``max_position_embeddings - pad_token_id - 1`` tokens fit
(:attr:`RobertaModel.max_input_tokens`, 512 for roberta-base and xlm-roberta-base).

Not supported (UnsupportedArchitectureError at load time, naming the option): relative
``position_embedding_type``, decoder/cross-attention configurations, an activation outside
:data:`~ipfs_accelerate.models._module.SUPPORTED_ACTIVATIONS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

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
from ipfs_accelerate.models._module import Dropout, Embedding, LayerNorm, Linear, Module
from ipfs_accelerate.models.bert import (
    BertConfig,
    BertModel,
    PackedTokens,
    classifier_dropout,
)
from ipfs_accelerate.tensor import Tensor, from_numpy
from ipfs_accelerate.tensor._dtype import float32

__all__ = [
    "RobertaConfig",
    "RobertaForSequenceClassification",
    "RobertaModel",
    "first_token_rows",
    "model_class_for",
    "offset_positions",
]

MODEL_TYPES = ("roberta", "xlm-roberta")


@dataclass
class RobertaConfig(BertConfig):
    """A RoBERTa / XLM-RoBERTa ``config.json`` (transformers' defaults); ``num_labels`` is
    read by the classifier head only."""

    vocab_size: int = 50265
    pad_token_id: int = 1
    model_type: str = "roberta"
    num_labels: int = 2

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RobertaConfig:
        context = "RobertaModel"
        model_type = require_model_type(data, MODEL_TYPES, context)
        config = from_dict(cls, data, context="RobertaConfig")
        config.model_type = model_type
        config.num_labels = label_count(data, context)
        if config.position_embedding_type != "absolute":
            raise UnsupportedArchitectureError(
                f"{context}: position_embedding_type {config.position_embedding_type!r} is not "
                "implemented (absolute is)"
            )
        if config.is_decoder or config.add_cross_attention:
            option = "is_decoder" if config.is_decoder else "add_cross_attention"
            raise UnsupportedArchitectureError(
                f"{context}: {option}=true (a decoder / cross-attention configuration) is not "
                "implemented; RoBERTa loads as an encoder only"
            )
        if config.hidden_size % config.num_attention_heads:
            raise UnsupportedArchitectureError(
                f"{context}: hidden_size {config.hidden_size} is not divisible by "
                f"num_attention_heads {config.num_attention_heads}"
            )
        if not 0 <= config.pad_token_id < config.max_position_embeddings - 1:
            raise CheckpointError(
                f"{context}: pad_token_id {config.pad_token_id} leaves no position of the "
                f"{config.max_position_embeddings} position embeddings for a token (positions "
                "start after pad_token_id)"
            )
        check_activation(config.hidden_act, context)
        return config

    @property
    def max_input_tokens(self) -> int:
        """Position ids run from ``pad_token_id + 1``: the positions left for tokens."""
        return self.max_position_embeddings - self.pad_token_id - 1


def offset_positions(input_ids: Tensor, padding_idx: int) -> Tensor:
    """RoBERTa's position ids (B, L) on the ids' device: ``padding_idx`` plus the running count
    of non-padding tokens in the row, ``padding_idx`` itself at padding tokens."""
    length = input_ids.shape[1]
    real = ops.astype(input_ids != padding_idx, float32)
    # a running sum is a product with an upper-triangular matrix of ones (the op set has no
    # cumsum); counts up to the table's few hundred rows are exact even in a reduced-precision
    # (TF32-like) matmul, and rounding removes any accumulation error before the cast
    upper = from_numpy(np.triu(np.ones((length, length), dtype=np.float32)), input_ids.device)
    counts = ops.round(ops.matmul(real, upper) * real)
    return ops.astype(counts, input_ids.dtype) + padding_idx


def packed_offset_positions(batch: PackedTokens, padding_idx: int) -> np.ndarray[Any, Any]:
    """:func:`offset_positions` of a packed batch's tokens (host arrays, ``batch.keep`` order).

    Counts the row's kept tokens that are not ``padding_idx``; equal to the padded forward's
    positions when the masked-out slots hold ``padding_idx`` (what tokenizers write)."""
    real = (batch.input_ids != padding_idx).astype(np.int64)
    rows = batch.keep // batch.length
    total = np.cumsum(real)
    first = np.searchsorted(rows, rows, side="left")  # each token's row's first packed token
    counted = total - (total[first] - real[first])
    return np.where(real != 0, counted + padding_idx, padding_idx).astype(np.int64)


class RobertaEmbeddings(Module):
    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = offset_positions(input_ids, self.padding_idx)
        return self.packed(input_ids, positions, token_type_ids)

    def packed(self, input_ids: Tensor, positions: Tensor, token_type_ids: Tensor) -> Tensor:
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x + self.token_type_embeddings(token_type_ids)))


class RobertaModel(BertModel):
    """The RoBERTa / XLM-RoBERTa encoder: ``model(input_ids, attention_mask, token_type_ids)
    -> BertOutput`` (``last_hidden_state``, ``pooler_output``), as
    :class:`~ipfs_accelerate.models.bert.BertModel`, with RoBERTa's positions.

    Positions are counted from ``input_ids`` (tokens equal to ``pad_token_id`` are padding),
    as transformers does, whatever ``attention_mask`` says; the mask only hides keys.
    """

    config_class: ClassVar[type[RobertaConfig]] = RobertaConfig

    base_model_prefix: ClassVar[str] = "roberta"
    optional_prefixes: ClassVar[tuple[str, ...]] = ("pooler.",)
    quantizable_embeddings: ClassVar[tuple[str, ...]] = ("embeddings.word_embeddings.weight",)
    ignored_keys: ClassVar[tuple[str, ...]] = (
        "embeddings.position_ids",
        "embeddings.token_type_ids",
    )

    def __init__(self, config: RobertaConfig) -> None:
        super().__init__(config)
        self.config: RobertaConfig = config
        self.embeddings = RobertaEmbeddings(config)  # type: ignore[assignment]

    @property
    def max_input_tokens(self) -> int:
        """The longest input, in tokens (``max_position_embeddings - pad_token_id - 1``)."""
        return self.config.max_input_tokens

    def _packed_positions(self, batch: PackedTokens) -> np.ndarray[Any, Any]:
        """RoBERTa's positions (see :func:`packed_offset_positions`)."""
        return packed_offset_positions(batch, self.config.pad_token_id)

    def _check_length(self, length: int) -> None:
        if length > self.max_input_tokens:
            raise InvalidArgumentError(
                f"{type(self).__name__}: sequence length {length} exceeds the "
                f"{self.max_input_tokens} usable positions (max_position_embeddings "
                f"{self.config.max_position_embeddings} less pad_token_id "
                f"{self.config.pad_token_id} + 1); truncate the input (the tokenizer does)"
            )


def first_token_rows(batch: PackedTokens) -> np.ndarray[Any, Any]:
    """The packed row of each sequence's first real token (``keep`` is sorted and every row
    has a token, so it is the first kept index at or after the row's start)."""
    starts = np.arange(batch.rows, dtype=np.int64) * batch.length
    return np.searchsorted(batch.keep, starts).astype(np.int64)


class RobertaClassificationHead(Module):
    """``out_proj(tanh(dense(first)))`` of the first token's (``<s>``) hidden state."""

    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.out_proj = Linear(config.hidden_size, config.num_labels)
        self.dropout = Dropout(classifier_dropout(config))

    def __call__(self, first: Tensor) -> Tensor:
        return self.out_proj(self.dropout(ops.tanh(self.dense(self.dropout(first)))))


class RobertaForSequenceClassification(Module):
    """A RoBERTa / XLM-RoBERTa classifier or cross-encoder:
    ``model(input_ids, attention_mask, token_type_ids) -> logits (B, num_labels)``
    (raw scores; a cross-encoder's relevance is ``sigmoid`` of its single logit)."""

    config_class: ClassVar[type[RobertaConfig]] = RobertaConfig

    base_model_prefix: ClassVar[str] = "roberta"
    is_head_model: ClassVar[bool] = True
    # transformers builds the classifier's encoder without a pooler
    optional_prefixes: ClassVar[tuple[str, ...]] = ("roberta.pooler.",)
    quantizable_embeddings: ClassVar[tuple[str, ...]] = (
        "roberta.embeddings.word_embeddings.weight",
    )
    ignored_keys: ClassVar[tuple[str, ...]] = (
        "roberta.embeddings.position_ids",
        "roberta.embeddings.token_type_ids",
    )

    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config)
        self.classifier = RobertaClassificationHead(config)

    @property
    def max_input_tokens(self) -> int:
        return self.config.max_input_tokens

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        hidden = self.roberta(input_ids, attention_mask, token_type_ids, pool=False)
        return self.classifier(hidden.last_hidden_state[:, 0])

    def packed(self, batch: PackedTokens) -> Tensor:
        """The logits (rows, num_labels) of a packed batch (the encoder's dense layers skip
        the padding); equal to the padded call for right-padded rows, whose first token is
        their first real one."""
        hidden = self.roberta.packed(batch)
        first = from_numpy(first_token_rows(batch), hidden.device)
        return self.classifier(ops.gather(hidden, first, axis=0))


def _is_classifier(config: Mapping[str, Any], weights: Mapping[str, Any] | None) -> bool:
    architectures = config.get("architectures") or []
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return True
    return weights is not None and "classifier.out_proj.weight" in weights


def model_class_for(config: Mapping[str, Any], weights: Mapping[str, Any] | None) -> type[Module]:
    """``RobertaForSequenceClassification`` for a sequence-classification checkpoint (by its
    ``architectures``, else its ``classifier.out_proj`` weights), else ``RobertaModel`` (other
    heads, such as the masked-LM head of roberta-base, are ignored by the loader)."""
    if _is_classifier(config, weights):
        return RobertaForSequenceClassification
    return RobertaModel
