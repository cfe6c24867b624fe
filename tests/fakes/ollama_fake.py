"""Ollama's REST API: native NDJSON routes and its OpenAI-compatible ``/v1`` routes.

Native: ``POST /api/chat`` / ``/api/generate`` (``stream`` defaults to true: NDJSON lines
with ``"done": false``, then a ``"done": true`` line with ``done_reason``,
``prompt_eval_count``, ``eval_count`` and durations; ``"stream": false`` gives one JSON
object), ``POST /api/embed``, ``GET /api/tags``, ``POST /api/pull`` (progress lines, then
``{"status": "success"}``), ``GET /api/version``, ``GET /`` ("Ollama is running"). Errors are
``{"error": "..."}`` (404 for an unknown model); an error can also arrive as a stream line.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ._server import fake_embedding, word_count
from .openai_fake import OpenAIFake, add_openai_routes, reply_for, split_words

__all__ = ["OllamaFake"]

_CREATED = "2024-11-21T08:00:00.000000Z"


class OllamaFake(OpenAIFake):
    provider = "ollama"

    def __init__(
        self,
        models: tuple[str, ...] = (
            "llama3.2:latest",
            "llama3.2",
            "nomic-embed-text",
            "nomic-embed-text:latest",
        ),
    ) -> None:
        super().__init__(
            api_key=None,
            prefix="/v1",
            models=models,
            error_style="openai",
            surfaces=False,
            owned_by="library",
        )

    def setup_routes(self, app: web.Application) -> None:
        add_openai_routes(self, app, "/v1")
        app.router.add_post("/api/chat", self.api_chat)
        app.router.add_post("/api/generate", self.api_generate)
        app.router.add_post("/api/embed", self.api_embed)
        app.router.add_get("/api/tags", self.api_tags)
        app.router.add_post("/api/pull", self.api_pull)
        app.router.add_get("/api/version", self.api_version)
        app.router.add_get("/", self.root)

    def native_error(self, status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def _native_body(
        self, request: web.Request
    ) -> tuple[dict[str, Any] | None, web.Response | None]:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return None, self.native_error(400, "invalid character looking for beginning of value")
        model = body.get("model")
        if not model:
            return None, self.native_error(400, "model is required")
        if model not in self.known_models:
            return None, self.native_error(404, f"model '{model}' not found, try pulling it first")
        return body, None

    def _final(
        self, body: dict[str, Any], prompt: int, out: int, reason: str, extra: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "model": body["model"],
            "created_at": _CREATED,
            **extra,
            "done": True,
            "done_reason": reason,
            "total_duration": 5_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": prompt,
            "prompt_eval_duration": 1_000_000,
            "eval_count": out,
            "eval_duration": 3_000_000,
        }

    async def api_chat(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._native_body(request)
        if error is not None:
            return error
        assert body is not None
        if not isinstance(body.get("messages"), list):
            return self.native_error(400, "messages is required")
        text, call = reply_for(body["messages"], body.get("tools"))
        prompt = sum(word_count(str(m.get("content", ""))) for m in body["messages"]) or 1
        out = word_count(text) if text else 4
        reason = "stop"
        limit = (body.get("options") or {}).get("num_predict")
        if text and isinstance(limit, int) and limit < out:
            text, out, reason = " ".join(text.split(" ")[:limit]), limit, "length"
        message: dict[str, Any] = {"role": "assistant", "content": text or ""}
        if call:
            message["tool_calls"] = [
                {"function": {"name": call["name"], "arguments": call["arguments"]}}
            ]
        if body.get("stream") is False:
            return web.json_response(self._final(body, prompt, out, reason, {"message": message}))
        lines = []
        if call:
            lines.append(
                json.dumps(
                    {
                        "model": body["model"],
                        "created_at": _CREATED,
                        "message": message,
                        "done": False,
                    }
                ).encode()
                + b"\n"
            )
        else:
            for piece in split_words(text or ""):
                lines.append(
                    json.dumps(
                        {
                            "model": body["model"],
                            "created_at": _CREATED,
                            "message": {"role": "assistant", "content": piece},
                            "done": False,
                        }
                    ).encode()
                    + b"\n"
                )
        final = (
            json.dumps(
                self._final(
                    body, prompt, out, reason, {"message": {"role": "assistant", "content": ""}}
                )
            ).encode()
            + b"\n"
        )
        error_line = (
            b'{"error":"an error was encountered while running the model: unexpected EOF"}\n'
        )
        return await self.emit(
            request,
            lines,
            final,
            content_type="application/x-ndjson",
            error_event=error_line,
            charset=None,
        )

    async def api_generate(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._native_body(request)
        if error is not None:
            return error
        assert body is not None
        text = f"Echo: {body.get('prompt', '')}"
        prompt, out = word_count(body.get("prompt", "")) or 1, word_count(text)
        if body.get("stream") is False:
            return web.json_response(
                self._final(body, prompt, out, "stop", {"response": text, "context": [1, 2, 3]})
            )
        lines = [
            json.dumps(
                {"model": body["model"], "created_at": _CREATED, "response": p, "done": False}
            ).encode()
            + b"\n"
            for p in split_words(text)
        ]
        final = (
            json.dumps(
                self._final(body, prompt, out, "stop", {"response": "", "context": [1, 2, 3]})
            ).encode()
            + b"\n"
        )
        return await self.emit(
            request, lines, final, content_type="application/x-ndjson", charset=None
        )

    async def api_embed(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._native_body(request)
        if error is not None:
            return error
        assert body is not None
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not inputs:
            return self.native_error(400, "input is required")
        return web.json_response(
            {
                "model": body["model"],
                "embeddings": [fake_embedding(x) for x in inputs],
                "total_duration": 1_000_000,
                "load_duration": 10_000,
                "prompt_eval_count": sum(word_count(x) for x in inputs),
            }
        )

    async def api_tags(self, request: web.Request) -> web.StreamResponse:
        models = [
            {
                "name": m,
                "model": m,
                "modified_at": _CREATED,
                "size": 2019393189,
                "digest": "a80c4f17acd5",
                "details": {
                    "format": "gguf",
                    "family": "llama",
                    "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M",
                },
            }
            for m in self.known_models
        ]
        return web.json_response({"models": models})

    async def api_pull(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.native_error(400, "invalid JSON")
        name = body.get("model") or body.get("name")
        if not name:
            return self.native_error(400, "model is required")
        if name.startswith("missing"):
            return self.native_error(500, "pull model manifest: file does not exist")
        lines = [b'{"status":"pulling manifest"}\n']
        total = 1000
        for done in (0, 400, 1000):
            lines.append(
                json.dumps(
                    {
                        "status": "pulling 6a0746a1ec1a",
                        "digest": "sha256:6a0746a1ec1a",
                        "total": total,
                        "completed": done,
                    }
                ).encode()
                + b"\n"
            )
        lines += [b'{"status":"verifying sha256 digest"}\n', b'{"status":"writing manifest"}\n']
        self.known_models.append(name)
        error_line = b'{"error":"max retries exceeded: unexpected EOF"}\n'
        return await self.emit(
            request,
            lines,
            b'{"status":"success"}\n',
            content_type="application/x-ndjson",
            error_event=error_line,
            charset=None,
        )

    async def api_version(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"version": "0.5.1"})

    async def root(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="Ollama is running")
