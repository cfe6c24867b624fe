"""OpenAI (api.openai.com): chat, streaming, tools, embeddings, images (generations, edits,
variations), speech, transcription, translation, moderation and files, on the OpenAI REST
protocol.

Configuration: ``metadata["api_key"]`` / ``metadata["openai_api_key"]`` / ``$OPENAI_API_KEY``
(required); ``metadata["base_url"]`` / ``$OPENAI_BASE_URL`` (default
``https://api.openai.com/v1``); optional ``metadata["organization"]`` / ``$OPENAI_ORG_ID`` and
``metadata["project"]`` / ``$OPENAI_PROJECT_ID``, sent as ``OpenAI-Organization`` and
``OpenAI-Project`` headers.

``openai_mini`` (:class:`OpenAIMiniBackend`) is the same client configured for any
OpenAI-compatible server (a local vLLM, llama.cpp, LM Studio...): against
``api.openai.com`` a key is required; against any other base URL the key is optional (sent
as a Bearer token when given) and, without ``metadata["models"]``, every model name is
considered compatible. It sends no OpenAI account headers.
"""

from __future__ import annotations

from typing import ClassVar

from ipfs_accelerate.resilience import resolve_setting

from ._openai_compat import OpenAICompatibleBackend, OpenAISurfacesMixin

__all__ = ["OpenAIBackend", "OpenAIMiniBackend"]

_OPENAI_HOST = "api.openai.com"

# the model families of the chat, embedding, image, audio and moderation routes
_MODEL_PATTERNS = (
    r"gpt-.*", r"chatgpt-.*", r"o[1-9](-.*)?", r"text-embedding-.*", r"dall-e-.*",
    r"gpt-image-.*", r"tts-.*", r"whisper-.*", r"(omni|text)-moderation-.*",
)  # fmt: skip


class OpenAIBackend(OpenAISurfacesMixin, OpenAICompatibleBackend):
    provider: ClassVar[str] = "openai"
    summary: ClassVar[str] = "OpenAI (`https://api.openai.com/v1`)"
    routes: ClassVar[str] = (
        "OpenAI REST, SSE ending in `[DONE]`: `/chat/completions`, `/embeddings`, `/models`, "
        "`/images/generations`, `/images/edits`, `/images/variations`, `/audio/speech`, "
        "`/audio/transcriptions`, `/audio/translations`, `/moderations`, `/files`"
    )
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    base_url_keys: ClassVar[tuple[str, ...]] = ("openai_base_url",)
    base_url_env: ClassVar[tuple[str, ...]] = ("OPENAI_BASE_URL",)
    api_key_keys: ClassVar[tuple[str, ...]] = ("openai_api_key",)
    api_key_env: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)
    requires_api_key: ClassVar[bool] = True
    default_model: ClassVar[str | None] = "gpt-4o-mini"
    default_embedding_model: ClassVar[str | None] = "text-embedding-3-small"
    model_patterns: ClassVar[tuple[str, ...]] = (
        *_MODEL_PATTERNS, r"(davinci|babbage)-.*", r"computer-use-.*", r"codex-.*",
    )  # fmt: skip
    #: any OpenAI-compatible server: a key only for api.openai.com, elsewhere every model
    #: name accepted (unless ``metadata["models"]`` lists them); no OpenAI account headers
    any_server: ClassVar[bool] = False

    def _needs_key(self) -> bool:
        return not self.any_server or _OPENAI_HOST in self.base_url

    @property
    def accepts_any_model(self) -> bool:
        return self.any_server and self._declared_models is None and not self._needs_key()

    def is_compatible_model(self, model: str) -> bool:
        if self.accepts_any_model:
            return isinstance(model, str) and bool(model)
        return super().is_compatible_model(model)

    def _static_headers(self) -> dict[str, str]:
        if self.any_server:
            return {}
        headers = {}
        org, _ = resolve_setting(
            self.metadata, self.resources, ("organization", "openai_organization"),
            ("OPENAI_ORG_ID",),
        )  # fmt: skip
        project, _ = resolve_setting(
            self.metadata, self.resources, ("project", "openai_project"), ("OPENAI_PROJECT_ID",)
        )
        if org:
            headers["OpenAI-Organization"] = org
        if project:
            headers["OpenAI-Project"] = project
        return headers


class OpenAIMiniBackend(OpenAIBackend):
    """``openai_mini``: :class:`OpenAIBackend` configured for any OpenAI-compatible server."""

    provider: ClassVar[str] = "openai_mini"
    summary: ClassVar[str] = "any OpenAI-compatible server (configurable base URL)"
    routes: ClassVar[str] = "as `openai`, against any base URL (vLLM, llama.cpp, LM Studio...)"
    model_patterns: ClassVar[tuple[str, ...]] = _MODEL_PATTERNS
    any_server: ClassVar[bool] = True
