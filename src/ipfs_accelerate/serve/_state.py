"""The ASGI application: routes of the three imitated APIs, guards, shared helpers.

Request path, outermost first: :class:`_Guard` (request id, replica id, metrics, the last
line of defence: anything unexpected becomes a 500 in the family's error shape, logged here,
never a traceback to the client), the API-key check, the body-size limit (Content-Length
first, then counting what arrives), then Starlette's router and the handlers of
``_openai``, ``_tei`` and ``_kserve``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.errors import IpfsAccelerateError, PreprocessingError

from ._batching import EmbeddingBatcher, Overloaded
from ._config import ServerConfig
from ._errors import ServeError, error_body, family_for_path
from ._metrics import ServerMetrics
from ._models import ModelRegistry, ServedModel, TooLong

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request

__all__ = ["ServerState", "create_app"]

logger = logging.getLogger("ipfs_accelerate.serve")

#: paths answered without an API key: liveness/readiness probes and the metrics scrape (as TEI)
PUBLIC_PATHS = frozenset({"/health", "/v2/health/live", "/v2/health/ready", "/metrics"})

#: requests with more inputs than this are tokenized on a thread, not on the event loop
_TOKENIZE_INLINE = 32


class ServerState:
    """Everything the handlers share: config, models, batchers, metrics."""

    def __init__(self, config: ServerConfig, registry: ModelRegistry, *, owns_registry: bool) -> None:
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
            model.embedding.forward, model.call, model.embedding.dimension,
            max_batch_size=self.config.max_batch_size, max_wait=self.config.max_wait_ms / 1000.0,
            max_pending=self.config.max_concurrent_requests, on_batch=on_batch,
        )  # fmt: skip

    async def close(self) -> None:
        self.ready = False
        for batcher in self.batchers.values():
            await batcher.close()
        if self.owns_registry:
            self.registry.close()

    # ------------------------------------------------------------------ model lookup

    def model(self, name: Any, kind: str | None = None, *, param: str = "model") -> ServedModel:
        if not isinstance(name, str) or not name:
            raise ServeError("invalid_request", f"'{param}' must be the name of a served model, got {name!r}", param=param)
        model = self.registry.get(name)
        if model is None:
            known = ", ".join(m.name for m in self.registry)
            raise ServeError(
                "unknown_model", f"The model '{name}' does not exist on this server (served: {known})", param=param
            )
        if kind is not None and model.kind != kind:
            raise ServeError(
                "wrong_model_kind", f"The model '{name}' is a {model.kind} model; this endpoint needs a {kind} model",
                param=param,
            )  # fmt: skip
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
        engine = model.embedding
        assert engine is not None
        kind, values = inputs
        if len(values) > self.config.max_client_batch_size:
            raise ServeError(
                "too_many_inputs",
                f"batch size {len(values)} > maximum allowed batch size {self.config.max_client_batch_size}",
                param="input",
            )  # fmt: skip
        started = time.perf_counter()
        try:
            if kind == "ids":
                sequences = engine.check_ids(values, truncate)
            elif len(values) > _TOKENIZE_INLINE:
                sequences, _ = await asyncio.to_thread(engine.tokenize, values, truncate)
            else:
                sequences, _ = engine.tokenize(values, truncate)
        except TooLong as exc:
            raise ServeError("input_too_long", _too_long_message(exc, family), param="input") from None
        except PreprocessingError as exc:
            raise ServeError("invalid_request", f"cannot tokenize the input: {exc}", param="input") from None
        tokenized = time.perf_counter()
        batcher = self.batchers[model.name]
        self.metrics.in_progress.labels(model.name).inc()
        self.metrics.pending.labels(model.name).set(batcher.queued_inputs + len(sequences))
        try:
            vectors, queue_s, inference_s = await batcher.embed(sequences)
        except Overloaded as exc:
            raise ServeError("overloaded", f"Model is overloaded: {exc}") from None
        except IpfsAccelerateError as exc:
            raise ServeError("inference_failed", f"{model.name}: inference failed: {type(exc).__name__}: {exc}") from None
        finally:
            self.metrics.in_progress.labels(model.name).dec()
            self.metrics.pending.labels(model.name).set(batcher.queued_inputs)
        tokens = sum(len(s) for s in sequences)
        self.metrics.inputs.labels(model.name, "embedding").inc(len(sequences))
        self.metrics.prompt_tokens.labels(model.name).inc(tokens)
        timings = {"tokenization": tokenized - started, "queue": queue_s, "inference": inference_s}
        return vectors, tokens, timings

    async def run(self, model: ServedModel, task: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the model's thread, with in-progress limits and metrics; package
        errors about the input become ``bad_media``/``invalid_request``, others
        ``inference_failed``."""
        busy = self._in_progress.get(model.name, 0)
        if busy >= self.config.max_concurrent_requests:
            raise ServeError("overloaded", f"Model is overloaded: {busy} requests in progress (the limit)")
        self._in_progress[model.name] = busy + 1
        gauge = self.metrics.in_progress.labels(model.name)
        gauge.inc()
        started = time.perf_counter()
        try:
            return await model.call(fn, *args)
        except ServeError:
            raise
        except PreprocessingError as exc:
            raise ServeError("bad_media", f"{exc}") from None
        except IpfsAccelerateError as exc:
            if isinstance(exc, ValueError):  # InvalidArgumentError and kin: the request's values
                raise ServeError("invalid_request", f"{exc}") from None
            raise ServeError("inference_failed", f"{model.name}: {type(exc).__name__}: {exc}") from None
        finally:
            self._in_progress[model.name] -= 1
            gauge.dec()
            self.metrics.inference_seconds.labels(model.name, task).observe(time.perf_counter() - started)


def _too_long_message(exc: TooLong, family: str) -> str:
    if family == "openai":
        return (
            f"This model's maximum context length is {exc.limit} tokens, however you requested {exc.count} tokens "
            f"({exc.count} in your prompt; 0 for the completion) in input {exc.index}. Please reduce your prompt."
        )
    if family == "tei":
        return f"Input validation error: `inputs` must have less than {exc.limit} tokens. Given: {exc.count}"
    return f"input {exc.index} has {exc.count} tokens; the model takes at most {exc.limit} (set truncate to cut it)"


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


async def read_json(request: Request) -> Any:
    """The request body as JSON (the size limit applies while it is read)."""
    body = await request.body()
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServeError(
            "invalid_json",
            f"We could not parse the JSON body of your request ({exc}). The server expects a JSON payload.",
        ) from None


def json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ServeError("invalid_request", f"the request body must be a JSON object, got {type(value).__name__}")
    return value


def embedding_inputs(value: Any, field: str) -> tuple[str, list[Any]]:
    """OpenAI/TEI input forms: a string, a list of strings, one token array (list of ints)
    or a list of token arrays -> ``("text", [...])`` or ``("ids", [[...]])``."""
    if isinstance(value, str):
        return "text", [value]
    if not isinstance(value, list):
        raise ServeError(
            "invalid_request", f"'{field}' must be a string, a list of strings or token arrays, got {type(value).__name__}",
            param=field,
        )  # fmt: skip
    if not value:
        raise ServeError("empty_input", f"`{field}` cannot be empty", param=field)
    if all(isinstance(v, str) for v in value):
        return "text", value
    if all(_is_int(v) for v in value):
        return "ids", [value]
    if all(isinstance(v, list) and all(_is_int(t) for t in v) for v in value):
        return "ids", value
    raise ServeError(
        "invalid_request", f"'{field}' must be a string, a list of strings, a token array or a list of token arrays "
        "(one form throughout)", param=field,
    )  # fmt: skip


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def bool_field(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ServeError("invalid_request", f"'{name}' must be true or false, got {value!r}", param=name)
    return value


# ----------------------------------------------------------------------------- middleware


class _Guard:
    """Request id, replica id, access metrics, and the catch-all for unexpected failures."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        path = scope.get("path", "")
        family = family_for_path(path)
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        status_box = [500]
        response_started = False

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_box[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"x-replica-id", state.replica_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            key_error = self._check_key(scope, path)
            if key_error is not None:
                await _send_error(send_wrapper, key_error, family)
            else:
                await self._limited(scope, receive, send_wrapper, family)
        except ServeError as exc:  # the body limit tripped outside a handler
            if response_started:
                raise
            await _send_error(send_wrapper, exc, family)
        except Exception:
            logger.exception("unhandled error answering %s %s", scope.get("method"), path)
            if response_started:
                raise
            await _send_error(send_wrapper, ServeError("internal", "The server had an error while processing your request."), family)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            state.metrics.requests.labels(template, scope.get("method", ""), str(status_box[0])).inc()
            state.metrics.request_seconds.labels(template).observe(time.perf_counter() - started)

    def _check_key(self, scope: dict[str, Any], path: str) -> ServeError | None:
        key = self.state.api_key
        if key is None or path in PUBLIC_PATHS:
            return None
        header = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        scheme, _, token = header.partition(" ")
        if not header:
            return ServeError(
                "unauthorized",
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="missing_api_key",
            )  # fmt: skip
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.reveal().encode()):
            # the presented key is never echoed, not even masked
            return ServeError("unauthorized", "Incorrect API key provided.", code="invalid_api_key")
        return None

    async def _limited(self, scope: dict[str, Any], receive: Any, send: Any, family: str) -> None:
        limit = self.state.config.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise ServeError("invalid_request", "the Content-Length header is not a number") from None
                if length > limit:
                    raise ServeError("payload_too_large", _too_large(length, limit))
        received = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ServeError("payload_too_large", _too_large(received, limit, more=True))
            return message

        await self.app(scope, counting_receive, send)


def _too_large(size: int, limit: int, *, more: bool = False) -> str:
    return f"Request body of {'more than ' if more else ''}{size} bytes exceeds this server's limit of {limit} bytes"


async def _send_error(send: Any, error: ServeError, family: str) -> None:
    status, body = error_body(error, family)
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_response(error: ServeError, family: str) -> Any:
    from starlette.responses import Response

    status, body = error_body(error, family)
    return Response(body, status_code=status, media_type="application/json" if body else None, headers=error.headers)


# ----------------------------------------------------------------------------- the app


def create_app(
    config: ServerConfig | None = None,
    *,
    registry: ModelRegistry | None = None,
    progress: Any = None,
) -> Starlette:
    """The ASGI app serving ``config.models`` (loaded here, on ``config.device``, unless a
    loaded ``registry`` is given; then the caller owns it and closes it).

    Routes: OpenAI ``/v1/embeddings``, ``/v1/audio/transcriptions``,
    ``/v1/audio/translations``, ``/v1/models[/{id}]``; TEI ``/embed``, ``/info``,
    ``/health``; KServe v2 ``/v2``, ``/v2/health/{live,ready}``, ``/v2/models/{m}[/ready]``,
    ``/v2/models/{m}/infer``; Prometheus ``/metrics``. See docs/server.md.
    """
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import Response
    from starlette.routing import Route

    from . import _kserve, _openai, _tei

    config = config or ServerConfig()
    owns = registry is None
    if registry is None:
        registry = ModelRegistry.load(
            config.models, config.device, shape_buckets=config.shape_buckets,
            local_files_only=config.local_files_only, progress=progress,
        )  # fmt: skip
    state = ServerState(config, registry, owns_registry=owns)

    async def metrics(request: Request) -> Response:
        body, content_type = state.metrics.exposition()
        return Response(body, media_type=content_type)

    async def serve_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServeError)
        state.metrics.errors.labels(exc.kind).inc()
        return error_response(exc, family_for_path(request.url.path))  # type: ignore[no-any-return]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        method, path = request.method, request.url.path
        if exc.status_code == 404:
            error = ServeError("route_not_found", f"Invalid URL ({method} {path})")
        elif exc.status_code == 405:
            error = ServeError("method_not_allowed", f"Invalid method for URL ({method} {path})")
        elif exc.status_code == 400:  # a multipart body Starlette could not parse
            error = ServeError("invalid_request", f"could not parse the request body: {exc.detail}")
        else:
            error = ServeError("internal", str(exc.detail))
        state.metrics.errors.labels(error.kind).inc()
        return error_response(error, family_for_path(path))  # type: ignore[no-any-return]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await state.close()

    routes: Sequence[Route] = [
        *_openai.routes(),
        *_tei.routes(),
        *_kserve.routes(),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=list(routes),
        middleware=[Middleware(_Guard, state=state)],
        exception_handlers={ServeError: serve_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.server = state
    return app
