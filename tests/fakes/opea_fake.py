"""OPEA ChatQnA megaservice gateway and its OpenAI-style microservices.

``POST /v1/chatqna`` (``messages`` a string or OpenAI messages; ``stream`` defaults to true):
streamed as SSE ``data: b'<token>'`` events, the way the orchestrator relays a TGI-backed
LLM microservice (or ``data: {chat.completion.chunk}`` with ``chunk_style="openai"``), ending
with ``data: [DONE]``; non-streamed, a ``chat.completion`` with ``model: "chatqna"``.
``/v1/embeddings`` and ``/v1/chat/completions`` are the microservices' OpenAI routes;
``GET /v1/health_check``. Errors are FastAPI's ``{"detail": ...}``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from .openai_fake import OpenAIFake, add_openai_routes, split_words

__all__ = ["OPEAFake"]


class OPEAFake(OpenAIFake):
    provider = "opea"

    def __init__(self, chunk_style: str = "bytes") -> None:
        self.chunk_style = chunk_style
        super().__init__(
            api_key=None,
            prefix="/v1",
            models=("*",),
            error_style="opea",
            surfaces=False,
            owned_by="opea",
        )

    def setup_routes(self, app: web.Application) -> None:
        add_openai_routes(self, app, "/v1")
        app.router.add_post("/v1/chatqna", self.chatqna)
        app.router.add_get("/v1/health_check", self.health_check)

    def error_body(self, status: int, message: str, kind: str | None = None) -> Any:
        return {"detail": message}

    async def health_check(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "Service Title": "opea_service@chatqna",
                "Service Description": "OPEA Microservice Infrastructure",
            }
        )

    async def chatqna(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.error_response(
                422, [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}]
            )  # type: ignore[arg-type]
        messages = body.get("messages")
        if isinstance(messages, str):
            question = messages
        elif isinstance(messages, list) and messages:
            question = str(messages[-1].get("content", ""))
        else:
            return web.json_response(
                {
                    "detail": [
                        {"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}
                    ]
                },
                status=422,
            )
        answer = f"Based on the documents: {question}"
        if not body.get("stream", True):
            return web.json_response(
                {
                    "id": "chatcmpl-opea",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": "chatqna",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 0, "total_tokens": 0, "completion_tokens": 0},
                }
            )
        events = []
        for piece in split_words(answer):
            if self.chunk_style == "openai":
                chunk = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "chatqna",
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            else:
                events.append(b"data: " + repr(piece.encode("utf-8")).encode() + b"\n\n")
        return await self.emit(request, events, b"data: [DONE]\n\n")
