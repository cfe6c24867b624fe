"""Anthropic's Messages API as api.anthropic.com speaks it.

``POST /v1/messages`` requires the key (``x-api-key``, or ``Authorization: Bearer`` as recent
SDKs send it) and an ``anthropic-version`` header; ``max_tokens`` is required. Answers a
``message`` object, or with ``stream: true`` named SSE events (``event: message_start`` ...
``event: message_stop``, with ``ping`` events in between).
Errors: ``{"type": "error", "error": {"type", "message"}}`` with a ``request-id`` header;
529 ``overloaded_error``; an ``event: error`` can be injected after HTTP 200.
``GET /v1/models`` pages with ``has_more`` / ``first_id`` / ``last_id``.

Behaviour: answers ``"Echo: <last user text>"``; with tools and a user turn last, it
calls the first tool with ``{"query": <text>}`` (streamed as ``input_json_delta`` pieces);
after a ``tool_result`` it answers ``"Tool said: <content>"``.
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

from aiohttp import web

from ._server import FakeServer, word_count

__all__ = ["AnthropicFake"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _content_text(content: Any) -> str:
    """The words a model would see: strings, text blocks and tool results, not the JSON framing."""
    if isinstance(content, str):
        return content
    words = []
    for block in content or ():
        if isinstance(block, dict):
            value = block.get("text", block.get("content", ""))
            words.append(value if isinstance(value, str) else json.dumps(value))
    return " ".join(words)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class AnthropicFake(FakeServer):
    provider = "claude"
    request_id_header = "request-id"

    def __init__(
        self,
        api_key: str | None = "sk-ant-test-123",
        models: tuple[str, ...] = ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-7"),
    ) -> None:
        self.known_models = list(models)
        super().__init__(api_key)

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.models)

    def error_body(self, status: int, message: str, kind: str | None = None) -> Any:
        return {
            "type": "error",
            "error": {"type": kind or _ERROR_TYPES.get(status, "api_error"), "message": message},
        }

    def _check_headers(self, request: web.Request) -> web.Response | None:
        # the documented header is x-api-key; the API also takes the key as a Bearer token
        # (what recent official SDKs send), so accept either, as the service does
        given = request.headers.get("x-api-key")
        bearer = request.headers.get("Authorization", "")
        if given is None and bearer.startswith("Bearer "):
            given = bearer[7:]
        if self.api_key is not None and given != self.api_key:
            return self.error_response(401, "invalid x-api-key", "authentication_error")
        if not request.headers.get("anthropic-version"):
            return self.error_response(
                400, "anthropic-version: header is required", "invalid_request_error"
            )
        return None

    async def models(self, request: web.Request) -> web.StreamResponse:
        bad = self._check_headers(request)
        if bad is not None:
            return bad
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after_id")
        ids = self.known_models
        start = ids.index(after) + 1 if after in ids else 0
        page = ids[start : start + limit]
        data = [
            {
                "type": "model",
                "id": m,
                "display_name": m.replace("-", " ").title(),
                "created_at": "2025-01-01T00:00:00Z",
            }
            for m in page
        ]
        return self.json_response(
            {
                "data": data,
                "has_more": start + limit < len(ids),
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    async def messages(self, request: web.Request) -> web.StreamResponse:
        bad = self._check_headers(request)
        if bad is not None:
            return bad
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.error_response(
                400, "There was an issue with the format of your request: invalid JSON"
            )
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return self.error_response(400, f"{name}: Field required")
        if body["model"] not in self.known_models:
            return self.error_response(404, f"model: {body['model']}", "not_found_error")
        messages = body["messages"]
        if not messages or messages[0].get("role") != "user":
            return self.error_response(400, 'messages: first message must use the "user" role')
        for a, b in itertools.pairwise(messages):
            if a.get("role") == b.get("role"):
                return self.error_response(
                    400, 'messages: roles must alternate between "user" and "assistant"'
                )
        last = messages[-1]
        content = last.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        tool_results = [b for b in blocks if b.get("type") == "tool_result"]
        user_text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        call = None
        if tool_results:
            text: str | None = f"Tool said: {tool_results[-1].get('content')}"
        elif body.get("tools"):
            text, call = (
                None,
                {
                    "id": "toolu_" + uuid.uuid4().hex[:20],
                    "name": body["tools"][0]["name"],
                    "input": {"query": user_text},
                },
            )
        else:
            text = f"Echo: {user_text}"
        in_tokens = sum(word_count(_content_text(m.get("content"))) for m in messages) + word_count(
            _content_text(body.get("system"))
        )
        out_tokens = word_count(text) if text else 5
        stop = "tool_use" if call else "end_turn"
        if text and body["max_tokens"] < out_tokens:
            text = " ".join(text.split(" ")[: body["max_tokens"]])
            out_tokens, stop = body["max_tokens"], "max_tokens"
        message_id = "msg_" + uuid.uuid4().hex[:24]
        if not body.get("stream"):
            content_blocks: list[dict[str, Any]] = []
            if text is not None:
                content_blocks.append({"type": "text", "text": text})
            if call:
                content_blocks.append({"type": "tool_use", **call})
            return self.json_response(
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": content_blocks,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": in_tokens,
                        "output_tokens": out_tokens,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                }
            )
        events = [
            _event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": body["model"],
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": in_tokens, "output_tokens": 1},
                    },
                },
            ),
        ]
        if text is not None:
            events.append(
                _event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            events.append(b'event: ping\ndata: {"type": "ping"}\n\n')
            words = text.split(" ")
            for i, word in enumerate(words):
                piece = word + (" " if i < len(words) - 1 else "")
                events.append(
                    _event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
                )
            events.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        if call:
            events.append(
                _event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {
                            "type": "tool_use",
                            "id": call["id"],
                            "name": call["name"],
                            "input": {},
                        },
                    },
                )
            )
            args = json.dumps(call["input"])
            for i in range(0, len(args), 6):
                events.append(
                    _event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "input_json_delta", "partial_json": args[i : i + 6]},
                        },
                    )
                )
            events.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        events.append(
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": out_tokens},
                },
            )
        )
        error_event = _event(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
        return await self.emit(
            request,
            events,
            _event("message_stop", {"type": "message_stop"}),
            error_event=error_event,
        )
