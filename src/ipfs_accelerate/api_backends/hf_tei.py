"""Hugging Face Text Embeddings Inference (TEI).

``POST /embed`` (``{"inputs", "normalize", "truncate"}`` -> a list of vectors),
``POST /rerank`` (``{"query", "texts", "raw_scores", "return_text"}`` -> ``[{"index",
"score", "text"?}]`` sorted by score), ``GET /info``, ``GET /health``. Errors are
``{"error", "error_type"}`` (413 batch too large, 422 validation, 424 backend, 429 overloaded).
TEI serves no chat: ``chat``/``stream_chat`` raise UnsupportedOpError before any request.

Configuration: ``metadata["base_url"]`` / ``hf_tei_api_url`` (required), optional key
(``api_key`` / ``hf_api_key`` / ``$HF_TOKEN``) as a Bearer token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from ipfs_accelerate.errors import InvalidArgumentError, ProtocolError

from ._base import ensure_text_list
from ._hf_info import HFInfoBackend
from ._parse import as_int, need, number_vectors, opt
from ._streams import excerpt
from ._transport import HTTPRequest, RawResponse
from ._types import EmbeddingResponse, RerankResult

__all__ = ["HFTEIBackend"]


class HFTEIBackend(HFInfoBackend):
    provider: ClassVar[str] = "hf_tei"
    summary: ClassVar[str] = "Hugging Face Text Embeddings Inference"
    routes: ClassVar[str] = "`/embed`, `/rerank`, `/info`, `/health`"
    base_url_keys: ClassVar[tuple[str, ...]] = ("hf_tei_api_url",)
    api_key_keys: ClassVar[tuple[str, ...]] = ("hf_api_key",)
    api_key_env: ClassVar[tuple[str, ...]] = ("HF_TOKEN",)
    model_patterns: ClassVar[tuple[str, ...]] = (
        r"[\w.-]+/.*(minilm|mpnet|bge|e5|gte|embed|rerank|nomic|arctic|stella|jina|instructor).*",
    )

    def _health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", "/health", expect="text")

    def get_default_model(self) -> str:
        # TEI serves exactly one model, whatever name the request carries
        return str(self.metadata.get("model") or "tei")

    async def embed(
        self, model: str | None, inputs: str | Sequence[str], **options: Any
    ) -> EmbeddingResponse:
        """``POST /embed``; ``normalize`` (default True), ``truncate``, ``prompt_name`` pass
        through."""
        opts = self._options(options)
        texts = ensure_text_list(inputs, self.provider)
        body = {"inputs": texts, "normalize": options.pop("normalize", True), **options}
        request = HTTPRequest("POST", "/embed", json=body)
        count = len(texts)

        def parse(raw: RawResponse) -> EmbeddingResponse:
            what, provider = "embed", self.provider
            data = self._json(raw, what)
            if not isinstance(data, list) or len(data) != count:
                got = len(data) if isinstance(data, list) else type(data).__name__
                raise ProtocolError(
                    f"{what}: expected {count} vector(s), got {got}: {excerpt(raw.body)!r}",
                    provider=provider,
                )
            vectors = number_vectors(data, count, provider, what)
            return EmbeddingResponse(
                embeddings=vectors, model=model, raw=None, provider=provider,
                request_id=raw.request_id,
            )  # fmt: skip

        return await self._request(request, opts, parse, what="embed")

    async def rerank(
        self,
        query: str,
        texts: Sequence[str],
        *,
        return_text: bool = False,
        raw_scores: bool = False,
        **options: Any,
    ) -> list[RerankResult]:
        """``POST /rerank``: results ordered by descending score, ``index`` into ``texts``."""
        if not isinstance(query, str):
            raise InvalidArgumentError(
                f"{self.provider}: query must be a string, got {type(query).__name__}"
            )
        items = ensure_text_list(list(texts), self.provider) if not isinstance(texts, str) else None
        if items is None:
            raise InvalidArgumentError(
                f"{self.provider}: texts must be a list of strings, not one string"
            )
        opts = self._options(options)
        body = {
            "query": query,
            "texts": items,
            "return_text": return_text,
            "raw_scores": raw_scores,
            **options,
        }
        request = HTTPRequest("POST", "/rerank", json=body)
        count = len(items)

        def parse(raw: RawResponse) -> list[RerankResult]:
            what, provider = "rerank", self.provider
            data = self._json(raw, what)
            if not isinstance(data, list):
                raise ProtocolError(
                    f"{what}: expected a list: {excerpt(raw.body)!r}", provider=provider
                )
            results = []
            for entry in data:
                index = as_int(need(entry, "index", int, provider, what))
                if index is None or not 0 <= index < count:
                    raise ProtocolError(
                        f"{what}: index {index} out of range for {count} text(s)", provider=provider
                    )
                results.append(
                    RerankResult(
                        index=index,
                        score=float(need(entry, "score", (int, float), provider, what)),
                        text=opt(entry, "text", str, provider, what),
                    )
                )
            results.sort(key=lambda r: r.score, reverse=True)
            return results

        return await self._request(request, opts, parse, what="rerank")
