"""An MLC-LLM server (``mlc_llm serve``): OpenAI-compatible ``/v1/chat/completions``
(SSE with ``[DONE]``, ``stream_options.include_usage``), ``/v1/completions`` and
``/v1/models``; no embeddings. Errors: ``{"object": "error", "message", "code"}``.
"""

from __future__ import annotations

import json
import time

from aiohttp import web

from .openai_fake import OpenAIFake, add_openai_routes

__all__ = ["MLCFake"]

MODEL = "HF://mlc-ai/Llama-3.2-1B-Instruct-q4f16_1-MLC"


class MLCFake(OpenAIFake):
    provider = "llvm"

    def __init__(self) -> None:
        super().__init__(
            api_key=None,
            prefix="/v1",
            models=(MODEL,),
            error_style="mlc",
            surfaces=False,
            embeddings=False,
            owned_by="MLC-LLM",
        )

    def setup_routes(self, app: web.Application) -> None:
        add_openai_routes(self, app, "/v1", embeddings=False)
        app.router.add_post("/v1/completions", self.completions)

    def error_body(self, status: int, message: str, kind: str | None = None) -> dict[str, object]:
        return {"object": "error", "message": message, "code": status}

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._body(request)
        if error is not None:
            return error
        assert body is not None
        missing = self._model_error(body.get("model"))
        if missing is not None:
            return missing
        text = f" continued: {body.get('prompt', '')}"
        return self.json_response(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                "usage": {
                    "prompt_tokens": len(json.dumps(body.get("prompt", "")).split()),
                    "completion_tokens": len(text.split()),
                    "total_tokens": 0,
                },
            }
        )
