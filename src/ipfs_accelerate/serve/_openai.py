"""OpenAI's routes: ``/v1/embeddings``, ``/v1/audio/transcriptions``,
``/v1/audio/translations``, ``/v1/models`` and ``/v1/models/{id}``.

Bodies and errors follow OpenAI's API reference. What this server cannot honour is refused
with a 400 naming the parameter, never ignored: ``dimensions`` above the model's or below 1,
a ``temperature`` outside 0..1, word timestamps on a checkpoint without timestamp tokens and
alignment heads, a ``prompt`` on one without ``<|startofprev|>``.

Speech: ``temperature`` 0 decodes greedily; above 0 it samples at that temperature (seeded,
no fallback schedule). ``prompt`` primes the first window as Whisper's initial prompt.
``stream=true`` answers with server-sent events: one ``transcript.text.delta`` per segment as
each 30 s window is decoded, then ``transcript.text.done`` with the whole text.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from typing import TYPE_CHECKING, Any

from ipfs_accelerate.models.pipelines import TranscriptSegment
from ipfs_accelerate.models.pipelines._speech import subtitles

from ._decode import decode_audio
from ._errors import ServeError, brief, error_body
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
        options: dict[str, Any] = {}
        prompt = _text_field(form.get("prompt"))
        if prompt is not None:
            options["initial_prompt"] = prompt
        temperature = _text_field(form.get("temperature"))
        if temperature is not None:
            try:
                value = float(temperature)
            except ValueError:
                value = math.nan
            if not 0.0 <= value <= 1.0:
                raise ServeError(
                    "invalid_request",
                    f"'temperature' must be a number from 0 to 1, got {brief(temperature)}",
                    param="temperature",
                )
            options["temperature"] = value
        granularities = [str(g) for g in form.getlist("timestamp_granularities[]")]
        for granularity in granularities:
            if granularity not in ("word", "segment"):
                raise ServeError(
                    "invalid_request",
                    "'timestamp_granularities[]' items must be 'word' or 'segment', got "
                    f"{brief(granularity)}",
                    param="timestamp_granularities",
                )
        if granularities and fmt != "verbose_json":
            raise ServeError(
                "invalid_request",
                "timestamp_granularities need response_format 'verbose_json'",
                param="timestamp_granularities",
            )
        words = "word" in granularities
        if words:
            options["word_timestamps"] = True
        stream = _text_field(form.get("stream")) in ("true", "True", "1")
        if stream and fmt not in ("json", "text"):
            raise ServeError(
                "invalid_request",
                f"stream=true answers with text events; response_format {fmt!r} cannot stream",
                param="stream",
            )
        data = await upload.read()
        name = upload.filename or "file"
    finally:
        await form.close()
    if model.pipeline.generation.has_timestamps:
        # segments at Whisper's timestamp tokens where the checkpoint has them (else one
        # segment per 30 s window), in every format so that they all say the same text
        options["return_timestamps"] = True
    if stream:
        return await _speech_events(state, model, task, data, name, language, options)
    segments, duration = await state.run(
        model, task, _transcribe, model.pipeline, state.config, data, name, language, task,
        options,
    )  # fmt: skip
    state.metrics.inputs.labels(model.name, task).inc()
    text = TranscriptSegment.join(segments)
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(subtitles(segments, fmt), media_type="text/plain")
    usage = {"type": "duration", "seconds": math.ceil(duration)}
    if fmt == "json":
        return _json({"text": text, "usage": usage})
    from ipfs_accelerate.models._languages import LANGUAGES

    language_code = segments[0].language if segments else "en"
    body: dict[str, Any] = {
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
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for i, s in enumerate(segments)
        ],
        "usage": usage,
    }
    if words:
        body["words"] = [
            {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for s in segments
            for w in s.words
        ]
    return _json(body)


async def _speech_events(
    state: ServerState,
    model: Any,
    task: str,
    data: bytes,
    name: str,
    language: str | None,
    options: dict[str, Any],
) -> Response:
    """SSE: a ``transcript.text.delta`` per segment as its window is decoded, then
    ``transcript.text.done``. Bad audio or arguments are still an HTTP error: the audio is
    decoded and the first segment awaited before the response starts."""
    from ._completions import _EventStream

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stopped = False

    def work(pipeline: Any, config: Any) -> float:
        samples, rate = decode_audio(data, config, name)
        for segment in pipeline.iter_segments((samples, rate), language, task, **options):
            if stopped:  # the client went away: stop decoding at the next window
                break
            loop.call_soon_threadsafe(queue.put_nowait, segment)
        return len(samples) / rate

    job = asyncio.ensure_future(state.run(model, task, work, model.pipeline, state.config))
    job.add_done_callback(lambda _: queue.put_nowait(None))
    first = await queue.get()
    if first is None:
        await job  # raises the request's error (bad audio, bad language, ...)

    async def body() -> Any:
        nonlocal stopped
        texts: list[str] = []
        item = first
        try:
            while item is not None:
                delta = item.text.strip()
                if delta:
                    delta = (" " if texts else "") + delta
                    texts.append(delta)
                    yield _sse_event({"type": "transcript.text.delta", "delta": delta})
                item = await queue.get()
            await job
            state.metrics.inputs.labels(model.name, task).inc()
            yield _sse_event({"type": "transcript.text.done", "text": "".join(texts)})
        except ServeError as error:
            _, raw = error_body(error, "openai")
            yield _sse_event({"type": "error", "error": json.loads(raw)["error"]})
        finally:
            stopped = True

    return _EventStream(body())


def _sse_event(data: dict[str, Any]) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return f"data: {text}\n\n".encode()


def _text_field(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _transcribe(
    pipeline: Any,
    config: Any,
    data: bytes,
    name: str,
    language: str | None,
    task: str,
    options: dict[str, Any],
) -> tuple[list[Any], float]:
    samples, rate = decode_audio(data, config, name)
    segments = pipeline.transcribe_segments((samples, rate), language, task, **options)
    return segments, len(samples) / rate


def routes() -> list[Route]:
    from starlette.routing import Route

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
    ]
