"""Google's Gemini API (Generative Language API, ``v1beta``).

``POST /models/{model}:generateContent`` and ``POST /models/{model}:streamGenerateContent?alt=sse``
(SSE, each event a whole ``GenerateContentResponse``; no terminator: the stream is complete
when a candidate carries ``finishReason``, else StreamInterruptedError);
``POST /models/{model}:batchEmbedContents``; ``GET /models`` (paginated). The key travels in
the ``x-goog-api-key`` header, never in the URL (URLs end up in logs).

OpenAI-style messages are translated: ``system`` -> ``systemInstruction``; ``assistant`` ->
role ``model``; assistant ``tool_calls`` -> ``functionCall`` parts; ``tool`` messages ->
``functionResponse`` parts (the function name is taken from the matching earlier call).
Options ``temperature``, ``top_p``, ``top_k``, ``max_tokens``, ``stop``, ``seed`` map into
``generationConfig``; ``tools`` / ``tool_choice`` into ``tools`` / ``toolConfig``.
A 429 with a ``google.rpc.RetryInfo`` detail is retried after its ``retryDelay``.

Configuration: ``metadata["api_key"]`` / ``gemini_api_key`` / ``$GEMINI_API_KEY`` /
``$GOOGLE_API_KEY`` (required); ``metadata["base_url"]`` (default
``https://generativelanguage.googleapis.com/v1beta``).
"""

from __future__ import annotations

import binascii
import json
import mimetypes
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from ipfs_accelerate.errors import InvalidArgumentError, ProtocolError, StreamInterruptedError

from ._base import APIBackend, ensure_text_list
from ._errors import _message_from_json, status_error_class
from ._parse import (
    ToolCallAccumulator,
    as_int,
    content_text,
    final_chunk,
    need,
    normalise_messages,
    number_vectors,
    opt,
    parse_arguments,
)
from ._streams import SSEDecoder, excerpt
from ._transport import HTTPRequest, RawResponse
from ._types import ChatChunk, ChatResponse, EmbeddingResponse, ModelInfo, ToolCall, Usage

__all__ = ["GeminiBackend"]

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "LANGUAGE": "error",
    "OTHER": "error",
}
_GENERATION_OPTIONS = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "max_tokens": "maxOutputTokens",
    "max_output_tokens": "maxOutputTokens",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "response_mime_type": "responseMimeType",
    "response_schema": "responseSchema",
    "candidate_count": "candidateCount",
}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)s\s*$")


def _model_path(model: str) -> str:
    name = model[len("models/") :] if model.startswith("models/") else model
    if not name:
        raise InvalidArgumentError(f"gemini: model name must not be empty, got {model!r}")
    return "/models/" + quote(name, safe="-._")


#: OpenAI's ``input_audio`` formats and the MIME types Gemini takes for them
_AUDIO_FORMATS = {
    "wav": "audio/wav",
    "mp3": "audio/mp3",
    "aiff": "audio/aiff",
    "aac": "audio/aac",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
}
#: parts that are already Gemini's own (passed through as given)
_NATIVE_PART_KEYS = frozenset(
    {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
     "codeExecutionResult", "inline_data", "file_data"}
)  # fmt: skip


def _mime(value: Any, where: str, provider: str) -> str:
    """A MIME type as ``type/subtype`` (parameters allowed), else InvalidArgumentError."""
    if not isinstance(value, str) or not re.fullmatch(r"[\w.+-]+/[\w.+-]+(;.*)?", value.strip()):
        raise InvalidArgumentError(f"{provider}: {where}: not a MIME type: {value!r}")
    return value.strip()


def _base64(data: Any, where: str, provider: str) -> str:
    """``data`` checked to be base64, standard or URL-safe (what ``inlineData.data`` holds)."""
    if not isinstance(data, str) or not data:
        raise InvalidArgumentError(f"{provider}: {where}: base64 data must be a non-empty string")
    try:
        # proto3 JSON takes standard or URL-safe base64 for bytes
        normal = data.replace("-", "+").replace("_", "/")
        binascii.a2b_base64(normal.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidArgumentError(
            f"{provider}: {where}: data is not valid base64 (starts {data[:16]!r})"
        ) from None
    return data


def _inline(mime: str, data: str) -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": data}}


def _from_url(url: Any, mime: Any, where: str, provider: str) -> dict[str, Any]:
    """A ``data:`` URL as an ``inlineData`` part; any other URL (``gs://``, ``https://``, a
    Files API URI) as a ``fileData`` part, its MIME type given or guessed from the name."""
    if not isinstance(url, str) or not url:
        raise InvalidArgumentError(f"{provider}: {where}: needs a URL, got {url!r}")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        if not sep or not header.endswith(";base64"):
            raise InvalidArgumentError(
                f"{provider}: {where}: a data URL must be data:<mime>;base64,<data>, got "
                f"{url[:40]!r}"
            )
        type_ = _mime(mime or header[: -len(";base64")], where, provider)
        return _inline(type_, _base64(data, where, provider))
    file_data: dict[str, Any] = {"fileUri": url}
    guessed = mime or mimetypes.guess_type(url.split("?", 1)[0])[0]
    if guessed:
        file_data["mimeType"] = _mime(guessed, where, provider)
    return {"fileData": file_data}


def _part(part: Any, where: str, provider: str) -> dict[str, Any]:
    """One OpenAI-style content part (``text``, ``image_url``, ``input_audio``, ``file``) or
    a Gemini part given as is, in Gemini's ``Part`` shape."""
    if isinstance(part, str):
        return {"text": part}
    if not isinstance(part, Mapping):
        raise InvalidArgumentError(
            f"{provider}: {where}: a content part is an object, got {part!r}"
        )
    kind = part.get("type")
    if kind is None:
        if len(_NATIVE_PART_KEYS & set(part)) != 1:
            raise InvalidArgumentError(
                f"{provider}: {where}: a part without 'type' must be a Gemini part with exactly "
                f"one of {', '.join(sorted(k for k in _NATIVE_PART_KEYS if '_' not in k))}; got "
                f"keys {sorted(part)}"
            )
        return dict(part)
    if kind == "text":
        return {"text": str(part.get("text", ""))}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        mime = image.get("mime_type") if isinstance(image, Mapping) else None
        return _from_url(url, mime, where, provider)
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, Mapping):
            raise InvalidArgumentError(f"{provider}: {where}: input_audio must be an object")
        audio_format = audio.get("format")
        if audio_format not in _AUDIO_FORMATS:
            raise InvalidArgumentError(
                f"{provider}: {where}: input_audio format must be one of "
                f"{', '.join(_AUDIO_FORMATS)}, got {audio_format!r}"
            )
        return _inline(_AUDIO_FORMATS[audio_format], _base64(audio.get("data"), where, provider))
    if kind == "file":
        file = part.get("file")
        if not isinstance(file, Mapping):
            raise InvalidArgumentError(f"{provider}: {where}: file must be an object")
        mime = file.get("mime_type")
        if file.get("file_data") is not None:
            return _from_url(file["file_data"], mime, where, provider)
        uri = file.get("file_uri") or file.get("file_id")
        return _from_url(uri, mime, where, provider)
    raise InvalidArgumentError(
        f"{provider}: {where}: unsupported content part type {kind!r} (text, image_url, "
        "input_audio, file, or a Gemini part without 'type')"
    )


def _parts(content: Any, where: str = "content", provider: str = "gemini") -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if content is None:
        return []
    if not isinstance(content, Sequence):
        raise InvalidArgumentError(
            f"{provider}: {where}: content must be a string or a list of parts, got "
            f"{type(content).__name__}"
        )
    return [_part(part, f"{where}[{i}]", provider) for i, part in enumerate(content)]


def convert_messages(
    messages: Any, provider: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names_by_id: dict[str, str] = {}

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for index, message in enumerate(normalise_messages(messages, provider)):
        role = message["role"]
        where = f"messages[{index}].content"
        if role in ("system", "developer"):
            system.append(content_text(message.get("content")))
        elif role == "assistant":
            parts = _parts(message.get("content"), where, provider)
            for call in message.get("tool_calls") or ():
                function = call.get("function", {})
                names_by_id[str(call.get("id"))] = str(function.get("name"))
                args = parse_arguments(function.get("arguments"))
                parts.append(
                    {
                        "functionCall": {
                            "name": function.get("name"),
                            "args": args if isinstance(args, dict) else {},
                        }
                    }
                )
            add("model", parts)
        elif role == "tool":
            name = message.get("name") or names_by_id.get(str(message.get("tool_call_id")))
            if not name:
                raise InvalidArgumentError(
                    f"{provider}: tool message needs 'name' or a 'tool_call_id' of an earlier "
                    "assistant tool call"
                )
            raw = content_text(message.get("content"))
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = None
            response = decoded if isinstance(decoded, dict) else {"result": raw}
            add("user", [{"functionResponse": {"name": name, "response": response}}])
        else:
            add("user", _parts(message.get("content"), where, provider))
    instruction = (
        {"parts": [{"text": "\n\n".join(s for s in system if s)}]} if any(system) else None
    )
    return instruction, contents


def _tools(tools: Any) -> list[dict[str, Any]]:
    declarations = []
    for tool in tools or ():
        function = tool.get("function", tool) if isinstance(tool, Mapping) else {}
        entry = {"name": function.get("name")}
        if function.get("description"):
            entry["description"] = function["description"]
        if function.get("parameters"):
            entry["parameters"] = function["parameters"]
        declarations.append(entry)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        mode: dict[str, Any] = {"mode": "AUTO"}
    elif choice == "required":
        mode = {"mode": "ANY"}
    elif choice == "none":
        mode = {"mode": "NONE"}
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        mode = {"mode": "ANY", "allowedFunctionNames": [choice.get("function", {}).get("name")]}
    else:
        return None
    return {"functionCallingConfig": mode}


def _usage(data: Mapping[str, Any]) -> Usage:
    meta = data.get("usageMetadata")
    if not isinstance(meta, Mapping):
        return Usage()
    out = as_int(meta.get("candidatesTokenCount"))
    thoughts = as_int(meta.get("thoughtsTokenCount"))
    if thoughts:
        out = (out or 0) + thoughts
    return Usage(as_int(meta.get("promptTokenCount")), out)


def _status_from_error(error: Mapping[str, Any]) -> int:
    code = as_int(error.get("code"))
    return code if code is not None and code >= 400 else 500


class GeminiBackend(APIBackend):
    provider: ClassVar[str] = "gemini"
    summary: ClassVar[str] = "Google Gemini (`https://generativelanguage.googleapis.com/v1beta`)"
    routes: ClassVar[str] = (
        "`/models/{m}:generateContent`, `:streamGenerateContent?alt=sse`, `:batchEmbedContents`, "
        "`/models`; key in `x-goog-api-key`"
    )
    default_base_url: ClassVar[str | None] = "https://generativelanguage.googleapis.com/v1beta"
    base_url_keys: ClassVar[tuple[str, ...]] = ("gemini_base_url",)
    api_key_keys: ClassVar[tuple[str, ...]] = ("gemini_api_key", "google_api_key")
    api_key_env: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    requires_api_key: ClassVar[bool] = True
    default_model: ClassVar[str | None] = "gemini-2.5-flash"
    default_embedding_model: ClassVar[str | None] = "text-embedding-004"
    model_patterns: ClassVar[tuple[str, ...]] = (
        r"(models/)?gemini-.*", r"(models/)?gemma-.*", r"(models/)?text-embedding-00[0-9]",
        r"(models/)?embedding-00[0-9]", r"(models/)?learnlm-.*",
    )  # fmt: skip

    def _auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._api_key.reveal()} if self._api_key else {}

    def _health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", "/models", params={"pageSize": "1"})

    def _retry_after_from_body(self, raw: RawResponse) -> float | None:
        """``google.rpc.RetryInfo.retryDelay`` ("37s") in the error details, if any."""
        try:
            data = json.loads(raw.body)
        except (ValueError, UnicodeDecodeError):
            return None
        error = data.get("error") if isinstance(data, Mapping) else None
        details = error.get("details") if isinstance(error, Mapping) else None
        for detail in details or ():
            if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith(
                "google.rpc.RetryInfo"
            ):
                match = _DURATION.match(str(detail.get("retryDelay", "")))
                if match:
                    return float(match.group(1))
        return None

    def _body(self, messages: Any, options: dict[str, Any]) -> dict[str, Any]:
        system, contents = convert_messages(messages, self.provider)
        extra_body = options.pop("extra_body", None)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = system
        config = dict(options.pop("generation_config", None) or {})
        for name, gemini_name in _GENERATION_OPTIONS.items():
            if name in options:
                config[gemini_name] = options.pop(name)
        stop = options.pop("stop", None)
        if stop:
            config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
        if options.pop("n", 1) not in (None, 1) or config.get("candidateCount", 1) != 1:
            raise InvalidArgumentError(
                f"{self.provider}: this interface returns one candidate; request them one by one"
            )
        if config:
            body["generationConfig"] = config
        tools = _tools(options.pop("tools", None))
        if tools:
            body["tools"] = tools
        tool_config = _tool_config(options.pop("tool_choice", None))
        if tool_config:
            body["toolConfig"] = tool_config
        safety = options.pop("safety_settings", None)
        if safety:
            body["safetySettings"] = safety
        body.update(options)  # remaining fields in Gemini's own names
        if extra_body:
            body.update(extra_body)
        return body

    async def chat(self, model: str | None, messages: Any, **options: Any) -> ChatResponse:
        opts = self._options(options)
        model = model or self.get_default_model()
        request = HTTPRequest(
            "POST", _model_path(model) + ":generateContent", json=self._body(messages, options)
        )
        return await self._request(request, opts, self._parse_response, what="chat")

    def _parse_response(self, raw: RawResponse) -> ChatResponse:
        what, provider = "chat", self.provider
        data = self._json(raw, what)
        text, calls, reason = _candidate(data, provider, what)
        return ChatResponse(
            text=text, role="assistant", model=opt(data, "modelVersion", str, provider, what),
            finish_reason=reason, usage=_usage(data), tool_calls=calls, raw=data,
            provider=provider,
            request_id=raw.request_id or opt(data, "responseId", str, provider, what),
        )  # fmt: skip

    def stream_chat(
        self, model: str | None, messages: Any, **options: Any
    ) -> AsyncIterator[ChatChunk]:
        opts = self._options(options)
        model = model or self.get_default_model()
        request = HTTPRequest(
            "POST", _model_path(model) + ":streamGenerateContent",
            json=self._body(messages, options), params={"alt": "sse"}, expect="sse",
        )  # fmt: skip
        limit = self.config.max_response_bytes
        return self._stream(
            request, opts, lambda: _GeminiStream(self.provider, limit), what="stream_chat",
            on_complete=lambda p: getattr(p, "usage", None),
        )  # fmt: skip

    async def embed(
        self, model: str | None, inputs: str | Sequence[str], **options: Any
    ) -> EmbeddingResponse:
        opts = self._options(options)
        texts = ensure_text_list(inputs, self.provider)
        model = model or self.get_default_embedding_model()
        path = _model_path(model)
        extra = {}
        if "task_type" in options:
            extra["taskType"] = options.pop("task_type")
        if "dimensions" in options:
            extra["outputDimensionality"] = options.pop("dimensions")
        extra.update(options)
        body = {
            "requests": [
                {"model": path[1:], "content": {"parts": [{"text": t}]}, **extra} for t in texts
            ]
        }
        request = HTTPRequest("POST", path + ":batchEmbedContents", json=body)
        count = len(texts)

        def parse(raw: RawResponse) -> EmbeddingResponse:
            what, provider = "embed", self.provider
            data = self._json(raw, what)
            items = need(data, "embeddings", list, provider, what)
            values = [need(item, "values", list, provider, what) for item in items]
            vectors = number_vectors(values, count, provider, what)
            return EmbeddingResponse(
                embeddings=vectors, model=model, raw=data, provider=provider,
                request_id=raw.request_id,
            )  # fmt: skip

        return await self._request(request, opts, parse, what="embed")

    async def list_models(self, **options: Any) -> list[ModelInfo]:
        """``GET /models`` following ``nextPageToken``; ids without the ``models/`` prefix."""
        models: list[ModelInfo] = []
        token: str | None = None
        while True:
            opts = self._options(dict(options))
            params = {"pageSize": "1000"}
            if token:
                params["pageToken"] = token
            page, token = await self._request(
                HTTPRequest("GET", "/models", params=params),
                opts,
                self._parse_models,
                what="list_models",
            )
            models.extend(page)
            if not token:
                return models

    def _parse_models(self, raw: RawResponse) -> tuple[list[ModelInfo], str | None]:
        what, provider = "list_models", self.provider
        data = self._json(raw, what)
        page = []
        for item in opt(data, "models", list, provider, what, []):
            name = need(item, "name", str, provider, what)
            page.append(ModelInfo(id=name.removeprefix("models/"), owned_by="google", raw=item))
        return page, opt(data, "nextPageToken", str, provider, what) or None


def _candidate(data: Any, provider: str, what: str) -> tuple[str, list[ToolCall], str | None]:
    """Text, tool calls and normalised finish reason of the first candidate."""
    candidates = opt(data, "candidates", list, provider, what, [])
    if not candidates:
        feedback = opt(data, "promptFeedback", dict, provider, what, {})
        if feedback.get("blockReason"):
            return "", [], "content_filter"
        raise ProtocolError(
            f"{what}: response has no candidates: {excerpt(json.dumps(data))!r}", provider=provider
        )
    candidate = need(candidates, 0, dict, provider, what)
    content = opt(candidate, "content", dict, provider, what, {})
    texts, calls = [], []
    for i, part in enumerate(opt(content, "parts", list, provider, what, [])):
        if not isinstance(part, Mapping):
            continue
        if "text" in part and not part.get("thought"):
            texts.append(need(part, "text", str, provider, what))
        call = part.get("functionCall")
        if isinstance(call, Mapping):
            calls.append(
                ToolCall(
                    id=str(call.get("id") or f"call_{i}"),
                    name=need(call, "name", str, provider, what),
                    arguments=parse_arguments(call.get("args") or {}),
                )
            )
    raw_reason = opt(candidate, "finishReason", str, provider, what)
    reason = FINISH_REASONS.get(raw_reason, raw_reason.lower()) if raw_reason else None
    if calls and reason in (None, "stop"):
        reason = "tool_calls"
    return "".join(texts), calls, reason


class _GeminiStream:
    __slots__ = ("_sse", "_tools", "complete", "finish_reason", "model", "provider", "usage")

    def __init__(self, provider: str, limit: int) -> None:
        self.provider = provider
        self._sse = SSEDecoder(provider, limit)
        self._tools = ToolCallAccumulator()
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.complete = False

    def feed(self, data: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        provider, what = self.provider, "stream chunk"
        for event in self._sse.feed(data):
            obj = event.json(provider)
            if not isinstance(obj, Mapping):
                raise ProtocolError(
                    f"{what} is not an object: {excerpt(event.data)!r}", provider=provider
                )
            error = obj.get("error")
            if isinstance(error, Mapping):
                status = _status_from_error(error)
                message = _message_from_json(obj) or excerpt(event.data)
                raise status_error_class(status)(
                    f"error event in stream: {message}", provider=provider, status=status, body=obj
                )
            self.model = opt(obj, "modelVersion", str, provider, what) or self.model
            usage = _usage(obj)
            if usage.input_tokens is not None or usage.output_tokens is not None:
                self.usage = usage
            if not obj.get("candidates"):
                feedback = obj.get("promptFeedback")
                if isinstance(feedback, Mapping) and feedback.get("blockReason"):
                    self.finish_reason = "content_filter"
                continue
            text, calls, reason = _candidate(obj, provider, what)
            for call in calls:
                index = len(self._tools.result())
                self._tools.set_complete(
                    index,
                    call.id,
                    call.name,
                    call.arguments if isinstance(call.arguments, dict) else {},
                )
            if reason:
                self.finish_reason = reason
            if text:
                out.append(ChatChunk(text=text, model=self.model, raw=obj))
        return out

    def finish(self) -> list[ChatChunk]:
        self._sse.finish()
        if self.finish_reason is None:
            raise StreamInterruptedError(
                "stream ended before any candidate reported a finishReason", provider=self.provider
            )
        self.complete = True
        return [final_chunk(self.finish_reason, self.usage, self._tools, self.model)]
