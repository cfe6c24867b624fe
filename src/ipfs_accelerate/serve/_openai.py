"""OpenAI's routes: ``/v1/embeddings``, ``/v1/audio/transcriptions``,
``/v1/audio/translations``, ``/v1/models`` and ``/v1/models/{id}``.

Bodies and errors follow OpenAI's API reference. What this server cannot honour is refused
with a 400 naming the parameter, never ignored: ``dimensions`` above the model's or below 1,
``prompt``, a non-zero ``temperature``, word timestamps.
"""

from __future__ import annotations

import base64
import json
import math
from typing import TYPE_CHECKING, Any

from ipfs_accelerate.models.pipelines import TranscriptSegment

from ._decode import decode_audio
from ._errors import ServeError, brief
from ._models import l2_normalize
from ._requests import dimensions_field, embedding_inputs, json_object, read_json
from ._state import INLINE_RESPONSE_VALUES, ServerState, state_of

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

__all__ = ["routes"]

_OWNER = "ipfs-accelerate"
_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    from starlette.responses import Response

    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _model_object(model: Any) -> dict[str, Any]:
    card = {
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": _OWNER,
        "dtype": model.dtype,  # not in OpenAI's card: what precision this model runs in
    }
    if model.kind == "text-generation":  # as vLLM's card: the most tokens, prompt and reply
        card["context_length"] = model.pipeline.context_length
    return card


async def list_models(request: Request) -> Response:
    state = state_of(request)
    return _json({"object": "list", "data": [_model_object(m) for m in state.registry]})


async def retrieve_model(request: Request) -> Response:
    state = state_of(request)
    return _json(_model_object(state.model(request.path_params["model"])))


def _embedding_request(state: ServerState, value: Any) -> tuple[dict[str, Any], Any, Any]:
    """The body, model and inputs of an embeddings request (on the work pool when large)."""
    body = json_object(value)
    if "model" not in body:
        raise ServeError("invalid_request", "you must provide a model parameter", param="model")
    model = state.model(body["model"], "embedding")
    if "input" not in body:
        raise ServeError("invalid_request", "'input' is a required property", param="input")
    return body, model, embedding_inputs(body["input"], "input")


async def embeddings(request: Request) -> Response:
    from starlette.responses import Response

    state = state_of(request)
    body, model, inputs = await read_json(request, lambda value: _embedding_request(state, value))
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ServeError(
            "invalid_request",
            f"'encoding_format' must be 'float' or 'base64', got {brief(encoding)}",
            param="encoding_format",
        )
    engine = model.embedding
    assert engine is not None
    dimensions = dimensions_field(body, engine.dimension, model.name)
    vectors, tokens, _ = await state.embed(model, inputs, truncate=False, family="openai")
    if dimensions is not None:  # Matryoshka: the first dimensions, normalised again below
        vectors = vectors[:, :dimensions]
    payload = await state.offload(
        _embeddings_body,
        vectors,
        encoding,
        model.name,
        tokens,
        inline=vectors.size <= INLINE_RESPONSE_VALUES,
    )
    return Response(payload, media_type="application/json")


def _embeddings_body(vectors: Any, encoding: str, name: str, tokens: int) -> bytes:
    vectors = l2_normalize(vectors)
    if encoding == "base64":
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode("ascii"),
            }
            for i, v in enumerate(vectors)
        ]
    else:
        data = [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in enumerate(vectors)
        ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    body = {"object": "list", "data": data, "model": name, "usage": usage}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


async def transcriptions(request: Request) -> Response:
    return await _speech(request, "transcribe")


async def translations(request: Request) -> Response:
    return await _speech(request, "translate")


async def _speech(request: Request, task: str) -> Response:
    from starlette.datastructures import UploadFile
    from starlette.responses import PlainTextResponse

    state = state_of(request)
    form = await request.form(max_files=1, max_fields=64, max_part_size=state.config.max_body_bytes)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ServeError(
                "invalid_request",
                "'file' is a required property (a multipart file upload)",
                param="file",
            )
        if "model" not in form:
            raise ServeError("invalid_request", "you must provide a model parameter", param="model")
        model = state.model(form.get("model"), "speech-recognition")
        fmt = str(form.get("response_format") or "json")
        if fmt not in _FORMATS:
            raise ServeError(
                "invalid_request",
                f"'response_format' must be one of {', '.join(_FORMATS)}, got {brief(fmt)}",
                param="response_format",
            )
        language = _text_field(form.get("language")) if task == "transcribe" else None
        if _text_field(form.get("prompt")):
            raise ServeError(
                "unsupported",
                "'prompt' is not supported: this server decodes without a prompt",
                param="prompt",
            )
        temperature = _text_field(form.get("temperature"))
        if temperature is not None:
            try:
                value = float(temperature)
            except ValueError:
                raise ServeError(
                    "invalid_request",
                    f"'temperature' must be a number, got {brief(temperature)}",
                    param="temperature",
                ) from None
            if value != 0.0:
                raise ServeError(
                    "unsupported",
                    f"temperature {value:g} is not supported: decoding is greedy (temperature 0)",
                    param="temperature",
                )
        granularities = [str(g) for g in form.getlist("timestamp_granularities[]")]
        if "word" in granularities:
            raise ServeError(
                "unsupported",
                "word timestamps are not supported (segments are the 30 s decoding windows)",
                param="timestamp_granularities",
            )
        data = await upload.read()
        name = upload.filename or "file"
    finally:
        await form.close()
    segments, duration = await state.run(
        model, task, _transcribe, model.pipeline, state.config, data, name, language, task
    )
    state.metrics.inputs.labels(model.name, task).inc()
    text = TranscriptSegment.join(segments)
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(_subtitles(segments, fmt), media_type="text/plain")
    usage = {"type": "duration", "seconds": math.ceil(duration)}
    if fmt == "json":
        return _json({"text": text, "usage": usage})
    from ipfs_accelerate.models._languages import LANGUAGES

    language_code = segments[0].language if segments else "en"
    return _json(
        {
            "task": task,
            "language": LANGUAGES.get(language_code, language_code),
            "duration": round(duration, 3),
            "text": text,
            "segments": [
                {
                    "id": i,
                    "seek": round(s.start * 100),
                    "start": round(s.start, 3),
                    "end": round(s.end, 3),
                    "text": s.text,
                    "tokens": s.tokens,
                    "temperature": 0.0,
                }
                for i, s in enumerate(segments)
            ],
            "usage": usage,
        }
    )


def _text_field(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _transcribe(
    pipeline: Any, config: Any, data: bytes, name: str, language: str | None, task: str
) -> tuple[list[Any], float]:
    samples, rate = decode_audio(data, config, name)
    segments = pipeline.transcribe_segments((samples, rate), language, task)
    return segments, len(samples) / rate


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _subtitles(segments: list[Any], fmt: str) -> str:
    separator = "," if fmt == "srt" else "."
    lines = [] if fmt == "srt" else ["WEBVTT", ""]
    for number, segment in enumerate(segments, start=1):
        if fmt == "srt":
            lines.append(str(number))
        lines.append(
            f"{_timestamp(segment.start, separator)} --> {_timestamp(segment.end, separator)}"
        )
        lines.append(segment.text.strip())
        lines.append("")
    return "\n".join(lines) + "\n"


def routes() -> list[Route]:
    from starlette.routing import Route

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
    ]
