"""A lean client for any OpenAI-compatible server, with a configurable base URL.

Same wire protocol and surfaces as :mod:`.openai` (chat, streaming, tools, embeddings,
images, speech, transcription, moderation, files) without the OpenAI-account extras.
Against ``api.openai.com`` a key is required; against any other base URL (a local
vLLM, llama.cpp, LM Studio...) the key is optional and sent as a Bearer token when given.

Configuration: ``metadata["base_url"]`` / ``$OPENAI_BASE_URL`` (default
``https://api.openai.com/v1``), ``metadata["api_key"]`` / ``openai_api_key`` / ``$OPENAI_API_KEY``.
With a custom base URL and no ``metadata["models"]``, every model name is considered compatible.
"""

from __future__ import annotations

from typing import ClassVar

from ._openai_compat import OpenAICompatibleBackend, OpenAISurfacesMixin

__all__ = ["OpenAIMiniBackend"]

_OPENAI_HOST = "api.openai.com"


class OpenAIMiniBackend(OpenAISurfacesMixin, OpenAICompatibleBackend):
    provider: ClassVar[str] = "openai_mini"
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    base_url_keys: ClassVar[tuple[str, ...]] = ("openai_base_url",)
    base_url_env: ClassVar[tuple[str, ...]] = ("OPENAI_BASE_URL",)
    api_key_keys: ClassVar[tuple[str, ...]] = ("openai_api_key",)
    api_key_env: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)
    requires_api_key: ClassVar[bool] = True
    default_model: ClassVar[str | None] = "gpt-4o-mini"
    default_embedding_model: ClassVar[str | None] = "text-embedding-3-small"
    model_patterns: ClassVar[tuple[str, ...]] = (
        r"gpt-.*", r"chatgpt-.*", r"o[1-9](-.*)?", r"text-embedding-.*", r"dall-e-.*",
        r"gpt-image-.*", r"tts-.*", r"whisper-.*", r"(omni|text)-moderation-.*",
    )  # fmt: skip

    def _needs_key(self) -> bool:
        return _OPENAI_HOST in self.base_url

    @property
    def accepts_any_model(self) -> bool:
        return self._declared_models is None and not self._needs_key()

    def is_compatible_model(self, model: str) -> bool:
        if self.accepts_any_model:
            return isinstance(model, str) and bool(model)
        return super().is_compatible_model(model)
