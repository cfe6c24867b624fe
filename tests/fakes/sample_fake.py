"""The protocol of the reference backend (see ``ipfs_accelerate.api_backends.sample_backend``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from ._server import FakeServer, fake_embedding, word_count

__all__ = ["SampleFake"]


class SampleFake(FakeServer):
    provider = "sample_backend"

    def __init__(self, api_key: str | None = "sample-key-123") -> None:
        super().__init__(api_key)

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/generate", self.generate)
        app.router.add_post("/v1/embed", self.embed)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)

    def error_body(self, status: int, message: str, kind: str | None = None) -> Any:
        return {"error": {"message": message, "type": kind or "error"}}

    async def _body(self, request: web.Request) -> tuple[Any, web.Response | None]:
        if not self.bearer_ok(request):
            return None, self.error_response(401, "bad credentials", "auth")
        try:
            return json.loads(await request.read()), None
        except ValueError:
            return None, self.error_response(400, "invalid JSON", "invalid")

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._body(request)
        if error is not None:
            return error
        messages = body.get("messages") or []
        text = "Echo: " + str(messages[-1].get("content", "")) if messages else ""
        usage = {
            "input_tokens": sum(word_count(str(m.get("content", ""))) for m in messages),
            "output_tokens": word_count(text),
        }
        if not body.get("stream"):
            return self.json_response(
                {
                    "id": uuid.uuid4().hex,
                    "model": body.get("model"),
                    "text": text,
                    "finish_reason": "stop",
                    "usage": usage,
                }
            )
        words = text.split(" ")
        lines = [
            json.dumps({"delta": w + (" " if i < len(words) - 1 else "")}).encode() + b"\n"
            for i, w in enumerate(words)
        ]
        final = json.dumps({"done": True, "finish_reason": "stop", "usage": usage}).encode() + b"\n"
        return await self.emit(
            request,
            lines,
            final,
            content_type="application/x-ndjson",
            error_event=b'{"error": {"message": "boom"}}\n',
            charset=None,
        )

    async def embed(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._body(request)
        if error is not None:
            return error
        return self.json_response(
            {
                "model": body.get("model"),
                "embeddings": [fake_embedding(x) for x in body.get("inputs") or []],
            }
        )

    async def models(self, request: web.Request) -> web.StreamResponse:
        if not self.bearer_ok(request):
            return self.error_response(401, "bad credentials", "auth")
        return self.json_response({"models": [{"id": "sample-small"}, {"id": "sample-large"}]})

    async def health(self, request: web.Request) -> web.StreamResponse:
        return self.json_response({"status": "ok"})
