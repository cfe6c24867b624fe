"""An MLC-LLM server (``mlc_llm serve``): OpenAI-compatible ``/v1/chat/completions``
(SSE with ``[DONE]``, ``stream_options.include_usage``), ``/v1/completions`` and
``/v1/models``; no embeddings. Errors: ``{"object": "error", "message", "code"}``.

Its management surface as the server has it: ``GET /metrics`` (the engine metrics in
Prometheus text) always; with ``enable_debug`` (``--enable-debug``) the ``POST /debug/*``
routes, each taking ``{"model"}`` (400 ``Invalid request ...`` without it, 400 ``The requested
model "..." is not served.`` for another): ``dump_engine_stats`` (the metrics as JSON),
``reset_engine`` (clears them; answers ``null``) and ``dump_event_trace`` (Chrome trace events;
400 ``... does not enable tracing`` unless ``enable_tracing``). The metrics count the words of
the prompts and answers of the completions served since the last reset.
"""

from __future__ import annotations

import json
import time

from aiohttp import web

from .openai_fake import OpenAIFake, add_openai_routes

__all__ = ["MLCFake"]

MODEL = "HF://mlc-ai/Llama-3.2-1B-Instruct-q4f16_1-MLC"
#: the engine metrics MLC-LLM's EngineMetrics reports (the time and token sums)
_METRICS = (
    "engine_prefill_time_sum", "engine_decode_time_sum", "prompt_tokens_sum",
    "completion_tokens_sum", "prefill_tokens_sum", "decode_tokens_sum",
)  # fmt: skip


class MLCFake(OpenAIFake):
    provider = "llvm"

    def __init__(self, enable_debug: bool = False, enable_tracing: bool = False) -> None:
        self.enable_debug = enable_debug
        self.enable_tracing = enable_tracing
        self.stats = dict.fromkeys(_METRICS, 0.0)
        self.events: list[dict[str, object]] = []
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
        app.router.add_get("/metrics", self.metrics)
        if self.enable_debug:
            for route in ("dump_engine_stats", "reset_engine", "dump_event_trace"):
                app.router.add_post(f"/debug/{route}", self.debug)

    def _served(self, prompt_words: int, answer_words: int) -> None:
        self.stats["prompt_tokens_sum"] += prompt_words
        self.stats["prefill_tokens_sum"] += prompt_words
        self.stats["completion_tokens_sum"] += answer_words
        self.stats["decode_tokens_sum"] += answer_words
        self.stats["engine_prefill_time_sum"] += 0.001
        self.stats["engine_decode_time_sum"] += 0.002 * answer_words
        self.events.append({"name": "finish", "ph": "i", "ts": len(self.events), "pid": 1})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        response = await super().chat_completions(request)
        if response.status == 200:
            body = json.loads(self.requests[-1].body)
            prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
            last = str(body["messages"][-1].get("content", ""))
            self._served(prompt, len(f"Echo: {last}".split()))
        return response

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        lines = []
        for name in _METRICS:
            lines += [f"# TYPE {name} gauge", f"{name} {self.stats[name]:g}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def debug(self, request: web.Request) -> web.StreamResponse:
        raw = (await request.read()).decode()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict) or "model" not in body:
            return self.error_response(400, f"Invalid request {raw}")
        if body["model"] not in self.known_models:
            return self.error_response(400, f'The requested model "{body["model"]}" is not served.')
        route = request.path.rsplit("/", 1)[-1]
        if route == "dump_engine_stats":
            return web.json_response(self.stats)
        if route == "reset_engine":
            self.stats = dict.fromkeys(_METRICS, 0.0)
            return web.json_response(None)
        if not self.enable_tracing:
            return self.error_response(
                400, f'The requested model "{body["model"]}" does not enable tracing'
            )
        return web.json_response(self.events)

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
        self._served(len(str(body.get("prompt", "")).split()), len(text.split()))
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
