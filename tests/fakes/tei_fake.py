"""Hugging Face Text Embeddings Inference (TEI) REST API.

``POST /embed`` (``{"inputs": str | [str], "normalize", "truncate"}`` -> ``[[float]]``),
``POST /rerank`` (``{"query", "texts", "raw_scores", "return_text"}`` -> ``[{"index", "score",
"text"?}]`` sorted by descending score), ``POST /predict`` (``{"inputs": text | [first,
second] | [[text] or [first, second], ...]}`` -> ``[{"score", "label"}]`` for one input,
a list of those for a batch), ``POST /embed_all`` (-> ``[[[float]]]``, one vector per
whitespace-separated word between two special tokens), ``POST /tokenize`` (-> ``[[{"id",
"text", "special", "start", "stop"}]]``, words as tokens with UTF-8 byte offsets) and
``POST /decode`` (``{"ids": [int] | [[int]]}`` -> ``[str]``), ``GET /info``, ``GET /health``.
Errors:
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
        app.router.add_post("/predict", self.predict)
        app.router.add_post("/embed_all", self.embed_all)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/decode", self.decode)
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

    #: the fake classifier's labels, and its vocabulary: [CLS], [SEP], then words as seen
    LABELS = ("negative", "positive")

    def _vocab_id(self, word: str) -> int:
        vocab = self.__dict__.setdefault("_vocab", {"[CLS]": 0, "[SEP]": 1})
        return int(vocab.setdefault(word, len(vocab)))

    def _words(self, text: str) -> list[tuple[str, int, int]]:
        """Each whitespace-separated word with its UTF-8 byte offsets."""
        out, offset = [], 0
        for word in text.split(" "):
            size = len(word.encode())
            if word:
                out.append((word, offset, offset + size))
            offset += size + 1
        return out

    async def predict(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._json(request)
        if error is not None:
            return error
        inputs = body.get("inputs")
        batch = True
        if isinstance(inputs, str):
            items, batch = [[inputs]], False
        elif (
            isinstance(inputs, list)
            and len(inputs) == 2
            and all(isinstance(t, str) for t in inputs)
        ):
            items, batch = [inputs], False  # TEI: a bare list of two strings is one pair
        else:
            items = inputs
        if not items:
            return self.error_response(400, "`inputs` cannot be empty", "Empty")
        results = []
        for item in items:
            # "positive" in proportion to the words the two texts share
            words = [set(part.lower().split()) for part in item]
            shared = len(words[0] & words[-1]) / max(1, len(words[0] | words[-1]))
            scores = {"positive": shared, "negative": 1.0 - shared}
            ranked = sorted(self.LABELS, key=lambda label: -scores[label])
            results.append([{"score": scores[label], "label": label} for label in ranked])
        return web.json_response(results if batch else results[0])

    async def embed_all(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._json(request)
        if error is not None:
            return error
        inputs = body.get("inputs")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not inputs:
            return self.error_response(400, "`inputs` cannot be empty", "Empty")
        return web.json_response(
            [
                [fake_embedding(token, 4) for token in ["[CLS]", *text.split(), "[SEP]"]]
                for text in inputs
            ]
        )

    async def tokenize(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._json(request)
        if error is not None:
            return error
        inputs = body.get("inputs")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        special = body.get("add_special_tokens", True)
        out = []
        for text in inputs:
            tokens = [
                {"id": self._vocab_id(w), "text": w, "special": False, "start": a, "stop": b}
                for w, a, b in self._words(text)
            ]
            if special:
                tokens = [
                    {"id": 0, "text": "[CLS]", "special": True, "start": None, "stop": None},
                    *tokens,
                    {"id": 1, "text": "[SEP]", "special": True, "start": None, "stop": None},
                ]
            out.append(tokens)
        return web.json_response(out)

    async def decode(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._json(request)
        if error is not None:
            return error
        ids = body.get("ids")
        sequences = ids if ids and all(isinstance(v, list) for v in ids) else [ids]
        words = {index: word for word, index in self.__dict__.get("_vocab", {}).items()}
        skip = body.get("skip_special_tokens", True)
        texts = []
        for sequence in sequences:
            if any(token not in words and token > 1 for token in sequence):
                return self.error_response(422, f"unknown token id in {sequence}")
            kept = [t for t in sequence if not (skip and t in (0, 1))]
            texts.append(" ".join(words.get(t, "[CLS]" if t == 0 else "[SEP]") for t in kept))
        return web.json_response(texts)

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
