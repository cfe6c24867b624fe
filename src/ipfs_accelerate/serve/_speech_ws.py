"""``/v1/audio/stream``: live transcription over a WebSocket, on
:meth:`SpeechRecognizer.transcribe_stream`.

Framing (documented in docs/server.md):

* Query parameters: ``model`` (required), ``sample_rate`` (Hz, default 16000, within the
  server's sampling-rate bounds), ``channels`` (1..8, default 1), ``format`` (``s16le``,
  the default, or ``f32le``), ``language`` (default: detected), ``task``
  (``transcribe``/``translate``).
* Client to server: binary frames of interleaved little-endian PCM in that format, any
  whole number of sample frames (at most ``max_frame_seconds`` of audio per frame); a text
  frame ``{"type": "end"}`` ends the audio.
* Server to client: JSON text frames ``{"type": "transcript.committed" |
  "transcript.tentative" | "transcript.done", "text", "start", "end", "words": [{"word",
  "start", "end"}]}``; after ``transcript.done`` the server closes with 1000.
* Errors: ``{"type": "error", "error": {"message", "type", "param", "code"}}`` then a close:
  1008 for a bad parameter or frame (a text frame other than ``end``, a partial sample
  frame, too long a frame), 1011 when decoding fails. A client that goes away mid-stream
  ends the decoding at the next chunk.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import ServeError, brief, error_body
from ._state import state_of

if TYPE_CHECKING:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

__all__ = ["routes"]

_FORMATS: dict[str, np.dtype[Any]] = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
#: the most audio one binary frame may carry
max_frame_seconds = 10.0


def _int_param(params: Any, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ServeError(
            "invalid_request",
            f"'{name}' must be an integer from {low} to {high}, got {brief(raw)}",
            param=name,
        )
    return value


def _event(kind: str, event: Any) -> str:
    words = [{"word": w.text.strip(), "start": w.start, "end": w.end} for w in event.words]
    body = {
        "type": f"transcript.{kind}",
        "text": event.text,
        "start": round(event.start, 3),
        "end": round(event.end, 3),
        "words": words,
    }
    return json.dumps(body, ensure_ascii=False, allow_nan=False)


async def audio_stream(websocket: WebSocket) -> None:
    from starlette.websockets import WebSocketDisconnect

    from ipfs_accelerate.errors import IpfsAccelerateError
    from ipfs_accelerate.models.pipelines._speech_stream import LocalAgreementStream

    state = state_of(websocket)  # type: ignore[arg-type]
    await websocket.accept()

    async def fail(error: ServeError, code: int) -> None:
        _, raw = error_body(error, "openai")
        await websocket.send_text(json.dumps({"type": "error", **json.loads(raw)}))
        await websocket.close(code)

    params = websocket.query_params
    try:
        model = state.model(params.get("model"), "speech-recognition")
        config = state.config
        rate = _int_param(
            params, "sample_rate", 16000, config.min_sampling_rate, config.max_sampling_rate
        )
        channels = _int_param(params, "channels", 1, 1, 8)
        fmt = params.get("format", "s16le")
        if fmt not in _FORMATS:
            raise ServeError(
                "invalid_request",
                f"'format' must be s16le or f32le, got {brief(fmt)}",
                param="format",
            )
        dtype = _FORMATS[fmt]
        task = params.get("task", "transcribe")
        language = params.get("language") or None
        stream = LocalAgreementStream(model.pipeline, rate, language, task)
        if language is not None:
            model.pipeline._language_id(language)
        model.pipeline._task_id(task)
    except ServeError as error:
        await fail(error, 1008)
        return
    except IpfsAccelerateError as exc:
        await fail(ServeError("invalid_request", str(exc)), 1008)
        return
    frame_bytes = dtype.itemsize * channels
    limit = int(max_frame_seconds * rate) * frame_bytes
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data, text = message.get("bytes"), message.get("text")
            if text is not None:
                try:
                    ended = json.loads(text).get("type") == "end"
                except (ValueError, AttributeError):
                    ended = False
                if not ended:
                    raise ServeError(
                        "invalid_request",
                        'text frames carry only {"type": "end"}; audio goes in binary frames',
                        param="frame",
                    )
                events = await state.call(model, stream.finish)
            else:
                if data is None or len(data) % frame_bytes or len(data) > limit:
                    raise ServeError(
                        "invalid_request",
                        f"a binary frame must hold whole {channels}-channel {fmt} sample frames"
                        f" ({frame_bytes} bytes each), at most {max_frame_seconds:g} s; got "
                        f"{len(data or b'')} bytes",
                        param="frame",
                    )
                samples = np.frombuffer(data, dtype=dtype).reshape(-1, channels)
                chunk = samples[:, 0] if channels == 1 else samples
                events = await state.call(model, stream.feed, chunk)
            for event in events:
                if event.type == "done":
                    done = {"type": "transcript.done", "text": event.text}
                    await websocket.send_text(json.dumps(done, ensure_ascii=False))
                    await websocket.close(1000)
                    return
                await websocket.send_text(_event(event.type, event))
    except WebSocketDisconnect:
        return
    except ServeError as error:
        await fail(error, 1008 if error.kind == "invalid_request" else 1011)


def routes() -> list[WebSocketRoute]:
    from starlette.routing import WebSocketRoute

    return [WebSocketRoute("/v1/audio/stream", audio_stream)]
