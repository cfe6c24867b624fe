"""Hugging Face Text Embeddings Inference (TEI).

``POST /embed`` (``{"inputs", "normalize", "truncate"}`` -> a list of vectors),
``POST /embed_all`` (``{"inputs", "truncate"}`` -> every token's vector of each input),
``POST /rerank`` (``{"query", "texts", "raw_scores", "return_text"}`` -> ``[{"index",
"score", "text"?}]`` sorted by score), ``POST /predict`` (``{"inputs": [[text] or [first,
second], ...], "raw_scores"}`` -> ``[[{"score", "label"}, ...] per input]``), ``POST
/tokenize`` (``{"inputs", "add_special_tokens"}`` -> ``[[{"id", "text", "special", "start",
"stop"}] per input]``), ``POST /decode`` (``{"ids": [[int]], "skip_special_tokens"}`` -> one
string per sequence), ``GET /info``, ``GET /health``. Errors are
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
from ._types import EmbeddingResponse, RerankResult, TEIPrediction, TEIToken

__all__ = ["HFTEIBackend"]


class HFTEIBackend(HFInfoBackend):
    provider: ClassVar[str] = "hf_tei"
    summary: ClassVar[str] = "Hugging Face Text Embeddings Inference"
    routes: ClassVar[str] = (
        "`/embed`, `/embed_all`, `/rerank`, `/predict`, `/tokenize`, `/decode`, `/info`, `/health`"
    )
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

    async def embed_all(
        self, inputs: str | Sequence[str], **options: Any
    ) -> list[list[list[float]]]:
        """``POST /embed_all``: every token's last hidden state of each input, special tokens
        included (``[input][token][dimension]``); ``truncate``, ``prompt_name`` pass
        through."""
        opts = self._options(options)
        texts = ensure_text_list(inputs, self.provider)
        request = HTTPRequest("POST", "/embed_all", json={"inputs": texts, **options})

        def parse(raw: RawResponse) -> list[list[list[float]]]:
            data = self._per_input(raw, "embed_all", len(texts))
            states = []
            for index, tokens in enumerate(data):
                if not isinstance(tokens, list) or not tokens:
                    raise ProtocolError(
                        f"embed_all: input {index} has no token vectors: {excerpt(raw.body)!r}",
                        provider=self.provider,
                    )
                vectors = number_vectors(tokens, len(tokens), self.provider, "embed_all")
                if len({len(v) for v in vectors}) != 1:
                    raise ProtocolError(
                        f"embed_all: the token vectors of input {index} differ in size",
                        provider=self.provider,
                    )
                states.append(vectors)
            return states

        return await self._request(request, opts, parse, what="embed_all")

    async def predict(
        self,
        inputs: str | tuple[str, str] | Sequence[str | tuple[str, str] | Sequence[str]],
        *,
        raw_scores: bool = False,
        **options: Any,
    ) -> list[list[TEIPrediction]]:
        """``POST /predict`` (sequence classifiers and cross-encoders): each label's score of
        each input, best first, one list per input. An input is a text or a ``(first,
        second)`` pair; a single text or tuple is one input. The body always holds the batch
        form (``[[text], [first, second], ...]``): TEI reads a top-level list of two strings
        as one pair, which a list of two texts must not become. ``truncate`` passes through."""
        items = _predict_items(inputs, self.provider)
        opts = self._options(options)
        body = {"inputs": items, "raw_scores": raw_scores, **options}
        request = HTTPRequest("POST", "/predict", json=body)

        def parse(raw: RawResponse) -> list[list[TEIPrediction]]:
            what, provider = "predict", self.provider
            results = []
            for index, labels in enumerate(self._per_input(raw, what, len(items))):
                if not isinstance(labels, list) or not labels:
                    raise ProtocolError(
                        f"{what}: input {index} has no label scores: {excerpt(raw.body)!r}",
                        provider=provider,
                    )
                results.append(
                    [
                        TEIPrediction(
                            label=need(entry, "label", str, provider, what),
                            score=float(need(entry, "score", (int, float), provider, what)),
                        )
                        for entry in labels
                    ]
                )
            return results

        return await self._request(request, opts, parse, what="predict")

    async def tokenize(
        self,
        inputs: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        **options: Any,
    ) -> list[list[TEIToken]]:
        """``POST /tokenize``: each input's tokens with their UTF-8 byte offsets;
        ``prompt_name`` passes through."""
        opts = self._options(options)
        texts = ensure_text_list(inputs, self.provider)
        body = {"inputs": texts, "add_special_tokens": add_special_tokens, **options}
        request = HTTPRequest("POST", "/tokenize", json=body)

        def parse(raw: RawResponse) -> list[list[TEIToken]]:
            what, provider = "tokenize", self.provider
            out = []
            for index, tokens in enumerate(self._per_input(raw, what, len(texts))):
                if not isinstance(tokens, list):
                    raise ProtocolError(
                        f"{what}: input {index}'s tokens are not a list", provider=provider
                    )
                out.append([_token(entry, provider, what) for entry in tokens])
            return out

        return await self._request(request, opts, parse, what="tokenize")

    async def decode(
        self,
        ids: Sequence[int] | Sequence[Sequence[int]],
        *,
        skip_special_tokens: bool = True,
        **options: Any,
    ) -> list[str]:
        """``POST /decode``: the text of each id sequence; a flat list of ids is one
        sequence (one string back)."""
        sequences = _id_sequences(ids, self.provider)
        opts = self._options(options)
        body = {"ids": sequences, "skip_special_tokens": skip_special_tokens, **options}
        request = HTTPRequest("POST", "/decode", json=body)

        def parse(raw: RawResponse) -> list[str]:
            texts = self._per_input(raw, "decode", len(sequences))
            if not all(isinstance(text, str) for text in texts):
                raise ProtocolError(
                    f"decode: expected strings: {excerpt(raw.body)!r}", provider=self.provider
                )
            return [str(text) for text in texts]

        return await self._request(request, opts, parse, what="decode")

    def _per_input(self, raw: RawResponse, what: str, count: int) -> list[Any]:
        """A JSON list with one entry per input sent."""
        data = self._json(raw, what)
        if not isinstance(data, list) or len(data) != count:
            got = len(data) if isinstance(data, list) else type(data).__name__
            raise ProtocolError(
                f"{what}: expected {count} result(s), one per input, got {got}: "
                f"{excerpt(raw.body)!r}",
                provider=self.provider,
            )
        return data


def _predict_items(inputs: Any, provider: str) -> list[list[str]]:
    """/predict's batch form of ``inputs``: ``[text]`` or ``[first, second]`` per input."""

    def item(value: Any, where: str) -> list[str]:
        if isinstance(value, str):
            return [value]
        if (
            isinstance(value, Sequence)
            and len(value) in (1, 2)
            and all(isinstance(part, str) for part in value)
        ):
            return list(value)
        raise InvalidArgumentError(
            f"{provider}: {where} must be a text or a (first, second) pair of texts, "
            f"got {excerpt(repr(value), 80)}"
        )

    if isinstance(inputs, str):
        return [[inputs]]
    if isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(t, str) for t in inputs):
        return [list(inputs)]
    if isinstance(inputs, Sequence) and not isinstance(inputs, bytes | bytearray) and inputs:
        return [item(value, f"inputs[{index}]") for index, value in enumerate(inputs)]
    raise InvalidArgumentError(
        f"{provider}: inputs must be a text, a pair or a non-empty list of them, "
        f"got {excerpt(repr(inputs), 80)}"
    )


def _id_sequences(ids: Any, provider: str) -> list[list[int]]:
    def token(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgumentError(
                f"{provider}: ids must be non-negative integers, got {excerpt(repr(value), 40)}"
            )
        return value

    if isinstance(ids, Sequence) and not isinstance(ids, str | bytes | bytearray) and ids:
        if all(isinstance(v, Sequence) and not isinstance(v, str) for v in ids):
            return [[token(v) for v in sequence] for sequence in ids]
        return [[token(v) for v in ids]]
    raise InvalidArgumentError(
        f"{provider}: ids must be a non-empty list of token ids or of id lists, "
        f"got {excerpt(repr(ids), 80)}"
    )


def _token(entry: Any, provider: str, what: str) -> TEIToken:
    def offset(key: str) -> int | None:
        value = opt(entry, key, int, provider, what)
        return None if value is None else int(value)

    return TEIToken(
        id=int(need(entry, "id", int, provider, what)),
        text=need(entry, "text", str, provider, what),
        special=bool(need(entry, "special", bool, provider, what)),
        start=offset("start"),
        stop=offset("stop"),
    )
