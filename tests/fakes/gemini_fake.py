"""Google's Generative Language API (v1beta) as generativelanguage.googleapis.com speaks it.

``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent?alt=sse`` (each SSE
event a whole GenerateContentResponse, lines ended with CRLF, no terminator; the last chunk
has ``finishReason``), ``:batchEmbedContents``, ``GET /v1beta/models`` (``pageSize`` /
``pageToken``). The key must be in the ``x-goog-api-key`` header; a ``?key=`` query parameter
is recorded in ``keys_in_url`` (tests assert it stays empty). Errors:
``{"error": {"code", "message", "status", "details"}}``; a 429 can carry a RetryInfo detail.

Every ``Part`` of ``contents`` is checked as the API checks it (proto3 JSON: a field in
lowerCamelCase or its snake_case proto name): exactly one data field; ``inlineData`` needs
``mimeType`` (one of the types Gemini takes) and ``data`` in base64 (standard or URL-safe);
``fileData`` needs ``fileUri`` and may carry ``mimeType``; an unknown field is a 400
``Invalid JSON payload received. Unknown name``. The media parts received are kept in
``media`` (decoded bytes or the URI), and the echo names each one: ``Echo: <text> [image/png
8 bytes] [application/pdf gs://b/doc.pdf]``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from ._server import FakeServer, fake_embedding, word_count

__all__ = ["GeminiFake"]

_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


#: the MIME types generateContent takes inline or by URI (images, audio, video, documents)
SUPPORTED_MIME = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "audio/wav",
     "audio/mp3", "audio/mpeg", "audio/aiff", "audio/aac", "audio/ogg", "audio/flac",
     "video/mp4", "video/mpeg", "video/webm", "application/pdf", "text/plain"}
)  # fmt: skip
_DATA_FIELDS = {
    "text": "text",
    "inlineData": "inlineData",
    "inline_data": "inlineData",
    "fileData": "fileData",
    "file_data": "fileData",
    "functionCall": "functionCall",
    "function_call": "functionCall",
    "functionResponse": "functionResponse",
    "function_response": "functionResponse",
}
_PART_EXTRAS = {"thought", "thoughtSignature", "thought_signature", "videoMetadata"}
_BLOB_FIELDS = {"mimeType": "mimeType", "mime_type": "mimeType", "data": "data"}
_FILE_FIELDS = {"mimeType": "mimeType", "mime_type": "mimeType", "fileUri": "fileUri",
                "file_uri": "fileUri"}  # fmt: skip


class PartError(ValueError):
    """A part the real API would refuse, with the message it gives."""


def _fields(obj: Any, names: dict[str, str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise PartError(f"Invalid value at '{where}', expected an object")
    out = {}
    for key, value in obj.items():
        if key not in names:
            raise PartError(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                "Cannot find field."
            )
        out[names[key]] = value
    return out


def check_part(part: Any, where: str) -> dict[str, Any]:
    """``part`` in lowerCamelCase field names, or PartError with the API's message."""
    if not isinstance(part, dict):
        raise PartError(f"Invalid value at '{where}', expected a Part object")
    data = {k: v for k, v in part.items() if k not in _PART_EXTRAS}
    normal = _fields(data, _DATA_FIELDS, where)
    if len(normal) != 1:
        raise PartError(f"* {where}: a Part must have exactly one data field, got {sorted(part)}")
    ((field, value),) = normal.items()
    if field == "inlineData":
        blob = _fields(value, _BLOB_FIELDS, f"{where}.inline_data")
        if not blob.get("mimeType"):
            raise PartError(f"* {where}.inline_data.mime_type: mime_type is not specified")
        if blob["mimeType"] not in SUPPORTED_MIME:
            raise PartError(f"Unsupported MIME type: {blob['mimeType']}")
        try:
            # proto3 JSON bytes: standard or URL-safe base64 (google-genai sends the latter)
            text = str(blob.get("data", "")).replace("-", "+").replace("_", "/")
            blob["bytes"] = base64.b64decode(text, validate=True)
        except binascii.Error:
            raise PartError(
                f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
            ) from None
        if not blob["bytes"]:
            raise PartError(f"* {where}.inline_data.data: data is not specified")
        return {"inlineData": blob}
    if field == "fileData":
        file = _fields(value, _FILE_FIELDS, f"{where}.file_data")
        if not isinstance(file.get("fileUri"), str) or not file["fileUri"]:
            raise PartError(f"* {where}.file_data.file_uri: file_uri is not specified")
        if "mimeType" in file and file["mimeType"] not in SUPPORTED_MIME:
            raise PartError(f"Unsupported MIME type: {file['mimeType']}")
        return {"fileData": file}
    return {field: value}


def _describe(part: dict[str, Any]) -> str:
    if "inlineData" in part:
        return f"[{part['inlineData']['mimeType']} {len(part['inlineData']['bytes'])} bytes]"
    file = part["fileData"]
    return f"[{file.get('mimeType', 'unknown type')} {file['fileUri']}]"


class GeminiFake(FakeServer):
    provider = "gemini"

    def __init__(
        self,
        api_key: str | None = "AIza-test-123",
        models: tuple[str, ...] = ("gemini-2.0-flash", "gemini-1.5-pro", "text-embedding-004"),
    ) -> None:
        self.known_models = list(models)
        self.keys_in_url: list[str] = []
        #: each media part received, in lowerCamelCase, inline data decoded under "bytes"
        self.media: list[dict[str, Any]] = []
        super().__init__(api_key)

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{call}", self.model_call)
        app.router.add_get("/v1beta/models", self.models)

    def error_body(self, status: int, message: str, kind: str | None = None) -> Any:
        return {
            "error": {
                "code": status,
                "message": message,
                "status": kind or _STATUS.get(status, "UNKNOWN"),
            }
        }

    def _check_key(self, request: web.Request) -> web.Response | None:
        if "key" in request.query:
            self.keys_in_url.append(request.query["key"])
        if self.api_key is not None and request.headers.get("x-goog-api-key") != self.api_key:
            body = self.error_body(400, "API key not valid. Please pass a valid API key.")
            body["error"]["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
            ]
            return web.json_response(body, status=400)
        return None

    async def models(self, request: web.Request) -> web.StreamResponse:
        bad = self._check_key(request)
        if bad is not None:
            return bad
        size = int(request.query.get("pageSize", "50"))
        start = int(request.query.get("pageToken") or 0)
        page = self.known_models[start : start + size]
        data: dict[str, Any] = {
            "models": [
                {
                    "name": f"models/{m}",
                    "displayName": m,
                    "supportedGenerationMethods": ["generateContent"],
                }
                for m in page
            ]
        }
        if start + size < len(self.known_models):
            data["nextPageToken"] = str(start + size)
        return web.json_response(data)

    async def model_call(self, request: web.Request) -> web.StreamResponse:
        bad = self._check_key(request)
        if bad is not None:
            return bad
        model, _, method = request.match_info["call"].partition(":")
        if model not in self.known_models:
            return self.error_response(
                404,
                f"models/{model} is not found for API version v1beta, "
                f"or is not supported for {method}.",
            )
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.error_response(400, "Invalid JSON payload received.")
        if method == "batchEmbedContents":
            return self.embed(body)
        if method not in ("generateContent", "streamGenerateContent"):
            return self.error_response(404, f"method {method} not found")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return self.error_response(
                400, "* GenerateContentRequest.contents: contents is not specified"
            )
        checked: list[list[dict[str, Any]]] = []
        for index, content in enumerate(contents):
            if content.get("role") not in ("user", "model"):
                return self.error_response(
                    400, f"Please use a valid role: user, model. Got {content.get('role')!r}"
                )
            try:
                checked.append(
                    [check_part(p, f"contents[{index}].parts[{i}]")
                     for i, p in enumerate(content.get("parts") or [])]
                )  # fmt: skip
            except PartError as exc:
                return self.error_response(400, str(exc))
        last_parts = checked[-1]
        media = [p for p in last_parts if "inlineData" in p or "fileData" in p]
        self.media.extend(p.get("inlineData") or p["fileData"] for p in media)
        responses = [p["functionResponse"] for p in last_parts if "functionResponse" in p]
        user_text = "".join(p.get("text", "") for p in last_parts)
        if media:
            user_text = " ".join([user_text, *(_describe(p) for p in media)]).strip()
        call = None
        if responses:
            text: str | None = f"Tool said: {json.dumps(responses[-1]['response'])}"
        elif body.get("tools"):
            decl = body["tools"][0]["functionDeclarations"][0]
            text, call = None, {"name": decl["name"], "args": {"query": user_text}}
        else:
            text = f"Echo: {user_text}"
        prompt = sum(word_count(p.get("text", "")) for c in contents for p in c["parts"]) or 1
        out = word_count(text) if text else 4
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": out,
            "totalTokenCount": prompt + out,
        }
        max_out = (body.get("generationConfig") or {}).get("maxOutputTokens")
        finish = "STOP"
        if text and isinstance(max_out, int) and max_out < out:
            text, finish = " ".join(text.split(" ")[:max_out]), "MAX_TOKENS"
            usage["candidatesTokenCount"] = max_out
        if method == "generateContent":
            parts: list[dict[str, Any]] = (
                [{"text": text}] if text is not None else [{"functionCall": call}]
            )
            return web.json_response(
                {
                    "candidates": [
                        {
                            "content": {"parts": parts, "role": "model"},
                            "finishReason": finish,
                            "index": 0,
                        }
                    ],
                    "usageMetadata": usage,
                    "modelVersion": model,
                    "responseId": "resp-fake-1",
                }
            )
        if request.query.get("alt") != "sse":
            return self.error_response(400, "streaming needs alt=sse in this fake")
        events = []
        if text is not None:
            words = text.split(" ")
            for i, word in enumerate(words):
                piece = word + (" " if i < len(words) - 1 else "")
                chunk: dict[str, Any] = {
                    "candidates": [
                        {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
                    ],
                    "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                    "modelVersion": model,
                }
                if i == len(words) - 1:
                    chunk["candidates"][0]["finishReason"] = finish
                    chunk["usageMetadata"] = usage
                events.append(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
        else:
            chunk = {
                "candidates": [
                    {
                        "content": {"parts": [{"functionCall": call}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": usage,
                "modelVersion": model,
            }
            events.append(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
        error_event = (
            b"data: "
            + json.dumps(
                self.error_body(503, "The model is overloaded. Please try again later.")
            ).encode()
            + b"\r\n\r\n"
        )
        # Gemini's stream has no terminator: the truncate fault drops the finishReason chunk
        return await self.emit(request, events, None, error_event=error_event)

    def embed(self, body: dict[str, Any]) -> web.Response:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return self.error_response(
                400, "* BatchEmbedContentsRequest.requests: requests is not specified"
            )
        vectors = []
        for item in requests:
            text = "".join(p.get("text", "") for p in item["content"]["parts"])
            dims = item.get("outputDimensionality", 8)
            vectors.append({"values": fake_embedding(text, dims)})
        return web.json_response({"embeddings": vectors})
