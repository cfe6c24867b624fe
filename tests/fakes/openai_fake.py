"""The OpenAI REST protocol, as api.openai.com speaks it, plus its compatible servers' dialects.

:class:`OpenAIFake` answers ``{prefix}/chat/completions`` (JSON, or SSE ``data: {chunk}``
events ending with ``data: [DONE]``; with ``stream_options.include_usage`` a last chunk with
empty ``choices`` and ``usage``), ``/embeddings``, ``/models``, ``/images/generations``,
``/audio/speech``, ``/audio/transcriptions`` (multipart), ``/moderations`` and ``/files``,
and the multipart ``/images/edits`` (``image``, or ``image[]`` repeated, plus ``mask``),
``/images/variations`` and ``/audio/translations``, which refuse a body that is not
multipart/form-data and a field the route does not take, as the API does.
Errors use OpenAI's body ``{"error": {"message", "type", "param", "code"}}`` and an
``x-request-id`` header; a wrong key gets 401 ``invalid_api_key``.

The model's behaviour is deterministic: it answers ``"Echo: <last user text>"``; when tools are
offered and the last message is the user's, it calls the first tool with
``{"query": <text>}``; after a tool message it answers ``"Tool said: <content>"``.

Dialects (constructor flags) cover the compatible servers: Groq (``/openai/v1``, usage in
``x_groq``), vLLM (flat error object, LoRA routes, ``/health``), MLC-LLM, Ollama's ``/v1``,
OVMS ``/v3``, TGI's Messages API (``{"error", "error_type"}`` bodies).
"""

from __future__ import annotations

import base64
import email.policy
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from email.parser import BytesParser
from typing import Any

from aiohttp import web

from ._server import FakeServer, fake_embedding, word_count

__all__ = ["OpenAIFake", "add_openai_routes", "reply_for"]


def parse_form(request: web.Request, body: bytes) -> dict[str, Any]:
    """multipart/form-data fields: name -> str, or (filename, bytes) for files."""
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + request.headers.get("Content-Type", "").encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        fields[str(name)] = (filename, payload) if filename is not None else payload.decode()
    return fields


@dataclass(frozen=True)
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    payload: bytes


def parse_form_parts(request: web.Request, body: bytes) -> list[FormPart] | None:
    """Every multipart/form-data part in order (repeated names such as ``image[]`` kept), or
    None when the request is not multipart/form-data."""
    if not request.headers.get("Content-Type", "").startswith("multipart/form-data"):
        return None
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + request.headers.get("Content-Type", "").encode() + b"\r\n\r\n" + body
    )
    parts = []
    for part in message.iter_parts():
        filename = part.get_filename()
        parts.append(
            FormPart(
                str(part.get_param("name", header="content-disposition")),
                filename,
                part.get_content_type() if filename is not None else None,
                part.get_payload(decode=True) or b"",
            )
        )
    return parts


#: the fields each multipart image/audio route takes (anything else: "Unrecognized request
#: argument"), as OpenAI's API reference lists them
_FORM_FIELDS = {
    "images/edits": {"image", "image[]", "mask", "prompt", "model", "n", "size",
                     "response_format", "quality", "background", "output_format",
                     "output_compression", "input_fidelity", "user"},
    "images/variations": {"image", "model", "n", "size", "response_format", "user"},
    "audio/translations": {"file", "model", "prompt", "response_format", "temperature"},
}  # fmt: skip
_PNG = b"\x89PNG\r\n\x1a\n"


def _image_format(data: bytes) -> str | None:
    if data.startswith(_PNG):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def reply_for(
    messages: list[dict[str, Any]], tools: list[Any] | None
) -> tuple[str | None, dict[str, Any] | None]:
    """(text, tool_call) the fake model produces for a conversation."""
    last = messages[-1] if messages else {"role": "user", "content": ""}
    if last.get("role") == "tool":
        return f"Tool said: {_text(last.get('content'))}", None
    user_text = _text(last.get("content"))
    if tools:
        function = tools[0].get("function", tools[0])
        return None, {"name": function.get("name", "tool"), "arguments": {"query": user_text}}
    return f"Echo: {user_text}", None


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(word_count(_text(m.get("content"))) for m in messages) or 1


def split_words(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def add_openai_routes(
    server: FakeServer,
    app: web.Application,
    prefix: str,
    *,
    embeddings: bool = True,
    surfaces: bool = False,
) -> None:
    """Install the OpenAI chat/embeddings/models routes of ``server`` under ``prefix``."""
    app.router.add_post(f"{prefix}/chat/completions", server.chat_completions)  # type: ignore[attr-defined]
    if embeddings:
        app.router.add_post(f"{prefix}/embeddings", server.embeddings)  # type: ignore[attr-defined]
    app.router.add_get(f"{prefix}/models", server.models)  # type: ignore[attr-defined]
    if surfaces:
        app.router.add_post(f"{prefix}/images/generations", server.images)  # type: ignore[attr-defined]
        app.router.add_post(f"{prefix}/images/edits", server.image_edits)  # type: ignore[attr-defined]
        app.router.add_post(f"{prefix}/images/variations", server.image_variations)  # type: ignore[attr-defined]
        app.router.add_post(f"{prefix}/audio/translations", server.translations)  # type: ignore[attr-defined]
        app.router.add_post(f"{prefix}/audio/speech", server.speech)  # type: ignore[attr-defined]
        app.router.add_post(f"{prefix}/audio/transcriptions", server.transcriptions)  # type: ignore[attr-defined]
        app.router.add_post(f"{prefix}/moderations", server.moderations)  # type: ignore[attr-defined]
        app.router.add_post(f"{prefix}/files", server.upload_file)  # type: ignore[attr-defined]
        app.router.add_get(f"{prefix}/files", server.list_files)  # type: ignore[attr-defined]
        app.router.add_get(prefix + "/files/{file_id}", server.get_file)  # type: ignore[attr-defined]
        app.router.add_delete(prefix + "/files/{file_id}", server.delete_file)  # type: ignore[attr-defined]
        app.router.add_get(prefix + "/files/{file_id}/content", server.file_content)  # type: ignore[attr-defined]


class OpenAIFake(FakeServer):
    provider = "openai"

    def __init__(
        self,
        api_key: str | None = "sk-test-123",
        *,
        prefix: str = "/v1",
        models: tuple[str, ...] = (
            "gpt-4o-mini",
            "text-embedding-3-small",
            "dall-e-3",
            "tts-1",
            "whisper-1",
        ),
        error_style: str = "openai",  # openai | vllm | tgi | ollama | mlc | ovms
        usage_style: str = "chunk",  # chunk | x_groq
        embeddings: bool = True,
        surfaces: bool = True,
        owned_by: str = "openai",
        chunk_delay: float = 0.0,  # seconds after each stream event (a slow model)
    ) -> None:
        self.prefix = prefix
        self.known_models = list(models)
        self.error_style = error_style
        self.usage_style = usage_style
        self.embeddings_enabled = embeddings
        self.surfaces = surfaces
        self.owned_by = owned_by
        self.chunk_delay = chunk_delay
        self.files: dict[str, dict[str, Any]] = {}
        self.file_data: dict[str, bytes] = {}
        super().__init__(api_key)

    def setup_routes(self, app: web.Application) -> None:
        add_openai_routes(
            self, app, self.prefix, embeddings=self.embeddings_enabled, surfaces=self.surfaces
        )

    # ------------------------------------------------------------------ errors

    def error_body(self, status: int, message: str, kind: str | None = None) -> Any:
        if self.error_style == "vllm" or self.error_style == "mlc":
            return {
                "object": "error",
                "message": message,
                "type": kind or "BadRequestError",
                "param": None,
                "code": status,
            }
        if self.error_style in ("tgi",):
            return {"error": message, "error_type": kind or "validation"}
        if self.error_style in ("ollama", "ovms"):
            return {"error": message}
        kinds = {
            400: "invalid_request_error",
            401: "invalid_request_error",
            404: "invalid_request_error",
            429: "rate_limit_exceeded",
            500: "server_error",
            503: "server_error",
        }
        return {
            "error": {
                "message": message,
                "type": kind or kinds.get(status, "server_error"),
                "param": None,
                "code": None,
            }
        }

    def _auth_error(self, request: web.Request) -> web.Response | None:
        if self.bearer_ok(request):
            return None
        given = request.headers.get("Authorization", "")
        shown = given[7:11] + "*" * 8 + given[-4:] if len(given) > 15 else "(none)"
        body = self.error_body(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
        )
        if isinstance(body.get("error"), dict):
            body["error"]["code"] = "invalid_api_key"
        return web.json_response(body, status=401, headers=self._headers())

    def _model_error(self, model: Any) -> web.Response | None:
        if model in self.known_models or (self.known_models and self.known_models[0] == "*"):
            return None
        body = self.error_body(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
        )
        if isinstance(body.get("error"), dict):
            body["error"]["code"] = "model_not_found"
        return web.json_response(body, status=404, headers=self._headers())

    async def _body(
        self, request: web.Request
    ) -> tuple[dict[str, Any] | None, web.Response | None]:
        denied = self._auth_error(request)
        if denied is not None:
            return None, denied
        try:
            body = json.loads(await request.read())
        except ValueError:
            return None, self.error_response(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
        if not isinstance(body, dict):
            return None, self.error_response(
                400, "Request body must be an object.", "invalid_request_error"
            )
        return body, None

    # ------------------------------------------------------------------ chat

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._body(request)
        if error is not None:
            return error
        assert body is not None
        for name in ("model", "messages"):
            if name not in body:
                return self.error_response(
                    400, f"Missing required parameter: '{name}'.", "invalid_request_error"
                )
        if not isinstance(body["messages"], list) or not body["messages"]:
            return self.error_response(
                400, "Invalid 'messages': empty array.", "invalid_request_error"
            )
        model_error = self._model_error(body["model"])
        if model_error is not None:
            return model_error
        text, call = reply_for(body["messages"], body.get("tools"))
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        p_tokens = prompt_tokens(body["messages"])
        c_tokens = word_count(text) if text else 3
        usage = {
            "prompt_tokens": p_tokens,
            "completion_tokens": c_tokens,
            "total_tokens": p_tokens + c_tokens,
        }
        finish = "tool_calls" if call else "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if text and isinstance(max_tokens, int) and max_tokens < c_tokens:
            text = " ".join(text.split(" ")[:max_tokens])
            finish = "length"
            usage["completion_tokens"] = max_tokens
            usage["total_tokens"] = p_tokens + max_tokens
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
            if call:
                message["tool_calls"] = [
                    {
                        "id": "call_" + uuid.uuid4().hex[:12],
                        "type": "function",
                        "function": {
                            "name": call["name"],
                            "arguments": json.dumps(call["arguments"]),
                        },
                    }
                ]
            data = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": usage,
                "system_fingerprint": "fp_fake",
            }
            return self.json_response(data)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }

        def chunk(delta: dict[str, Any], reason: str | None = None, **extra: Any) -> bytes:
            payload = {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
                ],
                **extra,
            }
            if include_usage and self.usage_style == "chunk":
                payload["usage"] = None
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if call:
            call_id = "call_" + uuid.uuid4().hex[:12]
            args = json.dumps(call["arguments"])
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": call["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for i in range(0, len(args), 7):
                events.append(
                    chunk(
                        {"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 7]}}]}
                    )
                )
        else:
            for word in split_words(text or ""):
                events.append(chunk({"content": word}))
        if self.usage_style == "x_groq":
            events.append(
                chunk({}, finish, x_groq={"id": "req_fake", "usage": {**usage, "queue_time": 0.01}})
            )
        else:
            events.append(chunk({}, finish))
            if include_usage:
                events.append(
                    b"data: "
                    + json.dumps({**base, "choices": [], "usage": usage}).encode()
                    + b"\n\n"
                )
        error_event = (
            b"data: "
            + json.dumps(
                {
                    "error": {
                        "message": "The server had an error while processing your request.",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                }
            ).encode()
            + b"\n\n"
        )
        return await self.emit(
            request,
            events,
            b"data: [DONE]\n\n",
            error_event=error_event,
            event_delay=self.chunk_delay,
        )

    # ------------------------------------------------------------------ embeddings, models

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._body(request)
        if error is not None:
            return error
        assert body is not None
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(x, str) for x in inputs)
        ):
            return self.error_response(
                400,
                "'input' : input must be a string or an array of strings",
                "invalid_request_error",
            )
        model_error = self._model_error(body.get("model"))
        if model_error is not None:
            return model_error
        dims = int(body.get("dimensions") or 8)
        tokens = sum(word_count(x) for x in inputs)
        data = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": fake_embedding(x, dims)}
                for i, x in enumerate(inputs)
            ],
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return self.json_response(data)

    def model_cards(self) -> list[dict[str, Any]]:
        return [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": self.owned_by}
            for m in self.known_models
        ]

    async def models(self, request: web.Request) -> web.StreamResponse:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        return self.json_response({"object": "list", "data": self.model_cards()})

    # ------------------------------------------------------------------ other surfaces

    async def images(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._body(request)
        if error is not None:
            return error
        assert body is not None
        if not body.get("prompt"):
            return self.error_response(400, "Missing required parameter: 'prompt'.")
        n = int(body.get("n", 1))
        if body.get("response_format") == "b64_json":
            items = [
                {"b64_json": "aW1hZ2U=", "revised_prompt": f"{body['prompt']} (revised)"}
                for _ in range(n)
            ]
        else:
            items = [
                {
                    "url": f"https://images.example/{i}.png",
                    "revised_prompt": f"{body['prompt']} (revised)",
                }
                for i in range(n)
            ]
        return self.json_response({"created": 1700000000, "data": items})

    async def _form(
        self, request: web.Request, route: str
    ) -> tuple[dict[str, list[FormPart]], web.Response | None]:
        """The parts of a multipart route by name, or OpenAI's 400 for a body that is not
        multipart/form-data or holds a field the route does not take."""
        denied = self._auth_error(request)
        if denied is not None:
            return {}, denied
        parts = parse_form_parts(request, await request.read())
        if parts is None:
            kind = request.headers.get("Content-Type", "none")
            return {}, self.error_response(
                400, f"Invalid Content-Type header ({kind}), expected multipart/form-data.",
                "invalid_request_error",
            )  # fmt: skip
        by_name: dict[str, list[FormPart]] = {}
        for part in parts:
            if part.name not in _FORM_FIELDS[route]:
                return {}, self.error_response(
                    400, f"Unrecognized request argument supplied: {part.name}",
                    "invalid_request_error",
                )  # fmt: skip
            by_name.setdefault(part.name, []).append(part)
        return by_name, None

    def _form_error(self, message: str) -> web.Response:
        return self.error_response(400, message, "invalid_request_error")

    def _image_items(
        self, kind: str, fields: dict[str, list[FormPart]], images: list[FormPart]
    ) -> web.Response:
        """n results; ``b64_json`` holds ``<kind>:<prompt>:<sha256 of each image, 12 hex>``
        so a test can tell the images and the prompt arrived intact."""
        n_text = fields["n"][0].payload.decode() if "n" in fields else "1"
        if not n_text.isdigit() or not 1 <= int(n_text) <= 10:
            return self._form_error(f"Invalid 'n': expected an integer from 1 to 10, got {n_text}")
        prompt = fields["prompt"][0].payload.decode() if "prompt" in fields else ""
        digests = ",".join(hashlib.sha256(i.payload).hexdigest()[:12] for i in images)
        mark = f"{kind}:{prompt}:{digests}"
        if "mask" in fields:
            mark += f":mask={hashlib.sha256(fields['mask'][0].payload).hexdigest()[:12]}"
        response_format = (
            fields["response_format"][0].payload.decode() if "response_format" in fields else "url"
        )
        if response_format == "b64_json":
            encoded = base64.b64encode(mark.encode()).decode()
            items = [{"b64_json": encoded} for _ in range(int(n_text))]
        else:
            items = [{"url": f"https://images.example/{kind}-{i}.png"} for i in range(int(n_text))]
        return self.json_response({"created": 1700000000, "data": items})

    async def image_edits(self, request: web.Request) -> web.StreamResponse:
        fields, error = await self._form(request, "images/edits")
        if error is not None:
            return error
        images = fields.get("image", []) + fields.get("image[]", [])
        if not images or any(i.filename is None for i in images):
            return self._form_error("Missing required parameter: 'image'.")
        if "prompt" not in fields or not fields["prompt"][0].payload:
            return self._form_error("Missing required parameter: 'prompt'.")
        model = fields["model"][0].payload.decode() if "model" in fields else "dall-e-2"
        if model == "dall-e-2":
            # one square-ish PNG (and an optional PNG mask) of at most 4 MB
            if len(images) != 1:
                return self._form_error("dall-e-2 takes one image; got " + str(len(images)))
            checked = [images[0], *fields.get("mask", [])]
            if any(_image_format(i.payload) != "png" or len(i.payload) > 4 << 20 for i in checked):
                return self._form_error("Uploaded image must be a PNG and less than 4 MB.")
        elif len(images) > 16 or any(_image_format(i.payload) is None for i in images):
            return self._form_error("Invalid image: up to 16 png, webp or jpg images.")
        return self._image_items("edit", fields, images)

    async def image_variations(self, request: web.Request) -> web.StreamResponse:
        fields, error = await self._form(request, "images/variations")
        if error is not None:
            return error
        images = fields.get("image", [])
        if len(images) != 1 or images[0].filename is None:
            return self._form_error("Missing required parameter: 'image'.")
        if _image_format(images[0].payload) != "png" or len(images[0].payload) > 4 << 20:
            return self._form_error("Uploaded image must be a PNG and less than 4 MB.")
        return self._image_items("variation", fields, images)

    async def translations(self, request: web.Request) -> web.StreamResponse:
        fields, error = await self._form(request, "audio/translations")
        if error is not None:
            return error
        if "file" not in fields or fields["file"][0].filename is None:
            return self._form_error("Missing required parameter: 'file'.")
        if "model" not in fields:
            return self._form_error("Missing required parameter: 'model'.")
        file = fields["file"][0]
        text = f"translated {len(file.payload)} bytes from {file.filename} into English"
        if "prompt" in fields:
            text += f" (prompt: {fields['prompt'][0].payload.decode()})"
        response_format = (
            fields["response_format"][0].payload.decode() if "response_format" in fields else "json"
        )
        if response_format == "text":
            return web.Response(text=text, content_type="text/plain", headers=self._headers())
        return self.json_response({"text": text})

    async def speech(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._body(request)
        if error is not None:
            return error
        assert body is not None
        if not body.get("input") or not body.get("voice"):
            return self.error_response(400, "Missing required parameter: 'input' or 'voice'.")
        audio = b"ID3fake-mp3:" + body["input"].encode()
        return web.Response(body=audio, content_type="audio/mpeg", headers=self._headers())

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        fields = parse_form(request, await request.read())
        if "file" not in fields or "model" not in fields:
            return self.error_response(400, "Missing required parameter: 'file'.")
        filename, data = fields["file"]
        text = f"transcribed {len(data)} bytes from {filename}"
        if fields.get("response_format") == "text":
            return web.Response(text=text, content_type="text/plain", headers=self._headers())
        return self.json_response(
            {"text": text, "language": fields.get("language", "english"), "duration": 1.5}
        )

    async def moderations(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._body(request)
        if error is not None:
            return error
        assert body is not None
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        results = []
        for text in inputs or []:
            bad = "kill" in text.lower()
            results.append(
                {
                    "flagged": bad,
                    "categories": {"violence": bad, "hate": False},
                    "category_scores": {"violence": 0.97 if bad else 0.01, "hate": 0.001},
                }
            )
        return self.json_response(
            {
                "id": "modr-fake",
                "model": body.get("model", "omni-moderation-latest"),
                "results": results,
            }
        )

    async def upload_file(self, request: web.Request) -> web.StreamResponse:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        fields = parse_form(request, await request.read())
        purpose = fields.get("purpose")
        filename, data = fields.get("file", (None, b""))
        if not purpose or filename is None:
            return self.error_response(400, "Missing required parameter: 'purpose' or 'file'.")
        file_id = "file-" + uuid.uuid4().hex[:20]
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": 1700000000,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self.files[file_id] = obj
        self.file_data[file_id] = data
        return self.json_response(obj)

    async def list_files(self, request: web.Request) -> web.StreamResponse:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        purpose = request.query.get("purpose")
        items = [f for f in self.files.values() if purpose is None or f["purpose"] == purpose]
        return self.json_response({"object": "list", "data": items, "has_more": False})

    def _file_or_404(self, request: web.Request) -> tuple[str, web.Response | None]:
        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            return file_id, self.error_response(
                404, f"No such File object: {file_id}", "invalid_request_error"
            )
        return file_id, None

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        file_id, missing = self._file_or_404(request)
        return missing or self.json_response(self.files[file_id])

    async def delete_file(self, request: web.Request) -> web.StreamResponse:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        file_id, missing = self._file_or_404(request)
        if missing:
            return missing
        del self.files[file_id]
        self.file_data.pop(file_id, None)
        return self.json_response({"id": file_id, "object": "file", "deleted": True})

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        file_id, missing = self._file_or_404(request)
        if missing:
            return missing
        return web.Response(
            body=self.file_data[file_id],
            content_type="application/octet-stream",
            headers=self._headers(),
        )
