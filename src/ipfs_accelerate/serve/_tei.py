"""Hugging Face Text Embeddings Inference routes: ``/embed``, ``/info``, ``/health``.

TEI serves one model; here ``/embed`` uses the first embedding model the server loaded.
Statuses follow TEI's error types: 400 ``Empty``, 413 ``Validation`` (too many inputs, an
input too long without ``truncate``), 422 for bodies that do not parse, 424 ``Backend``, 429
``Overloaded``, 503 ``Unhealthy``. The response headers carry TEI's timings
(``x-compute-time``, ``x-tokenization-time``, ``x-queue-time``, ``x-inference-time``, in ms)
and counts (``x-compute-tokens``, ``x-compute-characters``).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import ipfs_accelerate

from ._errors import ServeError, brief
from ._models import ServedModel, l2_normalize
from ._requests import bool_field, embedding_inputs, json_object, read_json
from ._state import INLINE_RESPONSE_VALUES, WORK_THREADS, ServerState, state_of

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

__all__ = ["routes"]


def _embed_request(
    state: ServerState, model: ServedModel, value: Any
) -> tuple[tuple[str, list[Any]], bool, bool]:
    """Inputs, ``normalize`` and ``truncate`` of an ``/embed`` body (on the work pool when
    the body is large)."""
    body = json_object(value)
    if "inputs" not in body:
        raise ServeError("invalid_request", "missing field `inputs`", param="inputs")
    inputs = embedding_inputs(body["inputs"], "inputs")
    normalize = bool_field(body, "normalize", True)
    truncate = bool_field(body, "truncate", state.config.auto_truncate)
    direction = body.get("truncation_direction") or "Right"
    if not isinstance(direction, str) or direction.lower() != "right":
        raise ServeError(
            "unsupported",
            f"truncation_direction {brief(direction)} is not supported here (only Right)",
        )
    if body.get("prompt_name") is not None:
        raise ServeError(
            "unsupported", "prompt_name is not supported: the checkpoint defines no prompts here"
        )
    engine = model.embedding
    assert engine is not None
    dimensions = body.get("dimensions")
    if dimensions is not None and dimensions != engine.dimension:
        raise ServeError(
            "unsupported",
            f"dimensions {brief(dimensions)}: {model.name} returns {engine.dimension}-dimensional "
            "vectors",
        )
    return inputs, normalize, truncate


async def embed(request: Request) -> Response:
    from starlette.responses import Response

    started = time.perf_counter()
    state = state_of(request)
    model = state.default_embedding_model()
    inputs, normalize, truncate = await read_json(
        request, lambda value: _embed_request(state, model, value)
    )
    vectors, tokens, timings = await state.embed(model, inputs, truncate=truncate, family="tei")
    payload = await state.offload(
        _vectors_json, vectors, normalize, inline=vectors.size <= INLINE_RESPONSE_VALUES
    )
    kind, values = inputs
    characters = sum(len(v) for v in values) if kind == "text" else 0
    total = time.perf_counter() - started
    headers = {
        "x-compute-type": model.device,
        "x-compute-time": str(round(total * 1000)),
        "x-compute-characters": str(characters),
        "x-compute-tokens": str(tokens),
        "x-total-time": str(round(total * 1000)),
        "x-tokenization-time": str(round(timings["tokenization"] * 1000)),
        "x-queue-time": str(round(timings["queue"] * 1000)),
        "x-inference-time": str(round(timings["inference"] * 1000)),
    }
    return Response(payload, media_type="application/json", headers=headers)


def _vectors_json(vectors: Any, normalize: bool) -> bytes:
    if normalize:
        vectors = l2_normalize(vectors)
    return json.dumps(vectors.tolist(), separators=(",", ":"), allow_nan=False).encode()


async def info(request: Request) -> Response:
    from starlette.responses import JSONResponse

    state = state_of(request)
    model = state.default_embedding_model()
    engine = model.embedding
    assert engine is not None
    config = state.config
    return JSONResponse(
        {
            "model_id": model.name,
            "model_sha": None,
            "model_dtype": model.dtype,
            "model_type": {"embedding": {"pooling": model.pipeline.pooling}},
            "max_concurrent_requests": config.max_concurrent_requests,
            "max_input_length": engine.max_input_length,
            "max_batch_tokens": config.max_batch_size * engine.max_input_length,
            "max_batch_requests": config.max_batch_size,
            "max_client_batch_size": config.max_client_batch_size,
            "auto_truncate": config.auto_truncate,
            "tokenization_workers": WORK_THREADS,
            "version": ipfs_accelerate.__version__,
            "sha": None,
            "docker_label": None,
            "device": model.device,
        }
    )


async def health(request: Request) -> Response:
    from starlette.responses import Response

    state = state_of(request)
    if not state.ready or state.registry.closed:
        raise ServeError("unhealthy", "unhealthy")
    return Response(b"", status_code=200)


def routes() -> list[Route]:
    from starlette.routing import Route

    return [
        Route("/embed", embed, methods=["POST"]),
        Route("/info", info, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
