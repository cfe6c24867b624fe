"""Reranker: relevance scores of (query, document) pairs from a cross-encoder checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np

from ipfs_accelerate.errors import InvalidArgumentError, UnsupportedArchitectureError
from ipfs_accelerate.hal._backend import host_cores
from ipfs_accelerate.models._parallel import run_longest_first
from ipfs_accelerate.models._shapes import ShapePolicy
from ipfs_accelerate.models.loading import (
    Checkpoint,
    ClassChooser,
    LoadReport,
    ProgressCallback,
    model_class_for,
)
from ipfs_accelerate.models.pipelines._base import Array, _check_batch_size, _Pipeline
from ipfs_accelerate.models.pipelines._text import _max_tokens, _pad_batch
from ipfs_accelerate.models.preprocessing.text import TextTokenizer
from ipfs_accelerate.tensor import from_numpy

if TYPE_CHECKING:
    from ipfs_accelerate.models._module import Module
    from ipfs_accelerate.sharing import TensorSharingManager

__all__ = ["Ranked", "Reranker"]

#: a limit no pair reaches: tokenize without truncation
_UNBOUNDED = 1 << 30

#: sentence-transformers' activation_fn (torch class paths as saved) -> what applies it
_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
}


@dataclass(frozen=True, slots=True)
class Ranked:
    """One reranked document: ``index`` into the documents given, its ``score``."""

    index: int
    score: float


class Reranker(_Pipeline):
    """Cross-encoder relevance scores: each (query, document) pair is read as one sequence
    by a ``*ForSequenceClassification`` checkpoint of any registered family (the ms-marco
    MiniLM rerankers are BERT), as sentence-transformers' ``CrossEncoder`` does.

    Scores go through the checkpoint's activation (``activation_fn`` in
    ``config_sentence_transformers.json``, or sentence-transformers' default: the sigmoid
    for one label, none for several). :meth:`rerank` needs one label; a multi-label
    checkpoint's scores come from :meth:`predict` (N, num_labels). Pairs longer than
    ``max_length`` tokens lose tokens from their longer text first, with a
    TruncationWarning. Pairs run ``batch_size`` at a time, shortest padding first, so memory
    stays bounded however many documents there are.
    """

    model: Any

    def __init__(
        self,
        model: Module,
        tokenizer: TextTokenizer,
        checkpoint: Checkpoint,
        report: LoadReport,
        activation: str = "sigmoid",
    ) -> None:
        super().__init__(model, checkpoint, report)
        self.tokenizer = tokenizer
        self.activation = activation
        self._shapes: ShapePolicy | None = None

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike[str],
        device: str = "auto",
        *,
        max_length: int | None = None,
        sharing: TensorSharingManager | bool | None = True,
        progress: ProgressCallback | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        dtype: str = "float32",
    ) -> Self:
        """The reranker of a cross-encoder checkpoint (see :class:`_Pipeline` for the loading
        arguments); ``max_length`` bounds each pair's tokens (default: the checkpoint's)."""
        model, checkpoint, report = cls._load(
            path_or_id, device, sharing, progress, revision, cache_dir, local_files_only, dtype
        )
        tokenizer = TextTokenizer.from_checkpoint(
            checkpoint.path, max_length=max_length, positions=_max_tokens(model)
        )
        activation = _activation(checkpoint, int(model.config.num_labels))
        return cls(model, tokenizer, checkpoint, report, activation)

    @classmethod
    def _model_class(cls) -> ClassChooser:
        return _classifier_class

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def max_input_tokens(self) -> int:
        return _max_tokens(self.model)

    def shape_policy(self, mode: str | None = None) -> ShapePolicy:
        """How batches are padded on backends that compile a graph per input shape (see
        :class:`~ipfs_accelerate.models._shapes.ShapePolicy`)."""
        if mode is not None or self._shapes is None:
            self._shapes = ShapePolicy(self.device, self.max_input_tokens, mode or "auto")
        return self._shapes

    def predict(
        self,
        pairs: Sequence[tuple[str, str] | str],
        batch_size: int = 32,
        *,
        raw: bool = False,
        truncation: Literal["warn", "error", "silent"] = "warn",
    ) -> Array:
        """Scores of (first, second) text pairs (a plain str is one text alone, as a text
        classifier reads it), float32: (N,) for a one-label checkpoint, (N, num_labels)
        otherwise; ``raw`` skips the activation (the logits). Over-long pairs are truncated
        with a TruncationWarning ("warn"), quietly ("silent"), or refused with
        PreprocessingError ("error"). Identical pairs are scored once and share the score:
        a row's numbers may differ in the last bits with its place in a batch (BLAS rounds
        the edge of a block differently), and the same document twice must tie."""
        _check_batch_size(batch_size)
        given = _pairs(pairs)
        distinct: dict[tuple[str, str] | str, int] = {}
        where = np.array(
            [distinct.setdefault(item, len(distinct)) for item in given], dtype=np.intp
        )
        items = list(distinct)
        scores = np.empty((len(items), self.num_labels), dtype=np.float32)
        # longest first, as sentence-transformers batches: less padding in each batch
        sizes = [
            len(item) if isinstance(item, str) else len(item[0]) + len(item[1]) for item in items
        ]
        order = np.argsort([-size for size in sizes], kind="stable")
        for start in range(0, len(items), batch_size):
            rows = order[start : start + batch_size]
            scores[rows] = self._logits([items[i] for i in rows], truncation)
        scores = scores[where]
        if not raw:
            scores = _activate(self.activation, scores)
        return scores[:, 0] if self.num_labels == 1 else scores

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        batch_size: int = 32,
        *,
        raw_scores: bool = False,
    ) -> list[Ranked]:
        """``documents`` by relevance to ``query``, best first: (index, score) of the
        ``top_k`` best (all when None or more than there are). Equal scores keep the
        documents' order. An empty document list raises InvalidArgumentError (there is
        nothing to rank); ``raw_scores`` gives the logits instead of the activated scores."""
        if not isinstance(query, str):
            raise InvalidArgumentError(f"rerank: query must be a str, got {type(query).__name__}")
        if isinstance(documents, str):
            raise InvalidArgumentError("rerank: documents must be a list of strings, not one str")
        docs = list(documents)
        if not docs:
            raise InvalidArgumentError("rerank: documents is empty; there is nothing to rank")
        for i, doc in enumerate(docs):
            if not isinstance(doc, str):
                raise InvalidArgumentError(
                    f"rerank: documents[{i}] is a {type(doc).__name__}, not a str"
                )
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1
        ):
            raise InvalidArgumentError(f"rerank: top_k must be a positive int, got {top_k!r}")
        if self.num_labels != 1:
            raise UnsupportedArchitectureError(
                f"rerank: this checkpoint has {self.num_labels} labels, so no single relevance"
                " score; use predict() for its (N, num_labels) scores"
            )
        scores = self.predict([(query, doc) for doc in docs], batch_size, raw=raw_scores)
        order = np.argsort(-scores, kind="stable")[: top_k or len(docs)]
        return [Ranked(int(i), float(scores[i])) for i in order]

    def token_counts(self, pairs: Sequence[tuple[str, str] | str]) -> list[int]:
        """Tokens of each pair (special tokens included) without truncation."""
        return list(self.tokenizer.pairs(_pairs(pairs), max_length=_UNBOUNDED).lengths)

    @property
    def labels(self) -> list[str]:
        """The label names by index (``id2label``; ``LABEL_i`` where it has none)."""
        id2label = self.checkpoint.config.get("id2label") or {}
        return [str(id2label.get(str(i), f"LABEL_{i}")) for i in range(self.num_labels)]

    def _logits(
        self, pairs: list[tuple[str, str] | str], truncation: Literal["warn", "error", "silent"]
    ) -> Array:
        """Logits (N, num_labels) of one batch; on the numpy backend in row shards, one per
        core, longest pairs first, as TextEmbedder runs (see
        :mod:`~ipfs_accelerate.models._parallel`)."""
        encoded = self.tokenizer.pairs(pairs, truncation=truncation)
        ids, mask, types = encoded.input_ids, encoded.attention_mask, encoded.token_type_ids
        lengths = np.asarray(encoded.lengths, dtype=np.int64)

        def shard(rows: Array) -> Array:
            width = int(lengths[rows].max())  # the shard's own longest pair
            return self._logits_rows(ids[rows, :width], mask[rows, :width], types[rows, :width])

        cores = host_cores() if self.device == "cpu" else 1
        sharded = run_longest_first(shard, lengths, cores)
        return self._logits_rows(ids, mask, types) if sharded is None else sharded

    def _logits_rows(self, ids: Array, mask: Array, types: Array) -> Array:
        """Packed where the model can skip the padding and the shape policy allows, else
        padded to the policy's shape."""
        count, length = ids.shape
        plan = self.shape_policy().plan(count, length, int((mask != 0).sum()))
        device = self.device
        if plan.packed and hasattr(self.model, "packed"):
            from ipfs_accelerate.models.bert import PackedTokens

            logits = self.model.packed(PackedTokens.from_batch(ids, mask, types))
            return np.asarray(logits.numpy(), dtype=np.float32)
        rows, width = (plan.rows, plan.length) if not plan.packed else (count, length)
        if (rows, width) != (count, length):
            ids, mask, types = _pad_batch(
                (ids, mask, types), rows, width, (self.tokenizer.pad_id, 0, 0)
            )
        logits = self.model(
            from_numpy(ids, device), from_numpy(mask, device), from_numpy(types, device)
        )
        return np.asarray(logits.numpy(), dtype=np.float32)[:count]


def _pairs(pairs: Any) -> list[tuple[str, str] | str]:
    """The items checked: (first, second) pairs, or plain strings."""
    if isinstance(pairs, str | bytes):
        raise InvalidArgumentError("predict: pairs must be a list of (str, str) pairs")
    out: list[tuple[str, str] | str] = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str):
            out.append(pair)
            continue
        if (
            not isinstance(pair, tuple | list)
            or len(pair) != 2
            or not all(isinstance(t, str) for t in pair)
        ):
            raise InvalidArgumentError(
                f"predict: pairs[{i}] is not a (str, str) pair: {pair!r:.80}"
            )
        out.append((pair[0], pair[1]))
    return out


def _activation(checkpoint: Checkpoint, num_labels: int) -> str:
    """The activation sentence-transformers' CrossEncoder applies: 6.x saves it in
    config_sentence_transformers.json, 3.x-5.x under config.json's ``sentence_transformers``;
    unsaved, the sigmoid for one label and none for several."""
    saved = checkpoint.json("config_sentence_transformers.json").get("activation_fn")
    if saved is None:
        legacy = checkpoint.config.get("sentence_transformers")
        saved = legacy.get("activation_fn") if isinstance(legacy, Mapping) else None
    if saved is None:
        return "sigmoid" if num_labels == 1 else "identity"
    if saved not in _ACTIVATIONS:
        raise UnsupportedArchitectureError(
            f"{checkpoint.path}: cross-encoder activation_fn {saved!r} is not implemented"
            f" ({', '.join(a.rsplit('.', 1)[-1] for a in _ACTIVATIONS)} are)"
        )
    return _ACTIVATIONS[saved]


def _activate(name: str, logits: Array) -> Array:
    if name == "sigmoid":
        return np.asarray(1.0 / (1.0 + np.exp(-logits.astype(np.float64))), dtype=np.float32)
    if name == "tanh":
        return np.tanh(logits)
    return logits


def _classifier_class(config: Mapping[str, Any], weights: Mapping[str, Any]) -> type[Module]:
    """The sequence-classification class of any registered family; an encoder without a
    classification head is an embedder, which TextEmbedder loads."""
    chosen = model_class_for(config, weights)
    if not chosen.is_head_model or not chosen.__name__.endswith("ForSequenceClassification"):
        raise UnsupportedArchitectureError(
            f"Reranker: this checkpoint loads as {chosen.__name__}, not a cross-encoder"
            " (*ForSequenceClassification); load an embedding model with TextEmbedder"
        )
    return chosen
