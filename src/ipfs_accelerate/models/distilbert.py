"""DistilBERT (``model_type: distilbert``) as ``DistilBertModel``, and its classifier head
``DistilBertForSequenceClassification``.

Parameter names equal the checkpoint keys (``embeddings.word_embeddings``,
``transformer.layer.N.attention.q_lin``, ``sa_layer_norm``, ``ffn.lin1``,
``output_layer_norm``, ...). DistilBERT has no token types (``token_type_ids`` is accepted and
ignored) and no pooler. With ``sinusoidal_pos_embds`` the position table is the fixed sinusoid
transformers writes into the checkpoint; it is read from there like any other table. Layer
norms use transformers' fixed epsilon 1e-12.

Not supported (UnsupportedArchitectureError at load time, naming the option): an
``activation`` outside :data:`~ipfs_accelerate.models._module.SUPPORTED_ACTIVATIONS`, a
``dim`` that ``n_heads`` does not divide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from ipfs_accelerate import ops
from ipfs_accelerate.errors import InvalidArgumentError, UnsupportedArchitectureError
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
from ipfs_accelerate.models.bert import BertOutput, PackedTokens, _Layout
from ipfs_accelerate.models.roberta import first_token_rows
from ipfs_accelerate.tensor import Tensor, from_numpy

__all__ = [
    "DistilBertConfig",
    "DistilBertForSequenceClassification",
    "DistilBertModel",
    "model_class_for",
]

_LAYER_NORM_EPS = 1e-12
#: transformers' ``attribute_map``: the BERT names a DistilBERT config also answers to
_ALIASES = {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"}


@dataclass
class DistilBertConfig:
    """The fields of a DistilBERT ``config.json`` the forward pass uses (transformers'
    defaults), with the BERT names (``hidden_size``...) as read-only aliases."""

    vocab_size: int = 30522
    max_position_embeddings: int = 512
    sinusoidal_pos_embds: bool = False
    n_layers: int = 6
    n_heads: int = 12
    dim: int = 768
    hidden_dim: int = 3072
    activation: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    seq_classif_dropout: float = 0.2
    pad_token_id: int = 0
    num_labels: int = 2

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistilBertConfig:
        context = "DistilBertModel"
        require_model_type(data, ("distilbert",), context)
        values = dict(data)
        for alias, name in _ALIASES.items():
            if alias in values and name not in values:
                values[name] = values[alias]
        config = from_dict(cls, values, context="DistilBertConfig")
        config.num_labels = label_count(data, context)
        if config.dim % config.n_heads:
            raise UnsupportedArchitectureError(
                f"{context}: dim {config.dim} is not divisible by n_heads {config.n_heads}"
            )
        check_activation(config.activation, context)
        return config

    @property
    def hidden_size(self) -> int:
        return self.dim

    @property
    def num_attention_heads(self) -> int:
        return self.n_heads

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    @property
    def intermediate_size(self) -> int:
        return self.hidden_dim

    @property
    def max_input_tokens(self) -> int:
        return self.max_position_embeddings


class DistilBertEmbeddings(Module):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.word_embeddings = Embedding(config.vocab_size, config.dim)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.dim)
        self.LayerNorm = LayerNorm(config.dim, _LAYER_NORM_EPS)
        self.dropout = Dropout(config.dropout)

    def __call__(self, input_ids: Tensor) -> Tensor:
        positions = cast("Tensor", self.position_embeddings.weight)[: input_ids.shape[1]]
        return self.dropout(self.LayerNorm(self.word_embeddings(input_ids) + positions))

    def packed(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class MultiHeadSelfAttention(Module):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.num_heads = config.n_heads
        self.q_lin = Linear(config.dim, config.dim)
        self.k_lin = Linear(config.dim, config.dim)
        self.v_lin = Linear(config.dim, config.dim)
        self.out_lin = Linear(config.dim, config.dim)
        self.dropout = Dropout(config.attention_dropout)

    def __call__(self, x: Tensor, mask: Tensor | None, layout: _Layout | None = None) -> Tensor:
        projections = (self.q_lin, self.k_lin, self.v_lin)
        if layout is None:
            q, k, v = (split_heads(proj(x), self.num_heads) for proj in projections)
            return self.out_lin(merge_heads(attend(q, k, v, mask, self.dropout)))
        # packed: the projections see the real tokens only, attention the padded layout
        q, k, v = (split_heads(layout.padded(proj(x)), self.num_heads) for proj in projections)
        attended = merge_heads(attend(q, k, v, mask, self.dropout))
        return self.out_lin(layout.packed(attended))


class FFN(Module):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.act = config.activation
        self.lin1 = Linear(config.dim, config.hidden_dim)
        self.lin2 = Linear(config.hidden_dim, config.dim)
        self.dropout = Dropout(config.dropout)

    def __call__(self, x: Tensor) -> Tensor:
        return self.dropout(self.lin2(activation(self.act, self.lin1(x))))


class TransformerBlock(Module):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(config)
        self.sa_layer_norm = LayerNorm(config.dim, _LAYER_NORM_EPS)
        self.ffn = FFN(config)
        self.output_layer_norm = LayerNorm(config.dim, _LAYER_NORM_EPS)

    def __call__(self, x: Tensor, mask: Tensor | None, layout: _Layout | None = None) -> Tensor:
        attended = self.sa_layer_norm(self.attention(x, mask, layout) + x)
        return self.output_layer_norm(self.ffn(attended) + attended)


class Transformer(Module):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.layer = ModuleList([TransformerBlock(config) for _ in range(config.n_layers)])

    def __call__(self, x: Tensor, mask: Tensor | None, layout: _Layout | None = None) -> Tensor:
        for layer in self.layer:
            x = layer(x, mask, layout)
        return x


class DistilBertModel(Module):
    """The DistilBERT encoder: ``model(input_ids, attention_mask) -> BertOutput`` with
    ``last_hidden_state`` (B, L, dim) and ``pooler_output`` None (DistilBERT has no pooler).
    ``token_type_ids`` is accepted for the BERT calling convention and ignored."""

    config_class: ClassVar[type[DistilBertConfig]] = DistilBertConfig

    base_model_prefix: ClassVar[str] = "distilbert"
    quantizable_embeddings: ClassVar[tuple[str, ...]] = ("embeddings.word_embeddings.weight",)
    ignored_keys: ClassVar[tuple[str, ...]] = ("embeddings.position_ids",)

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = DistilBertEmbeddings(config)
        self.transformer = Transformer(config)

    @property
    def max_input_tokens(self) -> int:
        """The longest input, in tokens (``max_position_embeddings``)."""
        return self.config.max_position_embeddings

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
                f"DistilBertModel: input_ids must be (batch, length), got shape {input_ids.shape}"
            )
        self._check_length(input_ids.shape[1])
        mask = None
        if attention_mask is not None:
            mask = (attention_mask != 0).reshape(
                attention_mask.shape[0], 1, 1, attention_mask.shape[1]
            )
        return BertOutput(self.transformer(self.embeddings(input_ids), mask), None)

    def packed(self, batch: PackedTokens, *, padded: bool = False) -> Tensor:
        """The last hidden states of a packed batch's tokens, as
        :meth:`BertModel.packed <ipfs_accelerate.models.bert.BertModel.packed>` (the batch's
        token types are ignored)."""
        self._check_length(batch.length)
        device = self.embeddings.word_embeddings.weight.device
        layout = _Layout(
            from_numpy(batch.keep, device),
            from_numpy(batch.place, device),
            batch.rows,
            batch.length,
        )
        mask = from_numpy(batch.attention_mask.reshape(batch.rows, 1, 1, batch.length) != 0, device)
        x = self.embeddings.packed(
            from_numpy(batch.input_ids, device), from_numpy(batch.positions, device)
        )
        hidden = self.transformer(x, mask, layout)
        return layout.padded(hidden) if padded else hidden

    def _check_length(self, length: int) -> None:
        if length > self.config.max_position_embeddings:
            raise InvalidArgumentError(
                f"DistilBertModel: sequence length {length} exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}; truncate the input (the tokenizer does)"
            )


class DistilBertForSequenceClassification(Module):
    """A DistilBERT classifier or cross-encoder:
    ``model(input_ids, attention_mask) -> logits (B, num_labels)``, computed as
    ``classifier(relu(pre_classifier(hidden[:, 0])))``."""

    config_class: ClassVar[type[DistilBertConfig]] = DistilBertConfig

    base_model_prefix: ClassVar[str] = "distilbert"
    is_head_model: ClassVar[bool] = True
    quantizable_embeddings: ClassVar[tuple[str, ...]] = (
        "distilbert.embeddings.word_embeddings.weight",
    )
    ignored_keys: ClassVar[tuple[str, ...]] = ("distilbert.embeddings.position_ids",)

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.config = config
        self.distilbert = DistilBertModel(config)
        self.pre_classifier = Linear(config.dim, config.dim)
        self.classifier = Linear(config.dim, config.num_labels)
        self.dropout = Dropout(config.seq_classif_dropout)

    @property
    def max_input_tokens(self) -> int:
        return self.config.max_position_embeddings

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        hidden = self.distilbert(input_ids, attention_mask).last_hidden_state
        return self._classify(hidden[:, 0])

    def packed(self, batch: PackedTokens) -> Tensor:
        """The logits (rows, num_labels) of a packed batch (the encoder's dense layers skip
        the padding); equal to the padded call for right-padded rows."""
        hidden = self.distilbert.packed(batch)
        first = from_numpy(first_token_rows(batch), hidden.device)
        return self._classify(ops.gather(hidden, first, axis=0))

    def _classify(self, first: Tensor) -> Tensor:
        return self.classifier(self.dropout(ops.relu(self.pre_classifier(first))))


def model_class_for(config: Mapping[str, Any], weights: Mapping[str, Any] | None) -> type[Module]:
    """``DistilBertForSequenceClassification`` for a sequence-classification checkpoint (by
    its ``architectures``, else its ``pre_classifier`` weights), else ``DistilBertModel``."""
    architectures = config.get("architectures") or []
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return DistilBertForSequenceClassification
    if weights is not None and "pre_classifier.weight" in weights:
        return DistilBertForSequenceClassification
    return DistilBertModel
