"""OPEA (Open Platform for Enterprise AI) ChatQnA and its OpenAI-style microservices.

The ChatQnA megaservice gateway answers ``POST /v1/chatqna`` with ``{"messages": <string or
OpenAI messages>, "max_tokens", "stream", ...}`` (``stream`` defaults to true there, so it
is always sent). Non-streamed, the answer is a ``chat.completion`` object; streamed, it is
``text/event-stream`` whose ``data`` is, depending on the LLM microservice behind it, a Python
bytes literal (``b'token'``), an OpenAI ``chat.completion.chunk``, or plain text, terminated by
``data: [DONE]`` (a stream without it raises StreamInterruptedError). The retrieval
parameters (``k``, ``top_n``, ``search_type``...) pass through.

The microservices speak OpenAI: embeddings at ``/v1/embeddings`` and the LLM at
``/v1/chat/completions`` (:meth:`llm_chat`, :meth:`llm_stream_chat`). They usually run on
their own ports: ``metadata["opea_embedding_url"]`` and ``metadata["opea_llm_url"]`` name
them (each is its own endpoint, with its own breaker and limits); by default the gateway URL.

Configuration: ``metadata["base_url"]`` / ``opea_api_url`` (required), optional ``api_key``.
"""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from ipfs_accelerate.errors import ProtocolError, StreamInterruptedError
from ipfs_accelerate.resilience import normalise_base_url

from ._base import ensure_text_list
from ._openai_compat import (
    OpenAIChatStream,
    OpenAICompatibleBackend,
    parse_openai_chat,
    stream_error,
)
from ._parse import ToolCallAccumulator, final_chunk, normalise_messages
from ._streams import SSEDecoder, excerpt
from ._transport import Endpoint, HTTPRequest, RawResponse
from ._types import ChatChunk, ChatResponse, EmbeddingResponse

__all__ = ["OPEABackend"]


class OPEABackend(OpenAICompatibleBackend):
    provider: ClassVar[str] = "opea"
    summary: ClassVar[str] = "OPEA ChatQnA and its microservices"
    routes: ClassVar[str] = (
        "`/v1/chatqna` (SSE, `[DONE]`); microservices `/v1/embeddings`, `/v1/chat/completions`"
    )
    base_url_keys: ClassVar[tuple[str, ...]] = ("opea_api_url",)
    strip_url_suffixes: ClassVar[tuple[str, ...]] = ("/v1/chatqna", "/v1")
    api_prefix: ClassVar[str] = "/v1"
    default_model: ClassVar[str | None] = "chatqna"
    model_patterns: ClassVar[tuple[str, ...]] = (r"chatqna", r"opea/.*")

    def __init__(
        self,
        resources: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resources, metadata, **kwargs)
        self.embedding_endpoint = self._service_endpoint("opea_embedding_url")
        self.llm_endpoint = self._service_endpoint("opea_llm_url")

    def _service_endpoint(self, key: str) -> Endpoint:
        url = self.metadata.get(key)
        if not url:
            return self.endpoint
        base = normalise_base_url(str(url), provider=self.provider)
        base = base[:-3] if base.endswith("/v1") else base
        return Endpoint(
            base, provider=self.provider, config=self.config, headers=self._static_headers()
        )

    def _endpoints(self) -> list[Endpoint]:
        seen: list[Endpoint] = []
        for ep in (self.endpoint, self.embedding_endpoint, self.llm_endpoint):
            if all(ep is not other for other in seen):
                seen.append(ep)
        return seen

    def _health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", "/v1/health_check")

    def _chatqna_body(self, messages: Any, options: dict[str, Any], stream: bool) -> dict[str, Any]:
        extra_body = options.pop("extra_body", None)
        payload: Any = (
            messages if isinstance(messages, str) else normalise_messages(messages, self.provider)
        )
        body = {"messages": payload, **options, "stream": stream}
        if extra_body:
            body.update(extra_body)
        return body

    async def chat(self, model: str | None, messages: Any, **options: Any) -> ChatResponse:
        """Ask the ChatQnA pipeline (retrieval + rerank + LLM). ``model`` is informational."""
        opts = self._options(options)
        request = HTTPRequest(
            "POST", "/v1/chatqna", json=self._chatqna_body(messages, options, False)
        )

        def parse(raw: RawResponse) -> ChatResponse:
            result = parse_openai_chat(self._json(raw, "chatqna"), self.provider, "chatqna")
            result.request_id = raw.request_id
            return result

        return await self._request(request, opts, parse, what="chatqna")

    def stream_chat(
        self, model: str | None, messages: Any, **options: Any
    ) -> AsyncIterator[ChatChunk]:
        opts = self._options(options)
        request = HTTPRequest(
            "POST", "/v1/chatqna", json=self._chatqna_body(messages, options, True), expect="sse"
        )
        limit = self.config.max_response_bytes
        return self._stream(
            request, opts, lambda: _ChatQnAStream(self.provider, limit), what="chatqna stream"
        )

    async def embed(
        self, model: str | None, inputs: str | Sequence[str], **options: Any
    ) -> EmbeddingResponse:
        """The embedding microservice (``/v1/embeddings``, OpenAI shape)."""
        opts = self._options(options)
        texts = ensure_text_list(inputs, self.provider)
        body: dict[str, Any] = {"input": texts, **options}
        if model:
            body["model"] = model
        request = HTTPRequest("POST", "/v1/embeddings", json=body)
        count = len(texts)
        return await self._request(
            request,
            opts,
            lambda raw: self._parse_embeddings(raw, count),
            what="embed",
            endpoint=self.embedding_endpoint,
        )

    async def llm_chat(self, model: str | None, messages: Any, **options: Any) -> ChatResponse:
        """The LLM microservice directly (``/v1/chat/completions``)."""
        opts = self._options(options)
        body = self._chat_body(model, messages, options, stream=False)
        request = HTTPRequest("POST", "/v1/chat/completions", json=body)
        return await self._request(
            request, opts, self._parse_chat, what="llm_chat", endpoint=self.llm_endpoint
        )

    def llm_stream_chat(
        self, model: str | None, messages: Any, **options: Any
    ) -> AsyncIterator[ChatChunk]:
        opts = self._options(options)
        body = self._chat_body(model, messages, options, stream=True)
        request = HTTPRequest("POST", "/v1/chat/completions", json=body, expect="sse")
        limit = self.config.max_response_bytes
        return self._stream(
            request, opts, lambda: OpenAIChatStream(self.provider, limit), what="llm_stream_chat",
            endpoint=self.llm_endpoint,
        )  # fmt: skip


def _decode_payload(payload: str, provider: str) -> str | Mapping[str, Any]:
    """One ChatQnA stream payload: ``b'...'`` literal, JSON object, or plain text."""
    stripped = payload.strip()
    if stripped[:2] in ("b'", 'b"'):
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            raise ProtocolError(
                f"chatqna stream: malformed bytes literal {excerpt(payload)!r}", provider=provider
            ) from None
        if not isinstance(value, bytes):
            raise ProtocolError(
                f"chatqna stream: expected a bytes literal, got {excerpt(payload)!r}",
                provider=provider,
            )
        return value.decode("utf-8", "replace")
    if stripped[:1] == "{":
        try:
            obj = json.loads(stripped)
        except ValueError:
            raise ProtocolError(
                f"chatqna stream: malformed JSON {excerpt(payload)!r}", provider=provider
            ) from None
        if isinstance(obj, Mapping):
            return obj
    return payload


class _ChatQnAStream:
    __slots__ = ("_openai", "_sse", "_tools", "complete", "provider")

    def __init__(self, provider: str, limit: int) -> None:
        self.provider = provider
        self._sse = SSEDecoder(provider, limit)
        self._openai = OpenAIChatStream(provider, limit)  # reused for chunk objects
        self._tools = ToolCallAccumulator()
        self.complete = False

    def feed(self, data: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for event in self._sse.feed(data):
            if self.complete:
                continue
            if event.data.strip() == "[DONE]":
                self.complete = True
                oa = self._openai
                out.append(final_chunk(oa.finish_reason, oa.usage, oa.tools, oa.model))
                continue
            value = _decode_payload(event.data, self.provider)
            if isinstance(value, Mapping):
                if value.get("error") is not None:
                    raise stream_error(value, self.provider)
                if "choices" in value:
                    self._openai._chunk(value, out)
                elif isinstance(value.get("text"), str):
                    out.append(ChatChunk(text=value["text"], raw=value))
                continue
            if value:
                out.append(ChatChunk(text=value, raw=event.data))
        return out

    def finish(self) -> list[ChatChunk]:
        self._sse.finish()
        if not self.complete:
            raise StreamInterruptedError(
                "chatqna stream ended without 'data: [DONE]'", provider=self.provider
            )
        return []
