"""vLLM's OpenAI-compatible server (``vllm serve``).

OpenAI routes under ``/v1`` with vLLM's error object ``{"object": "error", "message", "type",
"param", "code"}``; ``GET /health``; runtime LoRA: ``POST /v1/load_lora_adapter``
(``{"lora_name", "lora_path"}`` -> 200 text ``Success: LoRA adapter '<name>' added
successfully.``; 400 ``InvalidUserInput`` when already loaded or a field is missing; 404
``NotFoundError`` for a missing path) and ``POST /v1/unload_lora_adapter`` (404 when unknown).
Loaded adapters are listed in ``/v1/models`` with ``root`` (their path) and ``parent``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .openai_fake import OpenAIFake, add_openai_routes

__all__ = ["VLLMFake"]

BASE_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


class VLLMFake(OpenAIFake):
    provider = "vllm"

    def __init__(self, api_key: str | None = None, chunk_delay: float = 0.0) -> None:
        self.adapters: dict[str, str] = {}
        super().__init__(
            api_key=api_key,
            prefix="/v1",
            models=(BASE_MODEL, "BAAI/bge-small-en-v1.5"),
            error_style="vllm",
            surfaces=False,
            owned_by="vllm",
            chunk_delay=chunk_delay,
        )

    def setup_routes(self, app: web.Application) -> None:
        add_openai_routes(self, app, "/v1")
        app.router.add_get("/health", self.health)
        app.router.add_post("/v1/load_lora_adapter", self.load_lora)
        app.router.add_post("/v1/unload_lora_adapter", self.unload_lora)

    def model_cards(self) -> list[dict[str, Any]]:
        cards = [
            {
                "id": m,
                "object": "model",
                "created": 1700000000,
                "owned_by": "vllm",
                "root": m,
                "parent": None,
                "max_model_len": 8192,
                "permission": [],
            }
            for m in self.known_models
            if m not in self.adapters
        ]
        cards += [
            {
                "id": name,
                "object": "model",
                "created": 1700000000,
                "owned_by": "vllm",
                "root": path,
                "parent": BASE_MODEL,
                "max_model_len": None,
                "permission": [],
            }
            for name, path in self.adapters.items()
        ]
        return cards

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def load_lora(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._body(request)
        if error is not None:
            return error
        assert body is not None
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return self.error_response(
                400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput"
            )
        if name in self.adapters:
            return self.error_response(
                400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput"
            )
        if "missing" in path:
            return self.error_response(404, f"No adapter found for {path}", "NotFoundError")
        self.adapters[name] = path
        self.known_models.append(name)
        return web.Response(
            text=f"Success: LoRA adapter '{name}' added successfully.", headers=self._headers()
        )

    async def unload_lora(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._body(request)
        if error is not None:
            return error
        assert body is not None
        name = body.get("lora_name")
        if not name and not body.get("lora_int_id"):
            return self.error_response(
                400,
                "either 'lora_name' and 'lora_int_id' needs to be provided.",
                "InvalidUserInput",
            )
        if name not in self.adapters:
            return self.error_response(
                404, f"The lora adapter '{name}' cannot be found.", "NotFoundError"
            )
        del self.adapters[name]
        self.known_models.remove(name)
        return web.Response(
            text=f"Success: LoRA adapter '{name}' removed successfully.", headers=self._headers()
        )
