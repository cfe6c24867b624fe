"""Hugging Face Text Embeddings Inference (TEI) REST API.

``POST /embed`` (``{"inputs": str | [str], "normalize", "truncate"}`` -> ``[[float]]``),
``POST /rerank`` (``{"query", "texts", "raw_scores", "return_text"}`` -> ``[{"index", "score",
"text"?}]`` sorted by descending score), ``GET /info``, ``GET /health``. Errors:
``{"error", "error_type"}``: 413 when a batch exceeds ``max_client_batch_size``, 422 for
empty input, 429 overloaded.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ._server import FakeServer, fake_embedding

__all__ = ["TEIFake"]

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


class TEIFake(FakeServer):
    provider = "hf_tei"

    def __init__(self, max_batch: int = 32) -> None:
        self.max_batch = max_batch
        super().__init__(None)

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/embed", self.embed)
        app.router.add_post("/rerank", self.rerank)
        app.router.add_get("/info", self.info)
        app.router.add_get("/health", self.health)

    def error_body(self, status: int, message: str, kind: str | None = None) -> Any:
        kinds = {
            413: "Validation",
            422: "Validation",
            424: "Backend",
            429: "Overloaded",
            500: "Backend",
        }
        return {"error": message, "error_type": kind or kinds.get(status, "Backend")}

    async def _json(self, request: web.Request) -> tuple[Any, web.Response | None]:
        try:
            return json.loads(await request.read()), None
        except ValueError:
            return None, self.error_response(422, "Failed to parse the request body as JSON")

    async def embed(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._json(request)
        if error is not None:
            return error
        inputs = body.get("inputs")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not inputs:
            return self.error_response(422, "`inputs` cannot be empty")
        if len(inputs) > self.max_batch:
            return self.error_response(
                413, f"batch size {len(inputs)} > maximum allowed batch size {self.max_batch}"
            )
        return web.json_response([fake_embedding(x, 16) for x in inputs])

    async def rerank(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._json(request)
        if error is not None:
            return error
        query, texts = body.get("query"), body.get("texts")
        if not query or not texts:
            return self.error_response(422, "`texts` cannot be empty")
        qwords = set(query.lower().split())
        scored = []
        for i, text in enumerate(texts):
            overlap = len(qwords & set(text.lower().split()))
            score = overlap / (len(qwords) or 1)
            entry: dict[str, Any] = {
                "index": i,
                "score": score if not body.get("raw_scores") else score * 10 - 5,
            }
            if body.get("return_text"):
                entry["text"] = text
            scored.append(entry)
        scored.sort(key=lambda e: e["score"], reverse=True)
        return web.json_response(scored)

    async def info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "model_id": MODEL_ID,
                "model_sha": None,
                "model_dtype": "float16",
                "model_type": {"embedding": {"pooling": "mean"}},
                "max_concurrent_requests": 512,
                "max_input_length": 512,
                "max_batch_tokens": 16384,
                "max_batch_requests": None,
                "max_client_batch_size": self.max_batch,
                "tokenization_workers": 2,
                "version": "1.5.0",
            }
        )

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)
