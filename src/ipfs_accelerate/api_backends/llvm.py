"""An MLC-LLM server (models compiled with TVM/LLVM) through its OpenAI-compatible REST API.

``mlc_llm serve`` exposes ``/v1/chat/completions`` (with SSE streaming ending in
``[DONE]`` and ``stream_options.include_usage``), ``/v1/completions`` and ``/v1/models``.
It has no embeddings route: :meth:`embed` raises UnsupportedOpError before any request.

Configuration: ``metadata["base_url"]`` / ``llvm_api_url`` (required; the server root,
a trailing ``/v1`` is accepted), optional ``api_key`` sent as a Bearer token.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._openai_compat import OpenAICompatibleBackend, parse_openai_usage
from ._parse import need, opt
from ._transport import HTTPRequest, RawResponse
from ._types import ChatResponse

__all__ = ["LLVMBackend"]


class LLVMBackend(OpenAICompatibleBackend):
    provider: ClassVar[str] = "llvm"
    summary: ClassVar[str] = "an MLC-LLM server (TVM/LLVM-compiled models)"
    routes: ClassVar[str] = "`/v1/chat/completions` (SSE), `/v1/completions`, `/v1/models`"
    base_url_keys: ClassVar[tuple[str, ...]] = ("llvm_api_url",)
    strip_url_suffixes: ClassVar[tuple[str, ...]] = ("/v1",)
    api_prefix: ClassVar[str] = "/v1"
    supports_embeddings: ClassVar[bool] = False
    model_patterns: ClassVar[tuple[str, ...]] = (
        r".*-MLC",
        r"HF://mlc-ai/.*",
        r"mlc-ai/.*",
        r".*q[0-9]f(16|32)_[0-9].*",
    )

    async def complete(self, model: str | None, prompt: str, **options: Any) -> ChatResponse:
        """``POST /v1/completions`` (plain text completion)."""
        opts = self._options(options)
        body = {"model": model or self.get_default_model(), "prompt": prompt, **options}
        body.pop("stream", None)
        request = HTTPRequest("POST", "/v1/completions", json=body)

        def parse(raw: RawResponse) -> ChatResponse:
            what, provider = "complete", self.provider
            data = self._json(raw, what)
            choice = need(need(data, "choices", list, provider, what), 0, dict, provider, what)
            return ChatResponse(
                text=need(choice, "text", str, provider, what),
                model=opt(data, "model", str, provider, what),
                finish_reason=opt(choice, "finish_reason", str, provider, what),
                usage=parse_openai_usage(data.get("usage")),
                raw=data, provider=provider, request_id=raw.request_id,
            )  # fmt: skip

        return await self._request(request, opts, parse, what="complete")
