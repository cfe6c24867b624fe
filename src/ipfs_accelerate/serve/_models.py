"""The models a server holds: loaded once, each with its own worker thread.

A model runs one call at a time on its own single-thread executor, so the event loop never
blocks on inference and two requests never share a model's state; two models run side by
side. Embedding models also get the token-level surface the dynamic batcher needs
(:class:`EmbeddingEngine`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ipfs_accelerate.errors import ConfigurationError
from ipfs_accelerate.models._shapes import compiles_per_shape

from ._config import CLASSIFIER_KIND, KINDS, ModelSpec, checkpoint_kind
from ._errors import ServeError
from ._metrics import count_model_load

__all__ = ["EmbeddingEngine", "ModelRegistry", "ServedModel", "l2_normalize"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Array = np.ndarray[Any, Any]

#: (model name, stage, done, total): loading progress, for progress bars
LoadProgress = Callable[[str, str, int, int], None]

#: tokenize without truncation: limits are checked here, so that each request gets its error
_NO_LIMIT = 1 << 30


@dataclass
class ServedModel:
    """A loaded pipeline, its served name and kind, and its worker thread."""

    name: str
    kind: str
    source: str
    pipeline: Any
    created: int = field(default_factory=lambda: int(time.time()))
    executor: ThreadPoolExecutor = field(init=False, repr=False)
    embedding: EmbeddingEngine | None = field(init=False, default=None, repr=False)
    #: seconds the warm-up pass took (None: not warmed up)
    warm_up_seconds: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model:{self.name}")
        if self.kind == "embedding":
            self.embedding = EmbeddingEngine(self.pipeline)

    @property
    def device(self) -> str:
        return str(self.pipeline.device)

    @property
    def dtype(self) -> str:
        """The precision the model was loaded in ("float32", "float16", "int8", "int4")."""
        return str(getattr(self.pipeline, "dtype", "float32"))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this model's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def warm_up(self) -> None:
        """One tiny forward pass through the path requests take, so that the first request
        does not pay for kernel or graph compiles and first-touch allocations."""
        started = time.perf_counter()
        pipeline = self.pipeline
        if self.embedding is not None:
            sequences, _ = self.embedding.tokenize(["warm-up"], truncate=True)
            self.embedding.forward(sequences)
        elif self.kind == "image-classification":
            pipeline.logits(_WARM_UP_IMAGE)
        elif self.kind == "zero-shot-image-classification":
            pipeline.classify(_WARM_UP_IMAGE, ["a photo"])
        elif self.kind == "speech-recognition":
            pipeline.transcribe(
                (np.zeros(1600, dtype=np.float32), 16000), language="en", max_new_tokens=1
            )
        elif self.kind == "text-generation":
            pipeline.generate("warm-up", max_new_tokens=1)
        elif self.kind == "rerank":
            pipeline.predict([("warm-up", "warm-up")])
        elif self.kind == CLASSIFIER_KIND:
            pipeline.predict_proba(["warm-up"])
        self.warm_up_seconds = time.perf_counter() - started
        logger.info("warmed up %s in %.2f s", self.name, self.warm_up_seconds)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.pipeline.close()


#: the image a warm-up pass classifies (the processor resizes it to the model's input size)
_WARM_UP_IMAGE = np.zeros((32, 32, 3), dtype=np.uint8)


class EmbeddingEngine:
    """Tokens in, pooled vectors out, for a :class:`~ipfs_accelerate.models.TextEmbedder`.

    :meth:`tokenize` runs per request (its errors stay that request's); :meth:`forward` runs
    one padded batch made of many requests' token lists.
    """

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.tokenizer = embedder.tokenizer
        config = embedder.model.config
        self.vocab_size = int(config.vocab_size)
        self.max_positions = int(config.max_position_embeddings)
        limit = self.tokenizer.max_length
        self.max_input_length = int(limit) if limit is not None else self.max_positions
        self.dimension = int(embedder.dimension)
        self.pad_id = int(self.tokenizer.pad_id)

    def tokenize(self, texts: Sequence[str], truncate: bool) -> tuple[list[list[int]], list[int]]:
        """Token ids of each text (special tokens included) and the untruncated counts.
        A text longer than ``max_input_length`` is cut to it when ``truncate``, otherwise
        :class:`TooLong` names it."""
        encoded = self.tokenizer(list(texts), max_length=_NO_LIMIT)
        counts = list(encoded.lengths)
        sequences = [encoded.input_ids[i, :n].tolist() for i, n in enumerate(counts)]
        over = [i for i, n in enumerate(counts) if n > self.max_input_length]
        if over and not truncate:
            raise TooLong(over[0], counts[over[0]], self.max_input_length)
        if over:
            # the tokenizer's own truncation keeps the special tokens where the checkpoint puts
            # them; truncating is what this request asked for, so it warns of nothing
            cut = self.tokenizer(
                [texts[i] for i in over], max_length=self.max_input_length, truncation="silent"
            )
            for row, i in enumerate(over):
                sequences[i] = cut.input_ids[row, : cut.lengths[row]].tolist()
        return sequences, counts

    def check_ids(self, sequences: Sequence[Sequence[int]], truncate: bool) -> list[list[int]]:
        """Token arrays a client sent, as they are (nothing added): each id inside the
        vocabulary, each array non-empty and within ``max_input_length`` (or cut to it)."""
        out = []
        for index, ids in enumerate(sequences):
            if not ids:
                raise ServeError(
                    "empty_input", f"input[{index}] is an empty token array", param="input"
                )
            low, high = min(ids), max(ids)
            if low < 0 or high >= self.vocab_size:
                bad = low if low < 0 else high
                raise ServeError(
                    "invalid_request",
                    f"input[{index}] has token id {bad}, outside this model's vocabulary "
                    f"[0, {self.vocab_size})",
                    param="input",
                )
            if len(ids) > self.max_input_length:
                if not truncate:
                    raise TooLong(index, len(ids), self.max_input_length)
                ids = ids[: self.max_input_length]
            out.append(list(ids))
        return out

    def forward(self, sequences: Sequence[Sequence[int]]) -> Array:
        """Pooled, not normalised, float32 vectors (N, dimension) of one batch, the
        checkpoint's Dense layers applied (the embedder pads it further to its shape policy's
        buckets)."""
        count = len(sequences)
        width = max(len(s) for s in sequences)
        ids = np.full((count, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((count, width), dtype=np.int64)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        # TEI leaves a checkpoint's Normalize module out and normalises on request: so here
        vectors = self.embedder.embed_tokens(ids, mask, normalize=False, normalize_module=False)
        return np.asarray(vectors, dtype=np.float32)


class TooLong(Exception):
    """Input ``index`` has ``count`` tokens, more than ``limit``."""

    def __init__(self, index: int, count: int, limit: int) -> None:
        super().__init__(f"input {index} has {count} tokens, more than {limit}")
        self.index, self.count, self.limit = index, count, limit


def l2_normalize(vectors: Array) -> Array:
    """Rows divided by max(norm, 1e-12), as the pipelines (and torch's normalize) do."""
    norms = np.sqrt(np.sum(vectors.astype(np.float64) ** 2, axis=1, keepdims=True))
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


# ----------------------------------------------------------------------------- the registry


class ModelRegistry:
    """The served models by name, in load order. Build with :meth:`load`; :meth:`close`
    stops their worker threads and releases their weights."""

    def __init__(self, models: Sequence[ServedModel]) -> None:
        self._models: dict[str, ServedModel] = {}
        for model in models:
            if model.name in self._models:
                raise ConfigurationError(
                    f"two served models are named {model.name!r}; give one another name "
                    "(NAME=SOURCE)"
                )
            self._models[model.name] = model
        self.closed = False

    @classmethod
    def load(
        cls,
        specs: Sequence[ModelSpec | str],
        device: str = "auto",
        *,
        shape_buckets: bool | None = None,
        local_files_only: bool | None = None,
        progress: LoadProgress | None = None,
        warm_up: bool = True,
        dtype: str = "float32",
    ) -> ModelRegistry:
        """Load every model of ``specs`` on ``device`` (CheckpointError and
        UnsupportedArchitectureError name the one that failed), each warmed up with one tiny
        forward pass unless ``warm_up`` is false; ``dtype`` is from_pretrained's."""
        loaded: list[ServedModel] = []
        try:
            for spec in specs:
                spec = ModelSpec.parse(spec) if isinstance(spec, str) else spec
                loaded.append(
                    _load_one(spec, device, shape_buckets, local_files_only, progress, dtype)
                )
                if warm_up:
                    _warm_up(loaded[-1], progress)
            return cls(loaded)
        except BaseException:
            for model in loaded:
                model.close()
            raise

    def get(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    def first(self, kind: str) -> ServedModel | None:
        return next((m for m in self._models.values() if m.kind == kind), None)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for model in self._models.values():
                model.close()


def _warm_up(model: ServedModel, progress: LoadProgress | None) -> None:
    if progress is not None:
        progress(model.name, "warm-up", 0, 1)
    model.warm_up()
    if progress is not None:
        progress(model.name, "warm-up", 1, 1)


def _default_name(source: str) -> str:
    from ipfs_accelerate.models.loading import BUNDLED_MODELS

    for hub_id, package in BUNDLED_MODELS.items():
        if source in (package, package.replace("-", "_")):
            return hub_id
    path = Path(source).expanduser()
    if not source.startswith("s3://") and path.is_dir():
        return path.resolve().name
    return source


def _load_one(
    spec: ModelSpec,
    device: str,
    shape_buckets: bool | None,
    local_files_only: bool | None,
    progress: LoadProgress | None,
    dtype: str = "float32",
) -> ServedModel:
    from ipfs_accelerate.errors import UnsupportedArchitectureError
    from ipfs_accelerate.models import (
        ImageClassifier,
        Reranker,
        SpeechRecognizer,
        TextEmbedder,
        TextGenerator,
        ZeroShotImageClassifier,
    )
    from ipfs_accelerate.models.loading import load_checkpoint
    from ipfs_accelerate.models.pipelines._classifier import is_classifier_dir

    name = spec.name or _default_name(spec.source)
    callback = None
    if progress is not None:

        def callback(stage: str, done: int, total: int) -> None:
            progress(name, stage, done, total)

    if spec.kind in (None, CLASSIFIER_KIND) and is_classifier_dir(Path(spec.source).expanduser()):
        return _load_classifier(name, spec, device, callback, dtype)
    checkpoint = load_checkpoint(spec.source, local_files_only=local_files_only)
    model_type = str(checkpoint.config.get("model_type", "")).lower()
    kind = spec.kind or checkpoint_kind(checkpoint.config, checkpoint.path)
    if kind == CLASSIFIER_KIND:
        raise UnsupportedArchitectureError(
            f"{spec.source}: not a text classifier directory (no classifier.json)"
        )
    if kind is None:
        raise UnsupportedArchitectureError(
            f"{spec.source}: model_type {model_type or '(missing)'!r} cannot be served; servable: "
            f"{', '.join(f'{t} ({k})' for t, k in KINDS.items())}"
        )
    pipeline_class: Any = {
        "embedding": TextEmbedder,
        "image-classification": ImageClassifier,
        "zero-shot-image-classification": ZeroShotImageClassifier,
        "speech-recognition": SpeechRecognizer,
        "text-generation": TextGenerator,
        "rerank": Reranker,
    }[kind]
    pipeline = pipeline_class.from_pretrained(
        checkpoint.path, device=device, progress=callback, dtype=dtype
    )
    count_model_load(name)
    logger.info(
        "serving %s (%s) from %s on %s in %s: %s",
        name,
        kind,
        checkpoint.path,
        pipeline.device,
        pipeline.dtype,
        pipeline.device_reason,
    )
    model = ServedModel(name=name, kind=kind, source=spec.source, pipeline=pipeline)
    if model.embedding is not None or kind == "rerank":
        # batches of any row count: always the buckets on a graph-compiling backend
        if shape_buckets is None:
            shape_buckets = compiles_per_shape(pipeline.device)
        pipeline.shape_policy("buckets" if shape_buckets else "exact")
    return model


def _load_classifier(
    name: str, spec: ModelSpec, device: str, progress: Any, dtype: str
) -> ServedModel:
    from ipfs_accelerate.models import TextClassifier

    pipeline = TextClassifier.load(
        Path(spec.source).expanduser(), device, progress=progress, dtype=dtype
    )
    count_model_load(name)
    logger.info(
        "serving %s (%s, labels %s) from %s on %s: %s",
        name,
        CLASSIFIER_KIND,
        pipeline.labels,
        spec.source,
        pipeline.device,
        pipeline.device_reason,
    )
    return ServedModel(name=name, kind=CLASSIFIER_KIND, source=spec.source, pipeline=pipeline)
