"""Ollama's native REST API (NDJSON streams).

Routes: ``POST /api/chat`` and ``POST /api/generate`` (one JSON object with
``"stream": false``, else ``application/x-ndjson`` lines, the last with ``"done": true``,
``done_reason``, ``prompt_eval_count`` and ``eval_count``), ``POST /api/embed``
(``{"model", "input"}`` -> ``{"embeddings": [[...]]}``), ``GET /api/tags``,
``POST /api/pull`` (NDJSON progress lines ending with ``{"status": "success"}``),
``GET /api/version``. Errors are ``{"error": "..."}``, also as a line inside a stream.
Options (``temperature``, ``top_p``, ``top_k``, ``seed``, ``stop``, ``max_tokens`` ->
``num_predict``...) go into Ollama's ``options`` object; ``format``, ``keep_alive`` and
``think`` stay top-level. A stream that ends without its ``done`` line raises
StreamInterruptedError.

Configuration: ``metadata["base_url"]`` / ``ollama_api_url`` / ``$OLLAMA_HOST`` (default
``http://127.0.0.1:11434``). No key is needed; one given is sent as a Bearer token.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar

from ipfs_accelerate.errors import ProtocolError, StreamInterruptedError

from ._base import APIBackend, CallOptions, ensure_text_list
from ._errors import error_for_status
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
from ._streams import NDJSONDecoder, excerpt
from ._transport import HTTPRequest, RawResponse
from ._types import (
    ChatChunk,
    ChatResponse,
    EmbeddingResponse,
    ModelInfo,
    PullProgress,
    ToolCall,
    Usage,
)

__all__ = ["OLLAMA_MODEL_PATTERNS", "OllamaBackend"]

OLLAMA_MODEL_PATTERNS: tuple[str, ...] = (
    r"[\w.-]+(/[\w.-]+)?:[\w.-]+",  # name:tag, namespace/name:tag
    r"(llama|llava|mistral|mixtral|gemma|qwen|phi|deepseek|codellama|nomic-embed|mxbai-embed|"
    r"all-minilm|snowflake-arctic-embed|tinyllama|starcoder|granite|smollm|olmo)[\w.-]*",
)
# options Ollama takes inside "options" (its Modelfile parameters), by our name -> theirs
_OPTION_NAMES = {"max_tokens": "num_predict"}
_TOP_LEVEL = frozenset(
    {
        "format",
        "keep_alive",
        "think",
        "tools",
        "images",
        "raw",
        "system",
        "template",
        "context",
        "suffix",
        "truncate",
    }
)
_NDJSON = ("application/x-ndjson", "application/json")


def _ollama_messages(messages: Any, provider: str) -> list[dict[str, Any]]:
    out = []
    names_by_id: dict[str, str] = {}
    for message in normalise_messages(messages, provider):
        converted: dict[str, Any] = {
            "role": message["role"],
            "content": content_text(message.get("content")),
        }
        if message.get("images"):
            converted["images"] = message["images"]
        calls = message.get("tool_calls")
        if calls:
            converted["tool_calls"] = []
            for call in calls:
                function = call.get("function", {})
                names_by_id[str(call.get("id"))] = function.get("name", "")
                converted["tool_calls"].append(
                    {
                        "function": {
                            "name": function.get("name"),
                            "arguments": _as_object(function.get("arguments")),
                        }
                    }
                )
        if message["role"] == "tool":
            name = message.get("name") or names_by_id.get(str(message.get("tool_call_id")))
            if name:
                converted["tool_name"] = name
        out.append(converted)
    return out


def _as_object(arguments: Any) -> Any:
    parsed = parse_arguments(arguments)
    return parsed if isinstance(parsed, dict) else {}


def _usage(obj: Mapping[str, Any]) -> Usage:
    return Usage(as_int(obj.get("prompt_eval_count")), as_int(obj.get("eval_count")))


class OllamaBackend(APIBackend):
    provider: ClassVar[str] = "ollama"
    summary: ClassVar[str] = "Ollama, native API"
    routes: ClassVar[str] = (
        "NDJSON: `/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, `/api/pull`, "
        "`/api/version`"
    )
    default_base_url: ClassVar[str | None] = "http://127.0.0.1:11434"
    base_url_keys: ClassVar[tuple[str, ...]] = ("ollama_api_url",)
    base_url_env: ClassVar[tuple[str, ...]] = ("OLLAMA_HOST",)
    default_port: ClassVar[int | None] = 11434
    strip_url_suffixes: ClassVar[tuple[str, ...]] = ("/api", "/v1")
    default_model: ClassVar[str | None] = "llama3.2"
    default_embedding_model: ClassVar[str | None] = "nomic-embed-text"
    model_patterns: ClassVar[tuple[str, ...]] = OLLAMA_MODEL_PATTERNS

    def _health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", "/api/version")

    # ------------------------------------------------------------------ bodies

    def _body(self, model: str | None, options: dict[str, Any], stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model or self.get_default_model(), "stream": stream}
        extra_body = options.pop("extra_body", None)
        model_options = dict(options.pop("options", None) or {})
        for name, value in options.items():
            if name in _TOP_LEVEL:
                body[name] = value
            elif name == "tool_choice":
                continue  # Ollama has no tool_choice; the model decides
            else:
                model_options[_OPTION_NAMES.get(name, name)] = value
        if model_options:
            body["options"] = model_options
        if extra_body:
            body.update(extra_body)
        return body

    def _error_line(self, obj: Mapping[str, Any], what: str) -> Exception:
        body = json.dumps(obj).encode()
        return error_for_status(
            provider=self.provider, status=500, headers={}, body=body,
            content_type="application/json", request_id=None, what=f"{what} (error line in stream)",
        )  # fmt: skip

    # ------------------------------------------------------------------ chat

    async def chat(self, model: str | None, messages: Any, **options: Any) -> ChatResponse:
        opts = self._options(options)
        body = self._body(model, options, stream=False)
        body["messages"] = _ollama_messages(messages, self.provider)
        request = HTTPRequest("POST", "/api/chat", json=body)
        return await self._request(request, opts, self._parse_chat, what="chat")

    def _parse_chat(self, raw: RawResponse) -> ChatResponse:
        what, provider = "chat", self.provider
        data = self._json(raw, what)
        if isinstance(data, Mapping) and data.get("error") is not None:
            raise self._error_line(data, what)
        message = need(data, "message", dict, provider, what)
        tools = []
        for i, call in enumerate(opt(message, "tool_calls", list, provider, what, [])):
            function = need(call, "function", dict, provider, what)
            tools.append(
                ToolCall(
                    id=opt(call, "id", str, provider, what) or f"call_{i}",
                    name=need(function, "name", str, provider, what),
                    arguments=parse_arguments(function.get("arguments")),
                )
            )
        reason = opt(data, "done_reason", str, provider, what)
        if tools and reason in (None, "stop"):
            reason = "tool_calls"
        return ChatResponse(
            text=opt(message, "content", str, provider, what, ""),
            role=opt(message, "role", str, provider, what, "assistant"),
            model=opt(data, "model", str, provider, what),
            finish_reason=reason,
            usage=_usage(data),
            tool_calls=tools,
            raw=data,
            provider=provider,
            request_id=raw.request_id,
        )

    def stream_chat(
        self, model: str | None, messages: Any, **options: Any
    ) -> AsyncIterator[ChatChunk]:
        opts = self._options(options)
        body = self._body(model, options, stream=True)
        body["messages"] = _ollama_messages(messages, self.provider)
        request = HTTPRequest("POST", "/api/chat", json=body, expect="ndjson")
        return self._ndjson_chat(request, opts, "stream_chat", "message")

    async def generate(self, model: str | None, prompt: str, **options: Any) -> ChatResponse:
        """``POST /api/generate`` (raw completion); ``raw["context"]`` carries Ollama's context."""
        opts = self._options(options)
        body = self._body(model, options, stream=False)
        body["prompt"] = prompt
        request = HTTPRequest("POST", "/api/generate", json=body)

        def parse(raw: RawResponse) -> ChatResponse:
            what, provider = "generate", self.provider
            data = self._json(raw, what)
            if isinstance(data, Mapping) and data.get("error") is not None:
                raise self._error_line(data, what)
            return ChatResponse(
                text=need(data, "response", str, provider, what),
                model=opt(data, "model", str, provider, what),
                finish_reason=opt(data, "done_reason", str, provider, what),
                usage=_usage(data), raw=data, provider=provider, request_id=raw.request_id,
            )  # fmt: skip

        return await self._request(request, opts, parse, what="generate")

    def generate_stream(
        self, model: str | None, prompt: str, **options: Any
    ) -> AsyncIterator[ChatChunk]:
        opts = self._options(options)
        body = self._body(model, options, stream=True)
        body["prompt"] = prompt
        request = HTTPRequest("POST", "/api/generate", json=body, expect="ndjson")
        return self._ndjson_chat(request, opts, "generate_stream", "response")

    def _ndjson_chat(
        self, request: HTTPRequest, opts: CallOptions, what: str, field: str
    ) -> AsyncIterator[ChatChunk]:
        limit = self.config.max_response_bytes
        return self._stream(
            request, opts, lambda: _OllamaChatStream(self, what, field, limit), what=what,
            content_types=_NDJSON, on_complete=lambda p: getattr(p, "usage", None),
        )  # fmt: skip

    # ------------------------------------------------------------------ embeddings, models, pull

    async def embed(
        self, model: str | None, inputs: str | Sequence[str], **options: Any
    ) -> EmbeddingResponse:
        opts = self._options(options)
        texts = ensure_text_list(inputs, self.provider)
        body = {"model": model or self.get_default_embedding_model(), "input": texts, **options}
        request = HTTPRequest("POST", "/api/embed", json=body)
        count = len(texts)

        def parse(raw: RawResponse) -> EmbeddingResponse:
            what, provider = "embed", self.provider
            data = self._json(raw, what)
            checked = number_vectors(
                need(data, "embeddings", list, provider, what), count, provider, what
            )
            return EmbeddingResponse(
                embeddings=checked, model=opt(data, "model", str, provider, what),
                usage=Usage(as_int(data.get("prompt_eval_count")), None), raw=data,
                provider=provider, request_id=raw.request_id,
            )  # fmt: skip

        return await self._request(request, opts, parse, what="embed")

    async def tags(self, **options: Any) -> list[ModelInfo]:
        """``GET /api/tags``: the models pulled locally."""
        opts = self._options(options)
        request = HTTPRequest("GET", "/api/tags")

        def parse(raw: RawResponse) -> list[ModelInfo]:
            what, provider = "tags", self.provider
            data = self._json(raw, what)
            return [
                ModelInfo(
                    id=opt(item, "model", str, provider, what)
                    or need(item, "name", str, provider, what),
                    raw=item,
                )
                for item in need(data, "models", list, provider, what)
            ]

        return await self._request(request, opts, parse, what="tags")

    async def list_models(self, **options: Any) -> list[ModelInfo]:
        return await self.tags(**options)

    def pull(
        self, model: str, *, insecure: bool = False, **options: Any
    ) -> AsyncIterator[PullProgress]:
        """``POST /api/pull``: progress items; the last has ``status == "success"``.

        A stream that ends before ``success`` raises StreamInterruptedError; an error line
        raises the typed error.
        """
        opts = self._options(options)
        body = {"model": model, "insecure": insecure, "stream": True, **options}
        request = HTTPRequest("POST", "/api/pull", json=body, expect="ndjson")
        limit = self.config.max_response_bytes
        return self._stream(
            request, opts, lambda: _PullStream(self, limit), what="pull", content_types=_NDJSON
        )

    async def pull_model(
        self,
        model: str,
        *,
        on_progress: Callable[[PullProgress], None] | None = None,
        **options: Any,
    ) -> PullProgress:
        """Pull to completion, calling ``on_progress`` for each progress line; returns the last
        one."""
        last: PullProgress | None = None
        async for progress in self.pull(model, **options):
            if on_progress is not None:
                on_progress(progress)
            last = progress
        assert last is not None  # the stream raises rather than end without "success"
        return last


class _OllamaChatStream:
    __slots__ = ("_backend", "_decoder", "_field", "_tools", "_what", "complete", "usage")

    def __init__(self, backend: OllamaBackend, what: str, field: str, limit: int) -> None:
        self._backend = backend
        self._decoder = NDJSONDecoder(backend.provider, limit)
        self._what = what
        self._field = field
        self._tools = ToolCallAccumulator()
        self.complete = False
        self.usage: Usage | None = None

    def feed(self, data: bytes) -> list[ChatChunk]:
        out = []
        provider, what = self._backend.provider, self._what
        for obj in self._decoder.feed(data):
            if not isinstance(obj, Mapping):
                raise ProtocolError(
                    f"{what}: NDJSON line is not an object: {excerpt(str(obj))!r}",
                    provider=provider,
                )
            if obj.get("error") is not None:
                raise self._backend._error_line(obj, what)
            if self.complete:
                continue
            if self._field == "message":
                message = opt(obj, "message", dict, provider, what, {})
                text = opt(message, "content", str, provider, what, "")
                for call in opt(message, "tool_calls", list, provider, what, []):
                    function = need(call, "function", dict, provider, what)
                    index = len(self._tools.result())
                    args = parse_arguments(function.get("arguments"))
                    self._tools.set_complete(
                        index, opt(call, "id", str, provider, what) or f"call_{index}",
                        need(function, "name", str, provider, what),
                        args if isinstance(args, dict) else {},
                    )  # fmt: skip
            else:
                text = opt(obj, self._field, str, provider, what, "")
            done = opt(obj, "done", bool, provider, what, False)
            model = opt(obj, "model", str, provider, what)
            if done:
                self.complete = True
                self.usage = _usage(obj)
                out.append(
                    final_chunk(
                        opt(obj, "done_reason", str, provider, what),
                        self.usage,
                        self._tools,
                        model,
                        obj,
                        text,
                    )
                )
            elif text:
                out.append(ChatChunk(text=text, model=model, raw=obj))
        return out

    def finish(self) -> list[ChatChunk]:
        self._decoder.finish()
        if not self.complete:
            raise StreamInterruptedError(
                f"{self._what}: stream ended without its final '\"done\": true' line",
                provider=self._backend.provider,
            )
        return []


class _PullStream:
    __slots__ = ("_backend", "_decoder", "complete")

    def __init__(self, backend: OllamaBackend, limit: int) -> None:
        self._backend = backend
        self._decoder = NDJSONDecoder(backend.provider, limit)
        self.complete = False

    def feed(self, data: bytes) -> list[PullProgress]:
        out = []
        provider, what = self._backend.provider, "pull"
        for obj in self._decoder.feed(data):
            if not isinstance(obj, Mapping):
                raise ProtocolError(
                    f"{what}: NDJSON line is not an object: {excerpt(str(obj))!r}",
                    provider=provider,
                )
            if obj.get("error") is not None:
                raise self._backend._error_line(obj, what)
            status = need(obj, "status", str, provider, what)
            out.append(
                PullProgress(
                    status=status,
                    digest=opt(obj, "digest", str, provider, what),
                    total=opt(obj, "total", int, provider, what),
                    completed=opt(obj, "completed", int, provider, what),
                )
            )
            if status == "success":
                self.complete = True
        return out

    def finish(self) -> list[PullProgress]:
        self._decoder.finish()
        if not self.complete:
            raise StreamInterruptedError(
                "pull: stream ended before status 'success'", provider=self._backend.provider
            )
        return []
