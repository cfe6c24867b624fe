"""Ollama through its OpenAI-compatible ``/v1`` routes (chat, streaming, tools,
embeddings, models). For Ollama's native API (NDJSON streams, pull, tags) see :mod:`.ollama`.

Configuration: ``metadata["base_url"]`` / ``ollama_api_url`` / ``$OLLAMA_HOST`` (default
``http://127.0.0.1:11434``; a bare ``host[:port]`` is accepted as Ollama itself accepts it).
Ollama needs no key; one given is sent as a Bearer token (for a proxy in front of it).
"""

from __future__ import annotations

from typing import ClassVar

from ._openai_compat import OpenAICompatibleBackend
from ._types import ModelInfo
from .ollama import OLLAMA_MODEL_PATTERNS

__all__ = ["OllamaCleanBackend"]


class OllamaCleanBackend(OpenAICompatibleBackend):
    provider: ClassVar[str] = "ollama_clean"
    summary: ClassVar[str] = "Ollama, OpenAI-compatible routes"
    routes: ClassVar[str] = "`/v1/chat/completions` (SSE), `/v1/embeddings`, `/v1/models`"
    default_base_url: ClassVar[str | None] = "http://127.0.0.1:11434"
    base_url_keys: ClassVar[tuple[str, ...]] = ("ollama_api_url",)
    base_url_env: ClassVar[tuple[str, ...]] = ("OLLAMA_HOST",)
    default_port: ClassVar[int | None] = 11434
    strip_url_suffixes: ClassVar[tuple[str, ...]] = ("/v1", "/api")
    api_prefix: ClassVar[str] = "/v1"
    default_model: ClassVar[str | None] = "llama3.2"
    default_embedding_model: ClassVar[str | None] = "nomic-embed-text"
    model_patterns: ClassVar[tuple[str, ...]] = OLLAMA_MODEL_PATTERNS

    async def tags(self) -> list[ModelInfo]:
        """Same as :meth:`list_models` (``/v1/models``)."""
        return await self.list_models()
