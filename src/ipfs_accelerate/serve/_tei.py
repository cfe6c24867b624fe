"""Hugging Face Text Embeddings Inference routes: ``/embed``, ``/predict``, ``/info``,
``/health``.

TEI serves one model; here ``/embed`` uses the first embedding model the server loaded and
``/predict`` the first text classifier (a directory written by ``train-classifier``).
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


def _predict_request(state: ServerState, value: Any) -> tuple[list[str], bool, bool]:
    """Texts, whether one string was sent, and ``raw_scores`` of a ``/predict`` body. Inputs:
    a string, or a list whose items are strings or one-string lists; a two-string item is a
    cross-encoder pair, which a classifier over sentence embeddings does not take."""
    body = json_object(value)
    if "inputs" not in body:
        raise ServeError("invalid_request", "missing field `inputs`", param="inputs")
    raw = body["inputs"]
    single = isinstance(raw, str)
    items = [raw] if single else raw
    if not isinstance(items, list):
        raise ServeError(
            "invalid_request",
            f"'inputs' must be a string or a list of strings, got {type(raw).__name__}",
            param="inputs",
        )
    if not items:
        raise ServeError("empty_input", "Input validation error: `inputs` cannot be empty")
    limit = state.config.max_client_batch_size
    if len(items) > limit:
        raise ServeError(
            "too_many_inputs",
            f"batch size {len(items)} > maximum allowed batch size {limit}",
        )
    texts = []
    for index, item in enumerate(items):
        if isinstance(item, list) and len(item) == 2:
            raise ServeError(
                "unsupported",
                f"inputs[{index}] is a text pair: this classifier takes single texts",
            )
        text = item[0] if isinstance(item, list) and len(item) == 1 else item
        if not isinstance(text, str):
            raise ServeError(
                "invalid_request",
                f"inputs[{index}] must be a string, got {brief(item)}",
                param="inputs",
            )
        if not text:
            raise ServeError("empty_text", f"inputs[{index}] is an empty string")
        texts.append(text)
    truncate = bool_field(body, "truncate", state.config.auto_truncate)
    if not truncate:
        _check_lengths(state.default_classifier_model(), texts)
    return texts, single, bool_field(body, "raw_scores", False)


def _check_lengths(model: ServedModel, texts: list[str]) -> None:
    tokenizer = model.pipeline.embedder.tokenizer
    limit = tokenizer.max_length
    if limit is None:
        return
    counts = tokenizer(texts, max_length=1 << 30).lengths
    for index, count in enumerate(counts):
        if count > limit:
            raise ServeError(
                "input_too_long",
                f"inputs[{index}] has {int(count)} tokens, more than {limit}; send "
                "truncate: true to cut it",
            )


def _scores(pipeline: Any, texts: list[str], raw: bool) -> list[list[dict[str, Any]]]:
    values = pipeline.logits(texts) if raw else pipeline.predict_proba(texts)
    out = []
    for row in values:
        ranked = sorted(zip(pipeline.labels, row.tolist(), strict=True), key=lambda p: -p[1])
        out.append([{"label": str(label), "score": score} for label, score in ranked])
    return out


async def predict(request: Request) -> Response:
    from starlette.responses import JSONResponse

    started = time.perf_counter()
    state = state_of(request)
    model = state.default_classifier_model()
    texts, single, raw = await read_json(request, lambda value: _predict_request(state, value))
    results = await state.run(model, "text-classification", _scores, model.pipeline, texts, raw)
    total = time.perf_counter() - started
    headers = {
        "x-compute-type": model.device,
        "x-compute-time": str(round(total * 1000)),
        "x-compute-characters": str(sum(len(t) for t in texts)),
        "x-total-time": str(round(total * 1000)),
    }
    return JSONResponse(results[0] if single else results, headers=headers)


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
        Route("/predict", predict, methods=["POST"]),
        Route("/info", info, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
