"""vLLM's OpenAI-compatible server, plus its LoRA adapter management routes.

Chat (``/v1/chat/completions``, SSE with ``[DONE]``), tool calling, embeddings (when an
embedding model is served), ``/v1/models`` (adapters appear with a ``parent``), ``/health``,
and runtime LoRA: ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` and
``POST /v1/unload_lora_adapter {"lora_name"}`` (the server must run with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``); both answer plain text on success and vLLM's
error object (``{"object": "error", "message", "type", "code"}``) on failure.

Configuration: ``metadata["base_url"]`` / ``vllm_api_url`` (required; the server root, a
trailing ``/v1`` is accepted), optional ``api_key`` (vLLM's ``--api-key``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ipfs_accelerate.errors import InvalidArgumentError

from ._openai_compat import OpenAICompatibleBackend
from ._transport import HTTPRequest, RawResponse
from ._types import ModelInfo

__all__ = ["VLLMBackend"]


class VLLMBackend(OpenAICompatibleBackend):
    provider: ClassVar[str] = "vllm"
    summary: ClassVar[str] = "vLLM's OpenAI-compatible server"
    routes: ClassVar[str] = (
        "`/v1/chat/completions` (SSE), `/v1/embeddings`, `/v1/models`, `/v1/load_lora_adapter`, "
        "`/v1/unload_lora_adapter`, `/health`"
    )
    base_url_keys: ClassVar[tuple[str, ...]] = ("vllm_api_url",)
    strip_url_suffixes: ClassVar[tuple[str, ...]] = ("/v1",)
    api_prefix: ClassVar[str] = "/v1"
    # Hugging Face repository ids ("org/name") and local paths are what vLLM serves
    model_patterns: ClassVar[tuple[str, ...]] = (r"[\w.-]+/[\w.-]+", r"/.+")

    def _health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", "/health", expect="text")

    async def load_lora_adapter(self, lora_name: str, lora_path: str, **options: Any) -> str:
        """Load an adapter; it is then served under ``lora_name``. Returns the server's message."""
        _need_text(lora_name, "lora_name")
        _need_text(lora_path, "lora_path")
        opts = self._options(options)
        body = {"lora_name": lora_name, "lora_path": lora_path, **options}
        request = HTTPRequest("POST", "/v1/load_lora_adapter", json=body, expect="text")
        return await self._request(request, opts, _text, what="load_lora_adapter")

    async def unload_lora_adapter(self, lora_name: str, **options: Any) -> str:
        _need_text(lora_name, "lora_name")
        opts = self._options(options)
        request = HTTPRequest(
            "POST",
            "/v1/unload_lora_adapter",
            json={"lora_name": lora_name, **options},
            expect="text",
        )
        return await self._request(request, opts, _text, what="unload_lora_adapter")

    async def list_lora_adapters(self, **options: Any) -> list[ModelInfo]:
        """The adapters currently loaded (models listed with a ``parent``)."""
        return [m for m in await self.list_models(**options) if m.parent]


def _text(raw: RawResponse) -> str:
    return raw.body.decode("utf-8", "replace").strip()


def _need_text(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"vllm: {name} must be a non-empty string, got {value!r}")
