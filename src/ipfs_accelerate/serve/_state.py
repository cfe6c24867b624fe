"""The state every handler shares: config, models, batchers, metrics, the work pool, and the
two ways a request reaches a model (:meth:`ServerState.embed` through the dynamic batcher,
:meth:`ServerState.run` on the model's thread).

The event loop only moves bytes and decides: tokenizing, parsing large bodies, decoding media
and encoding large responses run on a bounded thread pool (:meth:`ServerState.offload`).
Threads, not processes: that work is mostly in code that releases the GIL (tokenizers, numpy,
Pillow, libsndfile), and a process would have to copy each request's body in and its result
back, which costs as much as the work itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ipfs_accelerate.errors import IpfsAccelerateError, PreprocessingError

from ._batching import EmbeddingBatcher, Overloaded
from ._config import ServerConfig
from ._errors import ServeError, brief, describe
from ._metrics import ServerMetrics
from ._models import ModelRegistry, ServedModel, TooLong

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["ServerState", "state_of"]

T = TypeVar("T")

#: threads of the work pool: they mostly wait on code that releases the GIL, so a few more
#: than the cores keep them busy; the bound keeps a flood of requests from spawning threads
WORK_THREADS = max(2, min(8, os.cpu_count() or 2))
#: responses of up to this many numbers are encoded on the event loop (about a millisecond)
INLINE_RESPONSE_VALUES = 1 << 14


class ServerState:
    """Everything the handlers share: config, models, batchers, metrics."""

    def __init__(
        self, config: ServerConfig, registry: ModelRegistry, *, owns_registry: bool
    ) -> None:
        self.config = config
        self.registry = registry
        self.owns_registry = owns_registry
        self.metrics = ServerMetrics()
        self.api_key = config.resolved_api_key()
        self.replica_id = config.replica_id or f"{socket.gethostname()}:{os.getpid()}"
        self.ready = True
        self.started = time.time()
        self.batchers: dict[str, EmbeddingBatcher] = {}
        self._in_progress: dict[str, int] = {}
        self.pool = ThreadPoolExecutor(max_workers=WORK_THREADS, thread_name_prefix="serve-work")
        for model in registry:
            if model.embedding is not None:
                self.batchers[model.name] = self._batcher(model)

    def _batcher(self, model: ServedModel) -> EmbeddingBatcher:
        assert model.embedding is not None
        name = model.name
        metrics = self.metrics

        def on_batch(size: int, waits: list[float], seconds: float) -> None:
            metrics.batch_size.labels(name).observe(size)
            metrics.inference_seconds.labels(name, "embedding").observe(seconds)
            histogram = metrics.queue_seconds.labels(name)
            for wait in waits:
                histogram.observe(wait)

        return EmbeddingBatcher(
            model.embedding.forward,
            model.call,
            model.embedding.dimension,
            max_batch_size=self.config.max_batch_size,
            max_wait=self.config.max_wait_ms / 1000.0,
            max_pending=self.config.max_concurrent_requests,
            on_batch=on_batch,
        )

    async def close(self) -> None:
        self.ready = False
        for batcher in self.batchers.values():
            await batcher.close()
        if self.owns_registry:
            self.registry.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def offload(self, fn: Callable[..., T], *args: Any, inline: bool = False) -> T:
        """``fn(*args)`` on the work pool: request work that must not hold the event loop
        (``inline``: work small enough that the hop to a thread would cost more, run here)."""
        if inline:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # ------------------------------------------------------------------ model lookup

    def model(self, name: Any, kind: str | None = None, *, param: str = "model") -> ServedModel:
        if not isinstance(name, str) or not name:
            raise ServeError(
                "invalid_request",
                f"'{param}' must be the name of a served model, got {brief(name)}",
                param=param,
            )
        model = self.registry.get(name)
        if model is None:
            known = ", ".join(m.name for m in self.registry)
            raise ServeError(
                "unknown_model",
                f"The model '{name}' does not exist on this server (served: {known})",
                param=param,
            )
        if kind is not None and model.kind != kind:
            raise ServeError(
                "wrong_model_kind",
                f"The model '{name}' is a {model.kind} model; this endpoint needs a {kind} model",
                param=param,
            )
        return model

    def default_embedding_model(self) -> ServedModel:
        model = self.registry.first("embedding")
        if model is None:
            raise ServeError("wrong_model_kind", "this server holds no embedding model")
        return model

    # ------------------------------------------------------------------ embeddings

    async def embed(
        self, model: ServedModel, inputs: tuple[str, list[Any]], *, truncate: bool, family: str
    ) -> tuple[np.ndarray[Any, Any], int, dict[str, float]]:
        """Pooled (not normalised) vectors of a request's inputs through the dynamic batcher,
        its token count and timings. ``inputs`` is ``("text", [str])`` or ``("ids", [[int]])``.
        Raises ServeError, worded as ``family``'s API words it."""
        started = time.perf_counter()
        sequences = await self.tokens(model, inputs, truncate=truncate, family=family)
        tokenized = time.perf_counter()
        batcher = self.batchers[model.name]
        self.metrics.in_progress.labels(model.name).inc()
        self.metrics.pending.labels(model.name).set(batcher.queued_inputs + len(sequences))
        try:
            vectors, queue_s, inference_s = await batcher.embed(sequences)
        except Overloaded as exc:
            raise ServeError("overloaded", f"Model is overloaded: {exc}") from None
        except IpfsAccelerateError as exc:
            raise ServeError(
                "inference_failed",
                f"{model.name}: inference failed: {type(exc).__name__}: {describe(exc)}",
            ) from None
        finally:
            self.metrics.in_progress.labels(model.name).dec()
            self.metrics.pending.labels(model.name).set(batcher.queued_inputs)
        tokens = sum(len(s) for s in sequences)
        self.metrics.inputs.labels(model.name, "embedding").inc(len(sequences))
        self.metrics.prompt_tokens.labels(model.name).inc(tokens)
        timings = {"tokenization": tokenized - started, "queue": queue_s, "inference": inference_s}
        return vectors, tokens, timings

    async def tokens(
        self, model: ServedModel, inputs: tuple[str, list[Any]], *, truncate: bool, family: str
    ) -> list[list[int]]:
        """The token ids of a request's inputs (``("text", [str])`` tokenized on the work
        pool, ``("ids", [[int]])`` checked), cut to the model's limit when ``truncate``;
        ServeError worded as ``family``'s API words it otherwise."""
        engine = model.embedding
        assert engine is not None
        kind, values = inputs
        if len(values) > self.config.max_client_batch_size:
            raise ServeError(
                "too_many_inputs",
                f"batch size {len(values)} > maximum allowed batch size "
                f"{self.config.max_client_batch_size}",
                param="input",
            )
        if kind == "text":
            _refuse_empty_text(values, family)
        try:
            if kind == "ids":
                sequences: list[list[int]] = await self.offload(engine.check_ids, values, truncate)
            else:
                sequences, _ = await self.offload(engine.tokenize, values, truncate)
        except TooLong as exc:
            raise ServeError(
                "input_too_long", _too_long_message(exc, family), param="input"
            ) from None
        except PreprocessingError:
            # the tokenizer's message names its file on this server: the client gets none of it
            raise ServeError(
                "invalid_request", "this model's tokenizer cannot read the input", param="input"
            ) from None
        return sequences

    async def run(self, model: ServedModel, task: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the model's thread, with in-progress limits and metrics; package
        errors about the input become ``bad_media``/``invalid_request``, others
        ``inference_failed``."""
        with self.admit(model, task):
            return await self.call(model, fn, *args)

    @contextlib.contextmanager
    def admit(self, model: ServedModel, task: str) -> Iterator[None]:
        """One request in progress on ``model`` for the block (``overloaded`` beyond
        ``max_concurrent_requests``), timed as ``task``: a generation holds it for all of
        its steps."""
        busy = self._in_progress.get(model.name, 0)
        if busy >= self.config.max_concurrent_requests:
            raise ServeError(
                "overloaded", f"Model is overloaded: {busy} requests in progress (the limit)"
            )
        self._in_progress[model.name] = busy + 1
        gauge = self.metrics.in_progress.labels(model.name)
        gauge.inc()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._in_progress[model.name] -= 1
            gauge.dec()
            self.metrics.inference_seconds.labels(model.name, task).observe(
                time.perf_counter() - started
            )

    def in_progress(self, model: ServedModel) -> int:
        """Requests in progress on ``model`` (see :meth:`admit`)."""
        return self._in_progress.get(model.name, 0)

    async def call(self, model: ServedModel, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the model's thread, package errors mapped as :meth:`run` says."""
        try:
            return await model.call(fn, *args)
        except ServeError:
            raise
        except PreprocessingError as exc:
            raise ServeError("bad_media", describe(exc)) from None
        except IpfsAccelerateError as exc:
            if isinstance(exc, ValueError):  # InvalidArgumentError and kin: the request's values
                raise ServeError("invalid_request", describe(exc)) from None
            raise ServeError(
                "inference_failed", f"{model.name}: {type(exc).__name__}: {describe(exc)}"
            ) from None


def _refuse_empty_text(texts: list[Any], family: str) -> None:
    """An empty string is refused as the imitated API refuses it (OpenAI 400, TEI 413
    ``Validation``): it has no tokens to embed, and [CLS][SEP] alone is no text's vector."""
    index = next((i for i, text in enumerate(texts) if text == ""), None)
    if index is None:
        return
    if family == "tei":
        message = "Input validation error: `inputs` cannot be empty"
    elif family == "openai":
        message = f"'$.input' is invalid: input {index} is an empty string"
    else:
        message = f"input 'text' element {index} is an empty string"
    raise ServeError("empty_text", message, param="input")


def _too_long_message(exc: TooLong, family: str) -> str:
    if family == "openai":
        return (
            f"This model's maximum context length is {exc.limit} tokens, however you requested "
            f"{exc.count} tokens "
            f"({exc.count} in your prompt; 0 for the completion) in input {exc.index}. Please "
            "reduce your prompt."
        )
    if family == "tei":
        return (
            f"Input validation error: `inputs` must have less than {exc.limit} tokens. "
            f"Given: {exc.count}"
        )
    return (
        f"input {exc.index} has {exc.count} tokens; the model takes at most {exc.limit} "
        "(set truncate to cut it)"
    )


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state
