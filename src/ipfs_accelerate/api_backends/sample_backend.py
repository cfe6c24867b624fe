"""The reference for writing a new backend, complete and tested (tests/fakes/sample_fake.py).

It speaks a deliberately small JSON protocol so that every moving part is visible:

* ``POST /v1/generate`` ``{"model", "messages", "max_tokens"?, "temperature"?}`` ->
  ``{"id", "model", "text", "finish_reason", "usage": {"input_tokens", "output_tokens"}}``
* the same with ``"stream": true`` -> ``application/x-ndjson`` lines ``{"delta": "..."}``,
  the last one ``{"done": true, "finish_reason", "usage"}``
* ``POST /v1/embed`` ``{"model", "inputs": [...]}`` -> ``{"model", "embeddings": [[...], ...]}``
* ``GET /v1/models`` -> ``{"models": [{"id": ...}, ...]}``; ``GET /health`` -> ``{"status": "ok"}``
* errors: ``{"error": {"message", "type"}}`` with the HTTP status; auth: ``Authorization: Bearer``.

Writing a backend takes four steps, all shown below:

1. **Declare configuration** as class attributes: the ``provider`` name, where the URL and
   key are looked up (``base_url_keys``, ``api_key_keys``, ``*_env``), whether a key is
   required, the default model and the ``model_patterns`` that ``is_compatible_model`` and
   ``find_compatible_backend`` use, and the ``summary`` and ``routes`` that the docs' backend
   tables show. The base class resolves, validates and hides the secret.
2. **Build requests** as :class:`HTTPRequest` (method, path relative to the base URL, JSON
   body). Split the per-call resilience options first with ``self._options(options)``.
3. **Parse responses** in a function of :class:`RawResponse`. Decode with ``self._json`` and
   read fields with :func:`need` / :func:`opt`, so malformed bodies raise ProtocolError.
4. **Parse streams** with a small class with ``feed(bytes) -> items`` and ``finish()``, built on
   :class:`SSEDecoder` or :class:`NDJSONDecoder`; ``finish`` raises StreamInterruptedError
   unless the protocol's terminal event was seen.

Then add one line to ``_BUILTIN`` in ``_registry.py`` (this teaching example sits in
``_UNOFFERED`` instead: created by name, never listed or picked by ``find_compatible_backend``).
Retries, backoff, timeouts, the circuit breaker, the priority queue, metrics, error mapping
and the sync facade come from :class:`APIBackend`.

Configuration: ``metadata["base_url"]`` / ``sample_api_url`` / ``$SAMPLE_API_URL`` (required),
``metadata["api_key"]`` / ``sample_api_key`` / ``$SAMPLE_API_KEY`` (required).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from ipfs_accelerate.errors import ProtocolError, StreamInterruptedError

from ._base import APIBackend, ensure_text_list
from ._errors import error_for_status
from ._parse import as_int, need, normalise_messages, number_vectors, opt
from ._streams import NDJSONDecoder
from ._transport import HTTPRequest, RawResponse
from ._types import ChatChunk, ChatResponse, EmbeddingResponse, ModelInfo, Usage

__all__ = ["SampleBackend"]


def _usage(obj: Any) -> Usage:
    if not isinstance(obj, Mapping):
        return Usage()
    return Usage(as_int(obj.get("input_tokens")), as_int(obj.get("output_tokens")))


class SampleBackend(APIBackend):
    # step 1: configuration
    provider: ClassVar[str] = "sample_backend"
    summary: ClassVar[str] = "the reference for writing a backend"
    routes: ClassVar[str] = (
        "a small JSON protocol: `/v1/generate` (JSON, or NDJSON with `stream`), `/v1/embed`, "
        "`/v1/models`, `/health`"
    )
    base_url_keys: ClassVar[tuple[str, ...]] = ("sample_api_url",)
    base_url_env: ClassVar[tuple[str, ...]] = ("SAMPLE_API_URL",)
    api_key_keys: ClassVar[tuple[str, ...]] = ("sample_api_key",)
    api_key_env: ClassVar[tuple[str, ...]] = ("SAMPLE_API_KEY",)
    requires_api_key: ClassVar[bool] = True
    default_model: ClassVar[str | None] = "sample-small"
    model_patterns: ClassVar[tuple[str, ...]] = (r"sample-.*",)

    def _health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", "/health")

    # step 2: requests
    def _generate_body(
        self, model: str | None, messages: Any, options: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "model": model or self.get_default_model(),
            "messages": normalise_messages(messages, self.provider),
            **options,
        }

    async def chat(self, model: str | None, messages: Any, **options: Any) -> ChatResponse:
        opts = self._options(options)  # priority, timeout, max_retries, deadline... leave options
        request = HTTPRequest(
            "POST", "/v1/generate", json=self._generate_body(model, messages, options)
        )
        return await self._request(request, opts, self._parse_chat, what="chat")

    # step 3: responses
    def _parse_chat(self, raw: RawResponse) -> ChatResponse:
        what, provider = "chat", self.provider
        data = self._json(raw, what)
        return ChatResponse(
            text=need(data, "text", str, provider, what),
            model=opt(data, "model", str, provider, what),
            finish_reason=opt(data, "finish_reason", str, provider, what),
            usage=_usage(data.get("usage")),
            raw=data,
            provider=provider,
            request_id=raw.request_id,
        )

    # step 4: streams
    def stream_chat(
        self, model: str | None, messages: Any, **options: Any
    ) -> AsyncIterator[ChatChunk]:
        opts = self._options(options)
        body = self._generate_body(model, messages, options)
        body["stream"] = True
        request = HTTPRequest("POST", "/v1/generate", json=body, expect="ndjson")
        limit = self.config.max_response_bytes
        return self._stream(
            request, opts, lambda: _SampleStream(self.provider, limit), what="stream_chat",
            content_types=("application/x-ndjson",),
            on_complete=lambda p: getattr(p, "usage", None),
        )  # fmt: skip

    async def embed(
        self, model: str | None, inputs: str | Sequence[str], **options: Any
    ) -> EmbeddingResponse:
        opts = self._options(options)
        texts = ensure_text_list(inputs, self.provider)
        body = {"model": model or self.get_default_model(), "inputs": texts, **options}
        count = len(texts)

        def parse(raw: RawResponse) -> EmbeddingResponse:
            what, provider = "embed", self.provider
            data = self._json(raw, what)
            # one float vector per input: never fewer (or more) than were asked for
            checked = number_vectors(
                need(data, "embeddings", list, provider, what), count, provider, what
            )
            return EmbeddingResponse(
                checked, model=opt(data, "model", str, provider, what), raw=data, provider=provider
            )

        return await self._request(
            HTTPRequest("POST", "/v1/embed", json=body), opts, parse, what="embed"
        )

    async def list_models(self, **options: Any) -> list[ModelInfo]:
        opts = self._options(options)

        def parse(raw: RawResponse) -> list[ModelInfo]:
            data = self._json(raw, "list_models")
            items = need(data, "models", list, self.provider, "list_models")
            return [
                ModelInfo(id=need(m, "id", str, self.provider, "list_models"), raw=m) for m in items
            ]

        return await self._request(
            HTTPRequest("GET", "/v1/models"), opts, parse, what="list_models"
        )


class _SampleStream:
    """NDJSON deltas; complete only once the ``done`` line arrived."""

    __slots__ = ("_decoder", "complete", "provider", "usage")

    def __init__(self, provider: str, limit: int) -> None:
        self.provider = provider
        self._decoder = NDJSONDecoder(provider, limit)
        self.complete = False
        self.usage: Usage | None = None

    def feed(self, data: bytes) -> list[ChatChunk]:
        chunks = []
        for obj in self._decoder.feed(data):
            if not isinstance(obj, Mapping):
                raise ProtocolError("stream line is not an object", provider=self.provider)
            if obj.get("error") is not None:  # an error reported after HTTP 200
                raise error_for_status(
                    provider=self.provider, status=500, headers={}, body=_dumps(obj),
                    content_type="application/json", request_id=None, what="stream_chat",
                )  # fmt: skip
            if obj.get("done"):
                self.complete = True
                self.usage = _usage(obj.get("usage"))
                chunks.append(
                    ChatChunk(
                        done=True,
                        finish_reason=opt(obj, "finish_reason", str, self.provider, "stream"),
                        usage=self.usage,
                        raw=obj,
                    )
                )
            else:
                chunks.append(
                    ChatChunk(text=need(obj, "delta", str, self.provider, "stream"), raw=obj)
                )
        return chunks

    def finish(self) -> list[ChatChunk]:
        self._decoder.finish()  # raises on a half line
        if not self.complete:
            raise StreamInterruptedError(
                "stream ended without its done line", provider=self.provider
            )
        return []


def _dumps(obj: Any) -> bytes:
    import json

    return json.dumps(obj).encode()
