"""Anthropic's Messages API (Claude).

``POST /v1/messages`` with ``x-api-key`` and ``anthropic-version: 2023-06-01``. OpenAI-style
messages are translated: ``system`` messages become the top-level ``system``; assistant
``tool_calls`` become ``tool_use`` blocks; ``tool`` messages become ``tool_result`` blocks in
a user turn; consecutive turns of one role are merged (the API requires alternation).
``max_tokens`` is required by the API: it defaults to ``metadata["max_tokens"]`` or 1024.

Streaming is SSE with named events: ``message_start``, ``content_block_start``,
``content_block_delta`` (``text_delta``, ``input_json_delta``), ``content_block_stop``,
``message_delta`` (stop reason, output tokens), ``message_stop``, ``ping``, and ``error``,
which raises the typed error even after HTTP 200. A stream without ``message_stop`` raises
StreamInterruptedError. Anthropic has no embeddings API (``embed`` raises UnsupportedOpError).

Configuration: ``metadata["api_key"]`` / ``claude_api_key`` / ``anthropic_api_key`` /
``$ANTHROPIC_API_KEY`` (required); ``metadata["base_url"]`` (default ``https://api.anthropic.com``);
``metadata["anthropic_version"]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from ipfs_accelerate.errors import ProtocolError, StreamInterruptedError

from ._base import APIBackend
from ._errors import _message_from_json, status_error_class
from ._parse import (
    ToolCallAccumulator,
    as_int,
    content_text,
    final_chunk,
    need,
    normalise_messages,
    opt,
    parse_arguments,
)
from ._streams import SSEDecoder, excerpt
from ._transport import HTTPRequest, RawResponse
from ._types import ChatChunk, ChatResponse, ModelInfo, ToolCall, ToolCallDelta, Usage

__all__ = ["ClaudeBackend"]

API_VERSION = "2023-06-01"

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "pause_turn",
    "model_context_window_exceeded": "length",
}
# error.type of Anthropic's error bodies and stream error events -> HTTP status
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI-style content -> Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            url = part.get("image_url", {})
            url = url.get("url") if isinstance(url, Mapping) else url
            if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                blocks.append(
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": media, "data": data},
                    }
                )
            elif isinstance(url, str):
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
        else:  # already an Anthropic block (image, document, tool_result...): pass through
            blocks.append(dict(part))
    return blocks


def convert_messages(messages: Any, provider: str) -> tuple[str | None, list[dict[str, Any]]]:
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for message in normalise_messages(messages, provider):
        role = message["role"]
        if role in ("system", "developer"):
            system_parts.append(content_text(message.get("content")))
        elif role == "tool":
            add("user", [{
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id", "")),
                "content": content_text(message.get("content")),
            }])  # fmt: skip
        elif role == "assistant":
            blocks = _blocks(message.get("content"))
            for call in message.get("tool_calls") or ():
                function = call.get("function", {})
                arguments = parse_arguments(function.get("arguments"))
                blocks.append({
                    "type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                    "input": arguments if isinstance(arguments, dict) else {},
                })  # fmt: skip
            add("assistant", blocks)
        else:
            add("user", _blocks(message.get("content")))
    system = "\n\n".join(p for p in system_parts if p) or None
    return system, turns


def convert_tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools or ():
        function = tool.get("function", tool) if isinstance(tool, Mapping) else {}
        if "input_schema" in function:  # already Anthropic-shaped
            out.append(dict(function))
            continue
        entry = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def convert_tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, Mapping):
        if choice.get("type") == "function":
            return {"type": "tool", "name": choice.get("function", {}).get("name")}
        return dict(choice)
    return None


def error_from_event(obj: Mapping[str, Any], provider: str) -> Exception:
    error = obj.get("error")
    kind = error.get("type") if isinstance(error, Mapping) else None
    status = ERROR_STATUS.get(str(kind), 500)
    cls = status_error_class(status)
    message = _message_from_json(obj) or excerpt(str(obj))
    return cls(f"error event in stream: {message}", provider=provider, status=status, body=obj)


class ClaudeBackend(APIBackend):
    provider: ClassVar[str] = "claude"
    summary: ClassVar[str] = "Anthropic Claude (`https://api.anthropic.com`)"
    routes: ClassVar[str] = (
        "Messages API: `/v1/messages` (SSE named events), `/v1/models`; `x-api-key`, "
        "`anthropic-version`"
    )
    default_base_url: ClassVar[str | None] = "https://api.anthropic.com"
    base_url_keys: ClassVar[tuple[str, ...]] = ("anthropic_base_url",)
    base_url_env: ClassVar[tuple[str, ...]] = ("ANTHROPIC_BASE_URL",)
    strip_url_suffixes: ClassVar[tuple[str, ...]] = ("/v1",)
    api_key_keys: ClassVar[tuple[str, ...]] = ("claude_api_key", "anthropic_api_key")
    api_key_env: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY",)
    requires_api_key: ClassVar[bool] = True
    default_model: ClassVar[str | None] = "claude-haiku-4-5"
    model_patterns: ClassVar[tuple[str, ...]] = (r"claude-.*", r"anthropic/claude-.*")

    def _static_headers(self) -> dict[str, str]:
        return {"anthropic-version": str(self.metadata.get("anthropic_version") or API_VERSION)}

    def _auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self._api_key.reveal()} if self._api_key else {}

    def _health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", "/v1/models", params={"limit": "1"})

    def _body(
        self, model: str | None, messages: Any, options: dict[str, Any], stream: bool
    ) -> dict[str, Any]:
        system, turns = convert_messages(messages, self.provider)
        extra_body = options.pop("extra_body", None)
        body: dict[str, Any] = {
            "model": model or self.get_default_model(),
            "max_tokens": options.pop("max_tokens", None)
            or self.metadata.get("max_tokens")
            or 1024,
            "messages": turns,
        }
        if "system" in options:
            explicit = options.pop("system")
            system = f"{explicit}\n\n{system}" if system else explicit
        if system:
            body["system"] = system
        stop = options.pop("stop", None)
        if stop:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        tools = options.pop("tools", None)
        if tools:
            body["tools"] = convert_tools(tools)
        choice = convert_tool_choice(options.pop("tool_choice", None))
        if choice:
            body["tool_choice"] = choice
        body.update(options)
        if stream:
            body["stream"] = True
        if extra_body:
            body.update(extra_body)
        return body

    async def chat(self, model: str | None, messages: Any, **options: Any) -> ChatResponse:
        opts = self._options(options)
        request = HTTPRequest(
            "POST", "/v1/messages", json=self._body(model, messages, options, False)
        )
        return await self._request(request, opts, self._parse_message, what="chat")

    def _parse_message(self, raw: RawResponse) -> ChatResponse:
        what, provider = "chat", self.provider
        data = self._json(raw, what)
        if opt(data, "type", str, provider, what) == "error":
            raise error_from_event(data, provider)
        texts, calls = [], []
        for block in need(data, "content", list, provider, what):
            kind = need(block, "type", str, provider, what)
            if kind == "text":
                texts.append(need(block, "text", str, provider, what))
            elif kind == "tool_use":
                calls.append(
                    ToolCall(
                        id=need(block, "id", str, provider, what),
                        name=need(block, "name", str, provider, what),
                        arguments=parse_arguments(block.get("input")),
                    )
                )
        usage = opt(data, "usage", dict, provider, what, {})
        reason = opt(data, "stop_reason", str, provider, what)
        return ChatResponse(
            text="".join(texts),
            role=opt(data, "role", str, provider, what, "assistant"),
            model=opt(data, "model", str, provider, what),
            finish_reason=STOP_REASONS.get(reason, reason) if reason else None,
            usage=Usage(as_int(usage.get("input_tokens")), as_int(usage.get("output_tokens"))),
            tool_calls=calls,
            raw=data,
            provider=provider,
            request_id=raw.request_id,
        )

    def stream_chat(
        self, model: str | None, messages: Any, **options: Any
    ) -> AsyncIterator[ChatChunk]:
        opts = self._options(options)
        request = HTTPRequest(
            "POST", "/v1/messages", json=self._body(model, messages, options, True), expect="sse"
        )
        limit = self.config.max_response_bytes
        return self._stream(
            request, opts, lambda: _ClaudeStream(self.provider, limit), what="stream_chat",
            on_complete=lambda p: getattr(p, "usage", None),
        )  # fmt: skip

    async def list_models(self, **options: Any) -> list[ModelInfo]:
        """``GET /v1/models``, following ``has_more`` / ``last_id`` pagination."""
        models: list[ModelInfo] = []
        after: str | None = None
        while True:
            page_options = dict(options)
            opts = self._options(page_options)
            params = {"limit": "1000"}
            if after:
                params["after_id"] = after
            request = HTTPRequest("GET", "/v1/models", params=params)
            page, after = await self._request(request, opts, self._parse_models, what="list_models")
            models.extend(page)
            if not after:
                return models

    def _parse_models(self, raw: RawResponse) -> tuple[list[ModelInfo], str | None]:
        what, provider = "list_models", self.provider
        data = self._json(raw, what)
        page = [
            ModelInfo(id=need(item, "id", str, provider, what), owned_by="anthropic", raw=item)
            for item in need(data, "data", list, provider, what)
        ]
        more = opt(data, "has_more", bool, provider, what, False)
        return page, (opt(data, "last_id", str, provider, what) if more and page else None)


class _ClaudeStream:
    __slots__ = (
        "_sse",
        "_tools",
        "complete",
        "finish_reason",
        "input_tokens",
        "model",
        "output_tokens",
        "provider",
        "started",
    )

    def __init__(self, provider: str, limit: int) -> None:
        self.provider = provider
        self._sse = SSEDecoder(provider, limit)
        self._tools = ToolCallAccumulator()
        self.complete = False
        self.started = False
        self.finish_reason: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.model: str | None = None

    @property
    def usage(self) -> Usage:
        return Usage(self.input_tokens, self.output_tokens)

    def feed(self, data: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        provider = self.provider
        for event in self._sse.feed(data):
            if event.event == "ping":
                continue
            obj = event.json(provider)
            if not isinstance(obj, Mapping):
                raise ProtocolError(
                    f"stream event is not an object: {excerpt(event.data)!r}", provider=provider
                )
            kind = obj.get("type", event.event)
            what = f"stream event {kind!r}"
            if kind == "error" or event.event == "error":
                raise error_from_event(obj, provider)
            if self.complete:
                continue
            if kind == "message_start":
                self.started = True
                message = need(obj, "message", dict, provider, what)
                self.model = opt(message, "model", str, provider, what)
                usage = opt(message, "usage", dict, provider, what, {})
                self.input_tokens = as_int(usage.get("input_tokens"))
                self.output_tokens = as_int(usage.get("output_tokens"))
            elif kind == "content_block_start":
                block = need(obj, "content_block", dict, provider, what)
                index = need(obj, "index", int, provider, what)
                if block.get("type") == "tool_use":
                    delta = ToolCallDelta(index=index, id=block.get("id"), name=block.get("name"))
                    self._tools.add(delta)
                    out.append(ChatChunk(tool_call_deltas=[delta], model=self.model, raw=obj))
                elif block.get("type") == "text" and block.get("text"):
                    out.append(ChatChunk(text=str(block["text"]), model=self.model, raw=obj))
            elif kind == "content_block_delta":
                delta_obj = need(obj, "delta", dict, provider, what)
                dtype = delta_obj.get("type")
                if dtype == "text_delta":
                    out.append(
                        ChatChunk(
                            text=need(delta_obj, "text", str, provider, what),
                            model=self.model,
                            raw=obj,
                        )
                    )
                elif dtype == "input_json_delta":
                    piece = ToolCallDelta(
                        index=need(obj, "index", int, provider, what),
                        arguments_delta=need(delta_obj, "partial_json", str, provider, what),
                    )
                    self._tools.add(piece)
                    out.append(ChatChunk(tool_call_deltas=[piece], model=self.model, raw=obj))
                # thinking_delta, signature_delta, citations_delta: kept out of the text
            elif kind == "message_delta":
                delta_obj = opt(obj, "delta", dict, provider, what, {})
                reason = delta_obj.get("stop_reason")
                if isinstance(reason, str):
                    self.finish_reason = STOP_REASONS.get(reason, reason)
                usage = opt(obj, "usage", dict, provider, what, {})
                if as_int(usage.get("output_tokens")) is not None:
                    self.output_tokens = as_int(usage.get("output_tokens"))
                if as_int(usage.get("input_tokens")) is not None:
                    self.input_tokens = as_int(usage.get("input_tokens"))
            elif kind == "message_stop":
                if not self.started:
                    raise ProtocolError("message_stop before message_start", provider=provider)
                self.complete = True
                out.append(
                    final_chunk(self.finish_reason, self.usage, self._tools, self.model, obj)
                )
            # content_block_stop and unknown (future) events carry nothing we need
        return out

    def finish(self) -> list[ChatChunk]:
        self._sse.finish()
        if not self.complete:
            raise StreamInterruptedError(
                "stream ended without 'message_stop'", provider=self.provider
            )
        return []
