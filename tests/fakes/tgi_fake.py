"""Hugging Face Text Generation Inference (TGI 2.x/3.x) REST API.

``POST /generate`` -> ``{"generated_text", "details": {"finish_reason", "generated_tokens",
"seed", "prefill", "tokens"}}``; ``POST /generate_stream`` -> SSE written the way TGI's axum
server writes it, ``data:{...}`` (no space) per token, the last event with
``generated_text`` and ``details``, and no ``[DONE]``; ``GET /info``; ``GET /health`` (200,
empty body); the Messages API at ``/v1/chat/completions`` (OpenAI chunks, ``[DONE]``).
Errors: ``{"error", "error_type"}`` (422 validation, 424 generation, 429 overloaded);
stream errors arrive as a ``data:{"error", "error_type"}`` event.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .openai_fake import OpenAIFake, add_openai_routes

__all__ = ["TGIFake"]

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class TGIFake(OpenAIFake):
    provider = "hf_tgi"

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__(
            api_key=api_key,
            prefix="/v1",
            models=("*",),
            error_style="tgi",
            surfaces=False,
            embeddings=False,
            owned_by=MODEL_ID,
        )

    def setup_routes(self, app: web.Application) -> None:
        add_openai_routes(self, app, "/v1", embeddings=False)
        app.router.add_post("/generate", self.generate)
        app.router.add_post("/generate_stream", self.generate_stream)
        app.router.add_get("/info", self.info)
        app.router.add_get("/health", self.health)

    def model_cards(self) -> list[dict[str, Any]]:
        return [{"id": MODEL_ID, "object": "model", "created": 1700000000, "owned_by": MODEL_ID}]

    def _tokens(self, inputs: str, params: dict[str, Any]) -> tuple[list[str], str]:
        words = f"Echo: {inputs}".split(" ")
        pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
        limit = params.get("max_new_tokens")
        reason = "eos_token"
        if isinstance(limit, int) and limit < len(pieces):
            pieces, reason = pieces[:limit], "length"
        return pieces, reason

    async def _parse(
        self, request: web.Request
    ) -> tuple[dict[str, Any] | None, web.Response | None]:
        if not self.bearer_ok(request):
            return None, web.json_response(
                {"error": "Authorization header is invalid", "error_type": "authentication"},
                status=401,
            )
        try:
            body = json.loads(await request.read())
        except ValueError:
            return None, web.json_response(
                {
                    "error": "Failed to deserialize the JSON body into the target type",
                    "error_type": "validation",
                },
                status=422,
            )
        if not isinstance(body.get("inputs"), str) or not body["inputs"]:
            return None, web.json_response(
                {
                    "error": "Input validation error: `inputs` cannot be empty",
                    "error_type": "validation",
                },
                status=422,
            )
        params = body.get("parameters") or {}
        temp = params.get("temperature")
        if temp is not None and temp <= 0:
            return None, web.json_response(
                {
                    "error": "Input validation error: `temperature` must be strictly positive",
                    "error_type": "validation",
                },
                status=422,
            )
        return body, None

    def _details(
        self, pieces: list[str], reason: str, inputs: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        details: dict[str, Any] = {
            "finish_reason": reason,
            "generated_tokens": len(pieces),
            "seed": params.get("seed"),
        }
        details["prefill"] = (
            [{"id": 1, "text": "<s>", "logprob": None}]
            if params.get("decoder_input_details")
            else []
        )
        details["tokens"] = [
            {"id": 100 + i, "text": p, "logprob": -0.25, "special": False}
            for i, p in enumerate(pieces)
        ]
        return details

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._parse(request)
        if error is not None:
            return error
        assert body is not None
        params = body.get("parameters") or {}
        pieces, reason = self._tokens(body["inputs"], params)
        data: dict[str, Any] = {"generated_text": "".join(pieces)}
        if params.get("details"):
            data["details"] = self._details(pieces, reason, body["inputs"], params)
        return web.json_response(data)

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._parse(request)
        if error is not None:
            return error
        assert body is not None
        params = body.get("parameters") or {}
        pieces, reason = self._tokens(body["inputs"], params)
        events = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            event = {
                "index": i + 1,
                "token": {"id": 100 + i, "text": piece, "logprob": -0.25, "special": False},
                "top_tokens": None,
                "generated_text": "".join(pieces) if last else None,
                "details": {
                    "finish_reason": reason,
                    "generated_tokens": len(pieces),
                    "seed": params.get("seed"),
                    "input_length": len(body["inputs"].split()),
                }
                if last
                else None,
            }
            events.append(b"data:" + json.dumps(event).encode() + b"\n\n")
        error_event = (
            b"data:"
            + json.dumps(
                {
                    "error": "Request failed during generation: Server error: CUDA out of memory",
                    "error_type": "generation",
                }
            ).encode()
            + b"\n\n"
        )
        return await self.emit(request, events, None, error_event=error_event, charset=None)

    async def info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "model_id": MODEL_ID,
                "model_sha": "abc123",
                "model_dtype": "torch.float16",
                "model_device_type": "cuda",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": 4095,
                "max_total_tokens": 4096,
                "validation_workers": 2,
                "version": "3.0.1",
                "sha": "deadbeef",
            }
        )

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)
