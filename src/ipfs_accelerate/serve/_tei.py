"""Hugging Face Text Embeddings Inference routes: ``/embed``, ``/embed_all``, ``/rerank``,
``/predict``, ``/tokenize``, ``/decode``, ``/info``, ``/health``.

TEI serves one model; here ``/embed`` and ``/embed_all`` use the first embedding model the
server loaded, ``/rerank`` the first rerank (cross-encoder) model, ``/predict`` the first
rerank model or text classifier (a directory written by ``train-classifier``),
``/tokenize``, ``/decode`` and ``/info`` the first of either. Bodies and responses follow
TEI's OpenAPI document (1.7).
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

from ._config import CLASSIFIER_KIND
from ._errors import ServeError, brief
from ._models import ServedModel, l2_normalize
from ._requests import bool_field, dimensions_field, embedding_inputs, json_object, read_json
from ._state import INLINE_RESPONSE_VALUES, WORK_THREADS, ServerState, state_of

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

__all__ = ["routes", "tei_pooling"]


def _embed_request(
    state: ServerState, model: ServedModel, value: Any
) -> tuple[tuple[str, list[Any]], bool, bool, int | None]:
    """Inputs (the prompt put before each text), ``normalize``, ``truncate`` and
    ``dimensions`` of an ``/embed`` body (on the work pool when the body is large)."""
    body = json_object(value)
    inputs, truncate = _inputs_and_truncate(state, model, body)
    normalize = bool_field(body, "normalize", True)
    engine = model.embedding
    assert engine is not None
    dimensions = dimensions_field(body, engine.dimension, model.name, "invalid_request")
    return inputs, normalize, truncate, dimensions


def _inputs_and_truncate(
    state: ServerState, model: ServedModel, body: dict[str, Any]
) -> tuple[tuple[str, list[Any]], bool]:
    """The ``inputs`` of an /embed or /embed_all body with its ``prompt_name`` applied, and
    ``truncate`` (``truncation_direction`` must be Right)."""
    if "inputs" not in body:
        raise ServeError("invalid_request", "missing field `inputs`", param="inputs")
    inputs = embedding_inputs(body["inputs"], "inputs")
    truncate = bool_field(body, "truncate", state.config.auto_truncate)
    _check_direction(body)
    name = body.get("prompt_name")
    if name is None:
        return inputs, truncate
    pipeline = model.pipeline
    prompts = pipeline.prompts
    if not isinstance(name, str) or name not in prompts:
        raise ServeError(
            "invalid_request",
            f"prompt_name {brief(name)} is not one of this model's prompts "
            f"({', '.join(prompts) or 'it has none'})",
            param="prompt_name",
        )
    kind, values = inputs
    if kind != "text":
        raise ServeError(
            "unsupported", "prompt_name applies to text inputs, not token arrays", param="inputs"
        )
    if not pipeline.modules.include_prompt:
        raise ServeError(
            "unsupported",
            "prompt_name: this model pools without its prompt tokens (include_prompt false),"
            " which this server's batches do not do",
            param="prompt_name",
        )
    prompt = prompts[name]
    return ("text", [prompt + text for text in values]), truncate


def _check_direction(body: dict[str, Any]) -> None:
    direction = body.get("truncation_direction") or "Right"
    if not isinstance(direction, str) or direction.lower() != "right":
        raise ServeError(
            "unsupported",
            f"truncation_direction {brief(direction)} is not supported here (only Right)",
        )


async def embed(request: Request) -> Response:
    from starlette.responses import Response

    started = time.perf_counter()
    state = state_of(request)
    model = state.default_embedding_model()
    inputs, normalize, truncate, dimensions = await read_json(
        request, lambda value: _embed_request(state, model, value)
    )
    vectors, tokens, timings = await state.embed(model, inputs, truncate=truncate, family="tei")
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
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


#: sentence-transformers' pooling names whose TEI name differs (TEI's ``Pool`` enum: cls,
#: mean, splade, last_token); modes TEI lacks (max, weightedmean, mean_sqrt_len_tokens) keep
#: sentence-transformers' name
_TEI_POOLING = {"lasttoken": "last_token"}


def tei_pooling(pooling: str) -> str:
    """A pipeline's pooling ("+"-joined modes) in TEI's words, for ``/info``."""
    return "+".join(_TEI_POOLING.get(mode, mode) for mode in pooling.split("+"))


async def info(request: Request) -> Response:
    from starlette.responses import JSONResponse

    state = state_of(request)
    model = _tei_model(state)
    config = state.config
    if model.embedding is not None:
        model_type: dict[str, Any] = {"embedding": {"pooling": tei_pooling(model.pipeline.pooling)}}
        max_input = model.embedding.max_input_length
    else:
        labels = model.pipeline.labels
        model_type = {
            "reranker" if model.pipeline.num_labels == 1 else "classifier": {
                "id2label": {str(i): label for i, label in enumerate(labels)},
                "label2id": {label: i for i, label in enumerate(labels)},
            }
        }
        max_input = _pair_limit(model)
    return JSONResponse(
        {
            "model_id": model.name,
            "model_sha": None,
            "model_dtype": model.dtype,
            "model_type": model_type,
            "max_concurrent_requests": config.max_concurrent_requests,
            "max_input_length": max_input,
            "max_batch_tokens": config.max_batch_size * max_input,
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


# ----------------------------------------------------------------------------- token states


async def embed_all(request: Request) -> Response:
    """Every token's last hidden state of each input (no pooling), as TEI's ``/embed_all``:
    ``[[[float] per token] per input]``, special tokens included, no padding."""
    from starlette.responses import Response

    state = state_of(request)
    model = state.default_embedding_model()
    inputs, truncate = await read_json(
        request, lambda value: _inputs_and_truncate(state, model, json_object(value))
    )
    sequences = await state.tokens(model, inputs, truncate=truncate, family="tei")
    states = await state.run(model, "embed_all", _token_states, model.pipeline, sequences)
    size = sum(int(s.size) for s in states)
    payload = await state.offload(_json_bytes, states, inline=size <= INLINE_RESPONSE_VALUES)
    return Response(payload, media_type="application/json")


def _token_states(pipeline: Any, sequences: list[list[int]]) -> list[Any]:
    import numpy as np

    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), int(pipeline.tokenizer.pad_id), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = 1
    hidden = pipeline.token_embeddings(ids, mask)
    return [hidden[row, : len(sequence)] for row, sequence in enumerate(sequences)]


def _json_bytes(value: Any) -> bytes:
    if isinstance(value, list) and value and hasattr(value[0], "tolist"):
        value = [v.tolist() for v in value]
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


# ----------------------------------------------------------------------------- cross-encoders


def _rerank_model(state: ServerState) -> ServedModel:
    model = state.registry.first("rerank")
    if model is None:
        raise ServeError("wrong_model_kind", "this server holds no rerank (cross-encoder) model")
    return model


def _pair_limit(model: ServedModel) -> int:
    limit = model.pipeline.tokenizer.max_length
    return int(limit) if limit is not None else int(model.pipeline.max_input_tokens)


def _rerank_request(state: ServerState, value: Any) -> tuple[str, list[str], bool, bool, bool]:
    body = json_object(value)
    for name in ("query", "texts"):
        if name not in body:
            raise ServeError("invalid_request", f"missing field `{name}`", param=name)
    query, texts = body["query"], body["texts"]
    if not isinstance(query, str):
        raise ServeError("invalid_request", "`query` must be a string", param="query")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ServeError("invalid_request", "`texts` must be a list of strings", param="texts")
    if not texts:
        raise ServeError("empty_input", "`texts` cannot be empty", param="texts")
    _check_count(state, len(texts))
    _check_direction(body)
    return (
        query,
        texts,
        bool_field(body, "raw_scores", False),
        bool_field(body, "return_text", False),
        bool_field(body, "truncate", state.config.auto_truncate),
    )


def _check_count(state: ServerState, count: int) -> None:
    limit = state.config.max_client_batch_size
    if count > limit:
        raise ServeError(
            "too_many_inputs",
            f"Input validation error: batch size {count} > maximum allowed batch size {limit}",
        )


def _scores(
    model: ServedModel, items: list[Any], raw: bool, truncate: bool, batch_size: int
) -> Any:
    """Activated (or raw) scores (N, num_labels) of pairs/texts, as TEI scores them: the
    sigmoid for one label, the softmax for several. An over-long item without ``truncate``
    is refused as TEI refuses it."""
    import numpy as np

    pipeline = model.pipeline
    if not truncate:
        limit = _pair_limit(model)
        for count in pipeline.token_counts(items):
            if count > limit:
                raise ServeError(
                    "input_too_long",
                    f"Input validation error: `inputs` must have less than {limit} tokens. "
                    f"Given: {count}",
                    param="inputs",
                )
    logits = pipeline.predict(items, batch_size, raw=True, truncation="silent")
    logits = np.asarray(logits, dtype=np.float64).reshape(len(items), pipeline.num_labels)
    if raw:
        return logits
    if pipeline.num_labels == 1:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


async def rerank(request: Request) -> Response:
    """TEI's ``/rerank``: ``[{"index", "score"[, "text"]}]``, best first."""
    from starlette.responses import Response

    state = state_of(request)
    model = _rerank_model(state)
    query, texts, raw, return_text, truncate = await read_json(
        request, lambda value: _rerank_request(state, value)
    )
    if model.pipeline.num_labels != 1:
        raise ServeError(
            "wrong_model_kind",
            f"{model.name} has {model.pipeline.num_labels} labels; /rerank needs a cross-encoder"
            " with a single class (use /predict)",
        )
    pairs = [(query, text) for text in texts]
    scores = await state.run(
        model, "rerank", _scores, model, pairs, raw, truncate, state.config.max_batch_size
    )
    state.metrics.inputs.labels(model.name, "rerank").inc(len(pairs))
    column = scores[:, 0]
    order = sorted(range(len(texts)), key=lambda i: -column[i])
    ranks: list[dict[str, Any]] = []
    for index in order:
        rank: dict[str, Any] = {"index": index, "score": float(column[index])}
        if return_text:
            rank["text"] = texts[index]
        ranks.append(rank)
    payload = await state.offload(_json_bytes, ranks, inline=len(ranks) <= 1024)
    return Response(payload, media_type="application/json")


def _predict_request(state: ServerState, value: Any) -> tuple[list[Any], bool, bool, bool]:
    """The items (texts or pairs) of a ``/predict`` body, whether it was a batch,
    ``raw_scores`` and ``truncate``. A top-level list of two strings is one pair (TEI's
    reading); other lists are batches of strings, [text] or [first, second]."""
    body = json_object(value)
    if "inputs" not in body:
        raise ServeError("invalid_request", "missing field `inputs`", param="inputs")
    inputs = body["inputs"]
    batch = True
    if isinstance(inputs, str):
        items: list[Any] = [inputs]
        batch = False
    elif isinstance(inputs, list) and len(inputs) == 2 and all(isinstance(t, str) for t in inputs):
        items = [(inputs[0], inputs[1])]
        batch = False
    elif isinstance(inputs, list):
        items = [_predict_item(item, index) for index, item in enumerate(inputs)]
    else:
        raise ServeError(
            "invalid_request",
            "`inputs` must be a string, a pair of strings or a list of them",
            param="inputs",
        )
    if not items:
        raise ServeError("empty_input", "`inputs` cannot be empty", param="inputs")
    _check_count(state, len(items))
    _check_direction(body)
    raw = bool_field(body, "raw_scores", False)
    return items, batch, raw, bool_field(body, "truncate", state.config.auto_truncate)


def _predict_item(item: Any, index: int) -> Any:
    if isinstance(item, str):
        return item
    if isinstance(item, list) and all(isinstance(t, str) for t in item):
        if len(item) == 1:
            return item[0]
        if len(item) == 2:
            return (item[0], item[1])
    raise ServeError(
        "invalid_request",
        f"inputs[{index}] must be a string, [text] or [first, second], got {brief(item)}",
        param="inputs",
    )


def _predict_model(state: ServerState) -> ServedModel:
    model = state.registry.first("rerank") or state.registry.first(CLASSIFIER_KIND)
    if model is None:
        raise ServeError(
            "wrong_model_kind",
            "this server holds no rerank (cross-encoder) model or text classifier",
        )
    return model


def _classifier_scores(
    model: ServedModel, items: list[Any], raw: bool, truncate: bool, batch_size: int
) -> Any:
    """Probabilities (or, with ``raw``, the head's logits) (N, labels) of a
    :class:`~ipfs_accelerate.models.TextClassifier`'s texts. A text pair is refused: the head
    reads one sentence embedding."""
    import numpy as np

    pipeline = model.pipeline
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ServeError(
                "unsupported",
                f"inputs[{index}] is a text pair; {model.name} is a text classifier over "
                "sentence embeddings and takes single texts",
                param="inputs",
            )
        if not item:
            raise ServeError("empty_text", f"inputs[{index}] is an empty string", param="inputs")
    tokenizer = pipeline.embedder.tokenizer
    limit = tokenizer.max_length
    if not truncate and limit is not None:
        for count in tokenizer(items, max_length=1 << 30).lengths:
            if count > limit:
                raise ServeError(
                    "input_too_long",
                    f"Input validation error: `inputs` must have less than {limit} tokens. "
                    f"Given: {int(count)}",
                    param="inputs",
                )
    logits = np.asarray(pipeline.logits(items, batch_size), dtype=np.float64)
    if raw:
        return logits
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


async def predict(request: Request) -> Response:
    """TEI's ``/predict``: every label's score of each input, best first; ``[...]`` for one
    input, ``[[...], ...]`` for a batch."""
    from starlette.responses import Response

    state = state_of(request)
    model = _predict_model(state)
    items, batch, raw, truncate = await read_json(
        request, lambda value: _predict_request(state, value)
    )
    score = _classifier_scores if model.kind == CLASSIFIER_KIND else _scores
    scores = await state.run(
        model, "predict", score, model, items, raw, truncate, state.config.max_batch_size
    )
    state.metrics.inputs.labels(model.name, "predict").inc(len(items))
    labels = [str(label) for label in model.pipeline.labels]
    results = []
    for row in scores:
        order = sorted(range(len(labels)), key=lambda i: -row[i])
        results.append([{"score": float(row[i]), "label": labels[i]} for i in order])
    return Response(_json_bytes(results if batch else results[0]), media_type="application/json")


# ----------------------------------------------------------------------------- tokenizer


def _tei_model(state: ServerState) -> ServedModel:
    """The model TEI's model-agnostic routes describe: the first embedding model, else the
    first rerank model."""
    model = state.registry.first("embedding") or state.registry.first("rerank")
    if model is None:
        raise ServeError("wrong_model_kind", "this server holds no embedding or rerank model")
    return model


def _tokenize_request(state: ServerState, model: ServedModel, value: Any) -> tuple[list[str], bool]:
    body = json_object(value)
    if "inputs" not in body:
        raise ServeError("invalid_request", "missing field `inputs`", param="inputs")
    inputs = body["inputs"]
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ServeError(
            "invalid_request", "`inputs` must be a string or a list of strings", param="inputs"
        )
    if not texts:
        raise ServeError("empty_input", "`inputs` cannot be empty", param="inputs")
    _check_count(state, len(texts))
    name = body.get("prompt_name")
    if name is not None:
        prompts = getattr(model.pipeline, "prompts", {})
        if not isinstance(name, str) or name not in prompts:
            raise ServeError(
                "invalid_request",
                f"prompt_name {brief(name)} is not one of this model's prompts "
                f"({', '.join(prompts) or 'it has none'})",
                param="prompt_name",
            )
        texts = [prompts[name] + text for text in texts]
    return texts, bool_field(body, "add_special_tokens", True)


def _tokenized(tokenizer: Any, texts: list[str], special: bool) -> bytes:
    out = [
        [
            {"id": token_id, "text": text, "special": is_special, "start": start, "stop": stop}
            for token_id, text, start, stop, is_special in tokenizer.tokens(
                item, add_special_tokens=special
            )
        ]
        for item in texts
    ]
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()


async def tokenize(request: Request) -> Response:
    """TEI's ``/tokenize``: each input's tokens as ``{"id", "text", "special", "start",
    "stop"}`` (offsets in UTF-8 bytes; none for special tokens)."""
    from starlette.responses import Response

    state = state_of(request)
    model = _tei_model(state)
    texts, special = await read_json(request, lambda value: _tokenize_request(state, model, value))
    payload = await state.offload(_tokenized, model.pipeline.tokenizer, texts, special)
    return Response(payload, media_type="application/json")


def _decode_request(state: ServerState, model: ServedModel, value: Any) -> tuple[Any, bool]:
    body = json_object(value)
    if "ids" not in body:
        raise ServeError("invalid_request", "missing field `ids`", param="ids")
    ids = body["ids"]
    if not isinstance(ids, list):
        raise ServeError("invalid_request", "`ids` must be a list of token ids", param="ids")
    sequences = ids if ids and all(isinstance(v, list) for v in ids) else [ids]
    _check_count(state, len(sequences))
    vocab = int(model.pipeline.tokenizer.vocab_size)
    for index, sequence in enumerate(sequences):
        for token in sequence:
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab:
                raise ServeError(
                    "invalid_request",
                    f"ids[{index}] holds {brief(token)}, not a token id of this model's "
                    f"vocabulary [0, {vocab})",
                    param="ids",
                )
    return sequences, bool_field(body, "skip_special_tokens", True)


async def decode(request: Request) -> Response:
    """TEI's ``/decode``: one string per id sequence."""
    from starlette.responses import Response

    state = state_of(request)
    model = _tei_model(state)
    sequences, skip = await read_json(request, lambda value: _decode_request(state, model, value))
    tokenizer = model.pipeline.tokenizer
    texts = await state.offload(
        lambda: [tokenizer.decode(s, skip_special_tokens=skip) for s in sequences]
    )
    return Response(_json_bytes(texts), media_type="application/json")


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
        Route("/embed_all", embed_all, methods=["POST"]),
        Route("/rerank", rerank, methods=["POST"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/decode", decode, methods=["POST"]),
        Route("/info", info, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
