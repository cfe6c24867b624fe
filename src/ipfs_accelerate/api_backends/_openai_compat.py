"""The OpenAI wire protocol, shared by every backend that speaks it.

OpenAI, Groq (``/openai/v1``), vLLM, Ollama's ``/v1``, OVMS ``/v3``, TGI's Messages API,
MLC-LLM and OPEA's microservices all accept ``POST {prefix}/chat/completions`` with the same
body and answer with the same JSON, or with ``text/event-stream`` chunks ending in
``data: [DONE]`` when ``stream`` is true. With ``stream_options.include_usage`` the last
chunk before ``[DONE]`` has empty ``choices`` and the ``usage``. A stream without ``[DONE]``
is truncated and raises :class:`~ipfs_accelerate.errors.StreamInterruptedError`.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from ipfs_accelerate.errors import InvalidArgumentError, ProtocolError

from ._base import APIBackend, CallOptions, ensure_text_list
from ._errors import status_error_class
from ._parse import (
    ToolCallAccumulator,
    as_int,
    content_text,
    final_chunk,
    need,
    normalise_messages,
    number_vector,
    opt,
    parse_arguments,
)
from ._streams import DEFAULT_MAX_ITEM_BYTES, SSEDecoder, excerpt
from ._transport import HTTPRequest, RawResponse
from ._types import (
    ChatChunk,
    ChatResponse,
    EmbeddingResponse,
    FileObject,
    GeneratedImage,
    ImageResponse,
    ModelInfo,
    ModerationResponse,
    ModerationResult,
    ToolCall,
    ToolCallDelta,
    TranscriptionResponse,
    Usage,
)

__all__ = [
    "OpenAIChatStream",
    "OpenAICompatibleBackend",
    "OpenAISurfacesMixin",
    "parse_openai_chat",
    "parse_openai_usage",
]


def parse_openai_usage(data: Any) -> Usage:
    if type(data) is not dict and not isinstance(data, Mapping):
        return Usage()
    return Usage(as_int(data.get("prompt_tokens")), as_int(data.get("completion_tokens")))


def parse_openai_chat(data: Any, provider: str, what: str) -> ChatResponse:
    """A ``chat.completion`` object -> ChatResponse (first and only choice)."""
    fast = _parse_plain_chat(data, provider)
    if fast is not None:
        return fast
    choices = need(data, "choices", list, provider, what)
    if not choices:
        raise ProtocolError(
            f"{what}: response has no choices: {excerpt(str(data))!r}", provider=provider
        )
    choice = need(choices, 0, dict, provider, what)
    message = need(choice, "message", dict, provider, what)
    tool_calls = []
    for i, call in enumerate(opt(message, "tool_calls", list, provider, what, [])):
        function = need(call, "function", dict, provider, what)
        tool_calls.append(
            ToolCall(
                id=opt(call, "id", str, provider, what) or f"call_{i}",
                name=need(function, "name", str, provider, what),
                arguments=parse_arguments(function.get("arguments")),
                type=opt(call, "type", str, provider, what, "function"),
            )
        )
    return ChatResponse(
        text=content_text(message.get("content")),
        role=opt(message, "role", str, provider, what, "assistant"),
        model=opt(data, "model", str, provider, what),
        finish_reason=opt(choice, "finish_reason", str, provider, what),
        usage=parse_openai_usage(data.get("usage")),
        tool_calls=tool_calls,
        raw=data,
        provider=provider,
    )


def _parse_plain_chat(data: Any, provider: str) -> ChatResponse | None:
    """The common case (text answer, well-formed) without per-field checks; None otherwise,
    and the checked parser then reports exactly what is wrong."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content")
        role = message.get("role", "assistant")
        model = data.get("model")
        reason = choice.get("finish_reason")
        usage = data.get("usage")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if message.get("tool_calls") or not (
        (content is None or type(content) is str)
        and type(role) is str
        and (model is None or type(model) is str)
        and (reason is None or type(reason) is str)
    ):
        return None
    return ChatResponse(
        text=content or "", role=role, model=model, finish_reason=reason,
        usage=parse_openai_usage(usage), raw=data, provider=provider,
    )  # fmt: skip


class OpenAIChatStream:
    """Parser of an OpenAI chat completion stream (see the module docstring)."""

    __slots__ = ("_sse", "complete", "finish_reason", "model", "provider", "tools", "usage")

    def __init__(self, provider: str, max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES) -> None:
        self.provider = provider
        self._sse = SSEDecoder(provider, max_item_bytes)
        self.tools = ToolCallAccumulator()
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.complete = False

    def feed(self, data: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for event in self._sse.feed(data):
            if self.complete:
                continue  # nothing is defined after [DONE]
            payload = event.data
            if payload == "[DONE]":
                self.complete = True
                out.append(final_chunk(self.finish_reason, self.usage, self.tools, self.model))
                continue
            obj = event.json(self.provider)
            if not isinstance(obj, Mapping):
                raise ProtocolError(
                    f"stream chunk is not an object: {excerpt(payload)!r}", provider=self.provider
                )
            if obj.get("error") is not None or event.event == "error":
                raise stream_error(obj, self.provider)
            self._chunk(obj, out)
        return out

    def _chunk(self, obj: Mapping[str, Any], out: list[ChatChunk]) -> None:
        provider, what = self.provider, "stream chunk"
        model = obj.get("model")
        if isinstance(model, str):
            self.model = model
        usage = obj.get("usage")
        if usage is None:  # Groq reports it under x_groq on the last chunk
            extra = obj.get("x_groq")
            usage = extra.get("usage") if isinstance(extra, Mapping) else None
        if isinstance(usage, Mapping):
            self.usage = parse_openai_usage(usage)
        for choice in opt(obj, "choices", list, provider, what, []):
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if not isinstance(delta, Mapping):
                raise ProtocolError(
                    f"{what}: delta is not an object: {excerpt(str(delta))!r}", provider=provider
                )
            text = content_text(delta.get("content"))
            deltas = []
            for raw_call in delta.get("tool_calls") or ():
                if not isinstance(raw_call, Mapping):
                    continue
                function = raw_call.get("function") or {}
                call_delta = ToolCallDelta(
                    index=as_int(raw_call.get("index")) or 0,
                    id=raw_call.get("id"),
                    name=function.get("name"),
                    arguments_delta=function.get("arguments") or "",
                )
                self.tools.add(call_delta)
                deltas.append(call_delta)
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                self.finish_reason = reason
            if text or deltas:
                out.append(ChatChunk(text=text, tool_call_deltas=deltas, model=self.model, raw=obj))

    def finish(self) -> list[ChatChunk]:
        self._sse.finish()
        if not self.complete:
            from ipfs_accelerate.errors import StreamInterruptedError

            raise StreamInterruptedError(
                "stream ended without its terminating 'data: [DONE]'", provider=self.provider
            )
        return []


def stream_error(obj: Mapping[str, Any], provider: str) -> Exception:
    """An error object sent inside a 200 stream -> the typed error for its code."""
    error = obj.get("error")
    status = None
    if isinstance(error, Mapping):
        code = error.get("code")
        status = (
            as_int(code) if not isinstance(code, str) else (int(code) if code.isdigit() else None)
        )
    if status is None or status < 400:
        status = 500  # no usable status: the server failed mid-request
    cls = status_error_class(status)
    from ._errors import _message_from_json

    message = _message_from_json(obj) or excerpt(str(obj))
    return cls(f"error event in stream: {message}", provider=provider, status=status, body=obj)


class OpenAICompatibleBackend(APIBackend):
    """Chat, streaming chat, embeddings and model listing over the OpenAI protocol."""

    #: path prefix added to every route (``/v1`` for servers whose base URL is the server root)
    api_prefix: ClassVar[str] = ""
    supports_embeddings: ClassVar[bool] = True
    supports_tools: ClassVar[bool] = True
    #: whether the server understands ``stream_options.include_usage``
    stream_usage: ClassVar[bool] = True

    def _health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", f"{self.api_prefix}/models")

    def _chat_body(
        self, model: str | None, messages: Any, options: dict[str, Any], stream: bool
    ) -> dict[str, Any]:
        extra_body = options.pop("extra_body", None)
        n = options.get("n")
        if n not in (None, 1):
            raise InvalidArgumentError(
                f"{self.provider}: n={n!r}: this interface returns one choice; "
                "request them one by one"
            )
        if not self.supports_tools and (options.get("tools") or options.get("tool_choice")):
            from ipfs_accelerate.errors import UnsupportedOpError

            raise UnsupportedOpError(f"{self.provider} does not support tool calling")
        body: dict[str, Any] = {
            "model": model or self.get_default_model(),
            "messages": normalise_messages(messages, self.provider),
        }
        body.update(options)
        if stream:
            body["stream"] = True
            if self.stream_usage:
                stream_options = dict(body.get("stream_options") or {})
                stream_options.setdefault("include_usage", True)
                body["stream_options"] = stream_options
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        if extra_body:
            body.update(extra_body)
        return body

    def _chat_path(self) -> str:
        return f"{self.api_prefix}/chat/completions"

    async def chat(self, model: str | None, messages: Any, **options: Any) -> ChatResponse:
        opts = self._options(options)
        body = self._chat_body(model, messages, options, stream=False)
        request = HTTPRequest("POST", self._chat_path(), json=body)
        return await self._request(request, opts, self._parse_chat, what="chat")

    def _parse_chat(self, raw: RawResponse) -> ChatResponse:
        result = parse_openai_chat(self._json(raw, "chat"), self.provider, "chat")
        result.request_id = raw.request_id
        return result

    def stream_chat(
        self, model: str | None, messages: Any, **options: Any
    ) -> AsyncIterator[ChatChunk]:
        opts = self._options(options)
        body = self._chat_body(model, messages, options, stream=True)
        request = HTTPRequest("POST", self._chat_path(), json=body, expect="sse")
        return self._chat_stream(request, opts)

    def _chat_stream(self, request: HTTPRequest, opts: CallOptions) -> AsyncIterator[ChatChunk]:
        limit = self.config.max_response_bytes
        return self._stream(
            request, opts, lambda: OpenAIChatStream(self.provider, limit),
            what="stream_chat", on_complete=_stream_usage,
        )  # fmt: skip

    async def embed(
        self, model: str | None, inputs: str | Sequence[str], **options: Any
    ) -> EmbeddingResponse:
        if not self.supports_embeddings:
            from ipfs_accelerate.errors import UnsupportedOpError

            raise UnsupportedOpError(f"{self.provider} does not offer an embeddings API")
        opts = self._options(options)
        texts = ensure_text_list(inputs, self.provider)
        extra_body = options.pop("extra_body", None)
        body: dict[str, Any] = {
            "model": model or self.get_default_embedding_model(),
            "input": texts,
            "encoding_format": "float",
            **options,
        }
        if extra_body:
            body.update(extra_body)
        request = HTTPRequest("POST", f"{self.api_prefix}/embeddings", json=body)
        count = len(texts)
        return await self._request(
            request, opts, lambda raw: self._parse_embeddings(raw, count), what="embed"
        )

    def _parse_embeddings(self, raw: RawResponse, count: int) -> EmbeddingResponse:
        what, provider = "embed", self.provider
        data = self._json(raw, what)
        items = need(data, "data", list, provider, what)
        vectors: list[list[float] | None] = [None] * count
        for position, item in enumerate(items):
            index = as_int(item.get("index")) if isinstance(item, Mapping) else None
            index = position if index is None else index
            vector = need(item, "embedding", list, provider, what)
            if not 0 <= index < count or vectors[index] is not None:
                raise ProtocolError(
                    f"{what}: embedding index {index} out of range or repeated "
                    f"for {count} input(s)",
                    provider=provider, request_id=raw.request_id,
                )  # fmt: skip
            vectors[index] = number_vector(vector, provider, what)
        if len(items) != count or any(v is None for v in vectors):
            raise ProtocolError(
                f"{what}: got {len(items)} embedding(s) for {count} input(s)",
                provider=provider, request_id=raw.request_id,
            )  # fmt: skip
        return EmbeddingResponse(
            embeddings=[v for v in vectors if v is not None],
            model=opt(data, "model", str, provider, what),
            usage=parse_openai_usage(data.get("usage")),
            raw=data,
            provider=provider,
            request_id=raw.request_id,
        )

    async def list_models(self, **options: Any) -> list[ModelInfo]:
        opts = self._options(options)
        request = HTTPRequest("GET", f"{self.api_prefix}/models")
        return await self._request(request, opts, self._parse_models, what="list_models")

    def _parse_models(self, raw: RawResponse) -> list[ModelInfo]:
        what, provider = "list_models", self.provider
        data = self._json(raw, what)
        models = []
        for item in need(data, "data", list, provider, what):
            models.append(
                ModelInfo(
                    id=need(item, "id", str, provider, what),
                    owned_by=opt(item, "owned_by", str, provider, what),
                    created=opt(item, "created", int, provider, what),
                    parent=opt(item, "parent", str, provider, what),
                    raw=item,
                )
            )
        return models


def _stream_usage(parser: Any) -> Usage | None:
    usage = getattr(parser, "usage", None)
    return usage if isinstance(usage, Usage) else None


class OpenAISurfacesMixin:
    """OpenAI's other endpoints: images, speech, transcription, moderation, files.

    Mixed into :class:`OpenAICompatibleBackend` subclasses (it uses their pipeline).
    """

    async def generate_image(
        self: Any, prompt: str, model: str | None = None, **options: Any
    ) -> ImageResponse:
        """``POST /images/generations``; ``n``, ``size``, ``quality``, ``response_format``...
        pass through."""
        opts = self._options(options)
        body = {"model": model or "dall-e-3", "prompt": prompt, **options}
        request = HTTPRequest("POST", f"{self.api_prefix}/images/generations", json=body)
        return await self._request(
            request, opts, lambda raw: _parse_images(self, raw, "generate_image"),
            what="generate_image",
        )  # type: ignore[no-any-return]  # fmt: skip

    async def edit_image(
        self: Any,
        image: ImageInput | Sequence[ImageInput],
        prompt: str,
        model: str | None = None,
        *,
        mask: ImageInput | None = None,
        **options: Any,
    ) -> ImageResponse:
        """``POST /images/edits`` (multipart/form-data): ``image`` is bytes or a file path, or
        a list of them (sent as repeated ``image[]`` parts, as gpt-image-1 takes up to 16);
        ``mask`` an optional PNG whose transparent pixels mark what to change. ``model``
        (the server's default, dall-e-2, when None), ``n``, ``size``, ``response_format``,
        ``quality``... travel as form fields. Raises InvalidArgumentError for an empty
        prompt, no image, or an option a form cannot carry."""
        what = "edit_image"
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidArgumentError(f"{self.provider}: {what}: prompt must be non-empty text")
        opts = self._options(options)
        several = isinstance(image, list | tuple)
        images = list(image) if several else [image]  # type: ignore[list-item, arg-type]
        if not images:
            raise InvalidArgumentError(f"{self.provider}: {what}: give at least one image")
        field = "image[]" if several else "image"
        files = [(field, *_image_payload(i, what, self.provider)) for i in images]
        if mask is not None:
            files.append(("mask", *_image_payload(mask, what, self.provider)))
        fields = [
            ("prompt", prompt),
            *_form_fields({"model": model, **options}, what, self.provider),
        ]
        return await self._multipart_images(
            f"{self.api_prefix}/images/edits", fields, files, opts, what
        )

    async def create_image_variation(
        self: Any, image: ImageInput, model: str | None = None, **options: Any
    ) -> ImageResponse:
        """``POST /images/variations`` (multipart/form-data, dall-e-2): variations of one PNG
        given as bytes or a file path; ``n``, ``size``, ``response_format`` travel as form
        fields."""
        what = "create_image_variation"
        opts = self._options(options)
        files = [("image", *_image_payload(image, what, self.provider))]
        fields = _form_fields({"model": model, **options}, what, self.provider)
        return await self._multipart_images(
            f"{self.api_prefix}/images/variations", fields, files, opts, what
        )

    async def _multipart_images(
        self: Any,
        path: str,
        fields: list[tuple[str, str]],
        files: list[tuple[str, bytes, str]],
        opts: Any,
        what: str,
    ) -> ImageResponse:
        request = HTTPRequest("POST", path, body_factory=lambda: _multipart(fields, files))
        return await self._request(
            request, opts, lambda raw: _parse_images(self, raw, what), what=what
        )  # type: ignore[no-any-return]

    async def speech(
        self: Any, text: str, model: str | None = None, voice: str = "alloy", **options: Any
    ) -> bytes:
        """``POST /audio/speech``: the audio bytes (``response_format`` mp3 by default)."""
        opts = self._options(options)
        body = {"model": model or "tts-1", "input": text, "voice": voice, **options}
        request = HTTPRequest("POST", f"{self.api_prefix}/audio/speech", json=body, expect="bytes")

        def parse(raw: RawResponse) -> bytes:
            if "json" in raw.content_type or "html" in raw.content_type or not raw.body:
                raise ProtocolError(
                    f"speech: expected audio, got {raw.content_type or 'no content type'}: "
                    f"{excerpt(raw.body)!r}",
                    provider=self.provider, status=raw.status, request_id=raw.request_id,
                )  # fmt: skip
            return raw.body

        return await self._request(request, opts, parse, what="speech")  # type: ignore[no-any-return]

    async def transcribe(
        self: Any,
        audio: bytes | str | os.PathLike[str],
        model: str | None = None,
        *,
        filename: str | None = None,
        **options: Any,
    ) -> TranscriptionResponse:
        """``POST /audio/transcriptions`` (multipart): ``audio`` is bytes or a file path."""
        opts = self._options(options)
        data, name = _file_payload(audio, filename, "audio.wav")
        fields = {"model": model or "whisper-1", **{k: str(v) for k, v in options.items()}}
        request = HTTPRequest(
            "POST", f"{self.api_prefix}/audio/transcriptions",
            body_factory=lambda: _form(fields, "file", data, name),
        )  # fmt: skip
        return await self._request(
            request, opts, lambda raw: _parse_transcription(self, raw, "transcribe"),
            what="transcribe",
        )  # type: ignore[no-any-return]  # fmt: skip

    async def translate(
        self: Any,
        audio: bytes | str | os.PathLike[str],
        model: str | None = None,
        *,
        filename: str | None = None,
        **options: Any,
    ) -> TranscriptionResponse:
        """``POST /audio/translations`` (multipart/form-data): speech in any language, as
        English text. ``audio`` is bytes or a file path; ``prompt``, ``response_format``
        (``json`` by default; ``text``, ``srt``, ``vtt`` come back as the text) and
        ``temperature`` travel as form fields."""
        what = "translate"
        opts = self._options(options)
        data, name = _file_payload(audio, filename, "audio.wav")
        fields = _form_fields({"model": model or "whisper-1", **options}, what, self.provider)
        request = HTTPRequest(
            "POST", f"{self.api_prefix}/audio/translations",
            body_factory=lambda: _multipart(fields, [("file", data, name)]),
        )  # fmt: skip
        return await self._request(
            request, opts, lambda raw: _parse_transcription(self, raw, what), what=what
        )  # type: ignore[no-any-return]

    async def moderate(
        self: Any, inputs: str | Sequence[str], model: str | None = None, **options: Any
    ) -> ModerationResponse:
        """``POST /moderations``: one result per input."""
        opts = self._options(options)
        body = {"model": model or "omni-moderation-latest", "input": inputs, **options}
        request = HTTPRequest("POST", f"{self.api_prefix}/moderations", json=body)

        def parse(raw: RawResponse) -> ModerationResponse:
            what, provider = "moderate", self.provider
            data = self._json(raw, what)
            results = [
                ModerationResult(
                    flagged=need(item, "flagged", bool, provider, what),
                    categories=dict(opt(item, "categories", dict, provider, what, {})),
                    category_scores=dict(opt(item, "category_scores", dict, provider, what, {})),
                )
                for item in need(data, "results", list, provider, what)
            ]
            return ModerationResponse(
                id=opt(data, "id", str, provider, what),
                model=opt(data, "model", str, provider, what), results=results, raw=data,
            )  # fmt: skip

        return await self._request(request, opts, parse, what="moderate")  # type: ignore[no-any-return]

    async def upload_file(
        self: Any,
        file: bytes | str | os.PathLike[str],
        purpose: str,
        *,
        filename: str | None = None,
        **options: Any,
    ) -> FileObject:
        """``POST /files`` (multipart ``file`` + ``purpose``)."""
        opts = self._options(options)
        data, name = _file_payload(file, filename, "upload.jsonl")
        request = HTTPRequest(
            "POST", f"{self.api_prefix}/files",
            body_factory=lambda: _form({"purpose": purpose}, "file", data, name),
        )  # fmt: skip
        return await self._request(
            request, opts, lambda raw: _file_object(self, raw, "upload_file"), what="upload_file"
        )  # type: ignore[no-any-return]

    async def list_files(self: Any, purpose: str | None = None, **options: Any) -> list[FileObject]:
        opts = self._options(options)
        request = HTTPRequest(
            "GET", f"{self.api_prefix}/files", params={"purpose": purpose} if purpose else None
        )

        def parse(raw: RawResponse) -> list[FileObject]:
            data = self._json(raw, "list_files")
            items = need(data, "data", list, self.provider, "list_files")
            return [_file_from_obj(item, self.provider, "list_files") for item in items]

        return await self._request(request, opts, parse, what="list_files")  # type: ignore[no-any-return]

    async def retrieve_file(self: Any, file_id: str, **options: Any) -> FileObject:
        opts = self._options(options)
        request = HTTPRequest("GET", f"{self.api_prefix}/files/{_path_part(file_id)}")
        return await self._request(
            request,
            opts,
            lambda raw: _file_object(self, raw, "retrieve_file"),
            what="retrieve_file",
        )  # type: ignore[no-any-return]

    async def delete_file(self: Any, file_id: str, **options: Any) -> bool:
        """``DELETE /files/{id}``: True when the service confirms the deletion."""
        opts = self._options(options)
        request = HTTPRequest("DELETE", f"{self.api_prefix}/files/{_path_part(file_id)}")

        def parse(raw: RawResponse) -> bool:
            data = self._json(raw, "delete_file")
            return bool(need(data, "deleted", bool, self.provider, "delete_file"))

        return await self._request(request, opts, parse, what="delete_file")  # type: ignore[no-any-return]

    async def file_content(self: Any, file_id: str, **options: Any) -> bytes:
        opts = self._options(options)
        request = HTTPRequest(
            "GET", f"{self.api_prefix}/files/{_path_part(file_id)}/content", expect="bytes"
        )
        return await self._request(request, opts, lambda raw: raw.body, what="file_content")  # type: ignore[no-any-return]


def _path_part(value: str) -> str:
    from urllib.parse import quote

    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"an identifier must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def _file_payload(
    file: bytes | str | os.PathLike[str], filename: str | None, default: str
) -> tuple[bytes, str]:
    if isinstance(file, bytes | bytearray):
        return bytes(file), filename or default
    path = os.fspath(file)
    with open(path, "rb") as handle:
        return handle.read(), filename or os.path.basename(path)


def _form(fields: Mapping[str, str], file_field: str, data: bytes, filename: str) -> Any:
    from ._transport import _aiohttp

    form = _aiohttp().FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    form.add_field(file_field, data, filename=filename, content_type=ctype)
    return form


#: an image for the multipart image routes: its bytes or a file path
ImageInput = bytes | str | os.PathLike[str]

_IMAGE_NAMES = ((b"\x89PNG\r\n\x1a\n", "image.png"), (b"\xff\xd8\xff", "image.jpg"))


def _image_payload(image: Any, what: str, provider: str) -> tuple[bytes, str]:
    """(bytes, filename) of an image given as bytes (named by its format, so that the part
    carries the right content type) or a file path."""
    if not isinstance(image, bytes | bytearray | str | os.PathLike):
        raise InvalidArgumentError(
            f"{provider}: {what}: an image is bytes or a file path, got {type(image).__name__}"
        )
    if isinstance(image, bytes | bytearray):
        if not image:
            raise InvalidArgumentError(f"{provider}: {what}: an image must not be empty")
        data = bytes(image)
        name = next((n for magic, n in _IMAGE_NAMES if data.startswith(magic)), None)
        if name is None:
            is_webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
            name = "image.webp" if is_webp else "image.png"
        return data, name
    return _file_payload(image, None, "image.png")


def _form_fields(options: Mapping[str, Any], what: str, provider: str) -> list[tuple[str, str]]:
    """Options as form fields: text and numbers as written, booleans as ``true``/``false``,
    a list as repeated ``name[]`` fields (as OpenAI's SDK sends them), None left out;
    anything else raises InvalidArgumentError naming the option."""
    fields: list[tuple[str, str]] = []
    for name, value in options.items():
        values = value if isinstance(value, list | tuple) else [value]
        key = f"{name}[]" if isinstance(value, list | tuple) else name
        for item in values:
            if item is None and key == name:
                continue
            if isinstance(item, bool):
                fields.append((key, "true" if item else "false"))
            elif isinstance(item, str | int | float):
                fields.append((key, str(item)))
            else:
                raise InvalidArgumentError(
                    f"{provider}: {what}: option {name!r} cannot travel in a form field "
                    f"(got {type(item).__name__})"
                )
    return fields


def _multipart(fields: list[tuple[str, str]], files: list[tuple[str, bytes, str]]) -> Any:
    """multipart/form-data: the fields, then the files (each with its filename and the
    content type its name implies)."""
    from ._transport import _aiohttp

    form = _aiohttp().FormData()
    for name, value in fields:
        form.add_field(name, value)
    for name, data, filename in files:
        ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        form.add_field(name, data, filename=filename, content_type=ctype)
    return form


def _parse_images(backend: Any, raw: RawResponse, what: str) -> ImageResponse:
    provider = backend.provider
    data = backend._json(raw, what)
    images = [
        GeneratedImage(
            url=opt(item, "url", str, provider, what),
            b64_json=opt(item, "b64_json", str, provider, what),
            revised_prompt=opt(item, "revised_prompt", str, provider, what),
        )
        for item in need(data, "data", list, provider, what)
    ]
    return ImageResponse(images=images, created=opt(data, "created", int, provider, what), raw=data)


def _parse_transcription(backend: Any, raw: RawResponse, what: str) -> TranscriptionResponse:
    provider = backend.provider
    if "json" not in raw.content_type:  # response_format text/srt/vtt
        if "html" in raw.content_type:
            raise ProtocolError(
                f"{what}: got an HTML page: {excerpt(raw.body)!r}", provider=provider
            )
        return TranscriptionResponse(text=raw.body.decode("utf-8", "replace"), raw=raw.body)
    obj = backend._json(raw, what)
    return TranscriptionResponse(
        text=need(obj, "text", str, provider, what),
        language=opt(obj, "language", str, provider, what),
        duration=opt(obj, "duration", (int, float), provider, what),
        raw=obj,
    )


def _file_object(backend: Any, raw: RawResponse, what: str) -> FileObject:
    return _file_from_obj(backend._json(raw, what), backend.provider, what)


def _file_from_obj(item: Any, provider: str, what: str) -> FileObject:
    return FileObject(
        id=need(item, "id", str, provider, what),
        filename=opt(item, "filename", str, provider, what),
        bytes=opt(item, "bytes", int, provider, what),
        purpose=opt(item, "purpose", str, provider, what),
        created_at=opt(item, "created_at", int, provider, what),
        status=opt(item, "status", str, provider, what),
        raw=item,
    )
