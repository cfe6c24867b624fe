"""The ASGI application: assembles the routes of the three imitated APIs behind the guards.

Request path, outermost first: :class:`_Guard` (request id, replica id, metrics, the last
line of defence: anything unexpected becomes a 500 in the family's error shape, logged here,
never a traceback to the client), the API-key check, the body-size limit (Content-Length
first, then counting what arrives), then Starlette's router and the handlers of
``_openai``, ``_tei`` and ``_kserve``. The route modules never import this one: what they
share lives in ``_state`` and ``_requests``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._config import ServerConfig
from ._errors import ServeError, describe, error_body, family_for_path
from ._models import ModelRegistry
from ._state import ServerState

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request

__all__ = ["create_app"]

logger = logging.getLogger("ipfs_accelerate.serve")

#: paths answered without an API key: liveness/readiness probes and the metrics scrape (as TEI),
#: and the OpenAPI document (it names no model)
PUBLIC_PATHS = frozenset(
    {"/health", "/v2/health/live", "/v2/health/ready", "/metrics", "/openapi.json"}
)


# ----------------------------------------------------------------------------- middleware


class _Guard:
    """Request id, replica id, access metrics, and the catch-all for unexpected failures."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # the same key as HTTP; a refused handshake is closed before it is accepted
        if scope["type"] == "websocket" and self._check_key(scope, scope.get("path", "")):
            await send({"type": "websocket.close", "code": 1008})
            return
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
        except asyncio.CancelledError:
            if state.ready:
                raise
            # a shutdown's graceful timeout ran out on this request: uvicorn would log the
            # cancellation as a traceback; it is the drain working as configured
            status_box[0] = 499
            logger.info(
                "request %s: %s %s dropped at shutdown, after the graceful timeout",
                request_id,
                scope.get("method"),
                path,
            )
        except _client_disconnect():
            # nobody is left to answer: a client hanging up mid-request is routine, not an error
            status_box[0] = 499
            logger.info(
                "request %s: the client disconnected before %s %s was read",
                request_id,
                scope.get("method"),
                path,
            )
        except Exception:
            logger.exception(
                "request %s: unhandled error answering %s %s", request_id, scope.get("method"), path
            )
            if response_started:
                raise
            message = (
                "The server had an error while processing your request (request id "
                f"{request_id}; the server's log has the details)."
            )
            await _send_error(send_wrapper, ServeError("internal", message), family)
        finally:
            route = scope.get("route")
            template = (
                getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            )
            state.metrics.requests.labels(
                template, scope.get("method", ""), str(status_box[0])
            ).inc()
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
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="missing_api_key",
            )
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), key.reveal().encode()
        ):
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
                    raise ServeError(
                        "invalid_request", "the Content-Length header is not a number"
                    ) from None
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


def _client_disconnect() -> type[Exception]:
    from starlette.requests import ClientDisconnect

    return ClientDisconnect


def _too_large(size: int, limit: int, *, more: bool = False) -> str:
    more_than = "more than " if more else ""
    return f"Request body of {more_than}{size} bytes exceeds this server's limit of {limit} bytes"


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
    return Response(
        body,
        status_code=status,
        media_type="application/json" if body else None,
        headers=error.headers,
    )


# ----------------------------------------------------------------------------- the app


def _cors(config: ServerConfig) -> list[Any]:
    """CORS for browser clients, outermost: a preflight carries no API key, so it is answered
    before the key check (off unless origins are configured)."""
    if not config.cors_allow_origins:
        return []
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware

    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_allow_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type"],
            expose_headers=["x-request-id", "x-replica-id"],
        )
    ]


def create_app(
    config: ServerConfig | None = None,
    *,
    registry: ModelRegistry | None = None,
    progress: Any = None,
) -> Starlette:
    """The ASGI app serving ``config.models`` (loaded here, on ``config.device``, unless a
    loaded ``registry`` is given; then the caller owns it and closes it).

    Routes: OpenAI ``/v1/embeddings``, ``/v1/audio/transcriptions``,
    ``/v1/audio/translations``, ``/v1/chat/completions``, ``/v1/completions``,
    ``/v1/models[/{id}]``; TEI ``/embed``, ``/info``,
    ``/health``; KServe v2 ``/v2``, ``/v2/health/{live,ready}``, ``/v2/models/{m}[/ready]``,
    ``/v2/models/{m}/infer``; Prometheus ``/metrics``; ``/`` (an index of the routes and
    models) and ``/openapi.json``. See docs/server.md.
    """
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import Response
    from starlette.routing import Route

    from . import _completions, _index, _kserve, _openai, _speech_ws, _tei

    config = config or ServerConfig()
    owns = registry is None
    if registry is None:
        registry = ModelRegistry.load(
            config.models,
            config.device,
            shape_buckets=config.shape_buckets,
            local_files_only=config.local_files_only,
            dtype=config.dtype,
            progress=progress,
            warm_up=config.warm_up,
        )
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
            detail = describe(Exception(exc.detail))
            error = ServeError("invalid_request", f"could not parse the request body: {detail}")
        else:
            error = ServeError("internal", describe(Exception(exc.detail)))
        state.metrics.errors.labels(error.kind).inc()
        return error_response(error, family_for_path(path))  # type: ignore[no-any-return]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await state.close()

    routes: Sequence[Any] = [
        *_index.routes(PUBLIC_PATHS),
        *_openai.routes(),
        *_completions.routes(),
        *_tei.routes(),
        *_kserve.routes(),
        *_speech_ws.routes(),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    _index.check_documented(routes)  # `/` and /openapi.json describe exactly these
    app = Starlette(
        routes=list(routes),
        middleware=[*_cors(config), Middleware(_Guard, state=state)],
        exception_handlers={ServeError: serve_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.server = state
    return app
