"""What a server says about itself: ``GET /`` (the routes and models, as JSON) and
``GET /openapi.json`` (an OpenAPI 3.1 document), both built from the routes the app mounts.

Every mounted route needs an entry in :data:`ROUTE_DOCS` (its API, a summary, and the model
kinds it serves): :func:`check_documented` fails the app's construction otherwise, so the
index and the OpenAPI document cannot drift from the route table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ipfs_accelerate.errors import ConfigurationError

from ._state import state_of

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from ._state import ServerState

__all__ = ["ROUTE_DOCS", "RouteDoc", "check_documented", "routes", "served_routes"]

_EMBEDDING = frozenset({"embedding"})
_SPEECH = frozenset({"speech-recognition"})
_GENERATION = frozenset({"text-generation"})
_RERANK = frozenset({"rerank"})
_TEXT = frozenset({"embedding", "rerank"})
_CLASSIFIER = frozenset({"text-classification"})


@dataclass(frozen=True)
class RouteDoc:
    """A mounted route described: the API it imitates, one line on what it does, the model
    kinds it serves (``None``: it works whatever models are loaded) and its body's type."""

    api: str
    summary: str
    kinds: frozenset[str] | None = None
    body: str | None = None


#: keyed by the route's path as mounted (Starlette's path, converters included)
ROUTE_DOCS: dict[str, RouteDoc] = {
    "/": RouteDoc("server", "This index: the routes and the models this server serves."),
    "/openapi.json": RouteDoc("server", "An OpenAPI 3.1 description of these routes."),
    "/metrics": RouteDoc("server", "Prometheus metrics."),
    "/v1/models": RouteDoc("OpenAI", "List the served models."),
    "/v1/models/{model:path}": RouteDoc("OpenAI", "Describe one served model."),
    "/v1/embeddings": RouteDoc(
        "OpenAI", "Embed text or token arrays.", _EMBEDDING, "application/json"
    ),
    "/v1/chat/completions": RouteDoc(
        "OpenAI",
        "Chat with a text-generation model (SSE with stream).",
        _GENERATION,
        "application/json",
    ),
    "/v1/completions": RouteDoc(
        "OpenAI", "Complete a prompt (SSE with stream).", _GENERATION, "application/json"
    ),
    "/v1/audio/transcriptions": RouteDoc(
        "OpenAI", "Transcribe an audio file.", _SPEECH, "multipart/form-data"
    ),
    "/v1/audio/translations": RouteDoc(
        "OpenAI", "Translate an audio file into English text.", _SPEECH, "multipart/form-data"
    ),
    "/v1/audio/stream": RouteDoc(
        "server",
        "Live transcription over a WebSocket (binary PCM in, JSON events out).",
        _SPEECH,
    ),
    "/embed": RouteDoc("TEI", "Embed text.", _EMBEDDING, "application/json"),
    "/embed_all": RouteDoc(
        "TEI", "Every token's embedding, without pooling.", _EMBEDDING, "application/json"
    ),
    "/rerank": RouteDoc(
        "TEI", "Rank texts by relevance to a query (cross-encoder).", _RERANK, "application/json"
    ),
    "/predict": RouteDoc(
        "TEI",
        "Score texts or text pairs with a classifier.",
        _RERANK | _CLASSIFIER,
        "application/json",
    ),
    "/tokenize": RouteDoc("TEI", "Tokenize text.", _TEXT, "application/json"),
    "/decode": RouteDoc("TEI", "Decode token ids into text.", _TEXT, "application/json"),
    "/info": RouteDoc("TEI", "The default embedding or rerank model and its limits.", _TEXT),
    "/health": RouteDoc("TEI", "200 while the server serves, 503 otherwise."),
    "/v2": RouteDoc("KServe v2", "Server metadata."),
    "/v2/health/live": RouteDoc("KServe v2", "Liveness."),
    "/v2/health/ready": RouteDoc("KServe v2", "Readiness."),
    "/v2/models/{model:path}/infer": RouteDoc(
        "KServe v2", "Run a model on named input tensors.", body="application/json"
    ),
    "/v2/models/{model:path}/ready": RouteDoc("KServe v2", "Whether one model is ready."),
    "/v2/models/{model:path}": RouteDoc("KServe v2", "One model's metadata and tensors."),
}


def check_documented(mounted: Iterable[Any]) -> None:
    """Raise ConfigurationError naming any mounted route that :data:`ROUTE_DOCS` lacks."""
    missing = [r.path for r in mounted if getattr(r, "path", None) not in ROUTE_DOCS]
    if missing:
        raise ConfigurationError(
            f"routes without an entry in serve/_index.py ROUTE_DOCS: {', '.join(missing)}"
        )


def served_routes(mounted: Iterable[Any], kinds: Iterable[str]) -> list[tuple[Any, RouteDoc]]:
    """The mounted routes that serve at least one of ``kinds`` (or any model), with their
    descriptions, in mounting order."""
    loaded = set(kinds)
    out = []
    for route in mounted:
        doc = ROUTE_DOCS[route.path]
        if doc.kinds is None or doc.kinds & loaded:
            out.append((route, doc))
    return out


def _methods(route: Any) -> list[str]:
    return sorted(m for m in (getattr(route, "methods", None) or ()) if m != "HEAD")


def index_document(state: ServerState, mounted: Sequence[Any]) -> dict[str, Any]:
    import ipfs_accelerate

    kinds = [model.kind for model in state.registry]
    return {
        "name": "ipfs-accelerate",
        "version": ipfs_accelerate.__version__,
        "models": [
            {"id": model.name, "kind": model.kind, "device": model.device}
            for model in state.registry
        ],
        "routes": [
            {
                "methods": _methods(route),
                "path": route.path_format,
                "api": doc.api,
                "summary": doc.summary,
            }
            for route, doc in served_routes(mounted, kinds)
        ],
        "openapi": "/openapi.json",
        "api_key_required": state.api_key is not None,
    }


def _operation(route: Any, doc: RouteDoc, method: str, secured: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": doc.summary,
        "tags": [doc.api],
        "operationId": f"{method.lower()}_{route.name}",
        "responses": {
            "200": {"description": "Success."},
            "4XX": {"description": "A client error, in this API's error shape."},
            "5XX": {"description": "A server error (a generic message and a request id)."},
        },
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.param_convertors
    ]
    if parameters:
        operation["parameters"] = parameters
    if doc.body is not None and method in ("POST", "PUT"):
        operation["requestBody"] = {
            "required": True,
            "content": {doc.body: {"schema": {"type": "object"}}},
        }
    if not secured:
        operation["security"] = []
    return operation


def openapi_document(
    state: ServerState, mounted: Sequence[Any], public: Iterable[str]
) -> dict[str, Any]:
    """OpenAPI 3.1: one path item per served route; a bearer scheme when a key is required
    (``public`` paths declare no security)."""
    import ipfs_accelerate

    open_paths = set(public)
    keyed = state.api_key is not None
    paths: dict[str, Any] = {}
    for route, doc in served_routes(mounted, [model.kind for model in state.registry]):
        item = paths.setdefault(route.path_format, {})
        for method in _methods(route):
            secured = keyed and route.path not in open_paths
            item[method.lower()] = _operation(route, doc, method, secured)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "ipfs-accelerate",
            "version": ipfs_accelerate.__version__,
            "description": "Local models with the OpenAI, TEI and KServe v2 APIs' shapes.",
        },
        "paths": paths,
    }
    if keyed:
        document["components"] = {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
        document["security"] = [{"bearer": []}]
    return document


def routes(public: Iterable[str]) -> list[Route]:
    """The ``/`` and ``/openapi.json`` routes; both describe ``request.app.routes``."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    open_paths = frozenset(public)

    async def index(request: Request) -> Response:
        return JSONResponse(index_document(state_of(request), request.app.routes))

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(state_of(request), request.app.routes, open_paths))

    return [
        Route("/", index, methods=["GET"], name="index"),
        Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
    ]
