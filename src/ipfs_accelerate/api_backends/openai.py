"""OpenAI (api.openai.com): chat, streaming, tools, embeddings, images, speech,
transcription, moderation and files, on the OpenAI REST protocol.

Configuration: ``metadata["api_key"]`` / ``metadata["openai_api_key"]`` / ``$OPENAI_API_KEY``
(required); ``metadata["base_url"]`` / ``$OPENAI_BASE_URL`` (default
``https://api.openai.com/v1``); optional ``metadata["organization"]`` / ``$OPENAI_ORG_ID`` and
``metadata["project"]`` / ``$OPENAI_PROJECT_ID``, sent as ``OpenAI-Organization`` and
``OpenAI-Project`` headers.
"""

from __future__ import annotations

from typing import ClassVar

from ipfs_accelerate.resilience import resolve_setting

from ._openai_compat import OpenAICompatibleBackend, OpenAISurfacesMixin

__all__ = ["OpenAIBackend"]


class OpenAIBackend(OpenAISurfacesMixin, OpenAICompatibleBackend):
    provider: ClassVar[str] = "openai"
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
        r"(davinci|babbage)-.*", r"computer-use-.*", r"codex-.*",
    )  # fmt: skip

    def _static_headers(self) -> dict[str, str]:
        headers = {}
        org, _ = resolve_setting(self.metadata, self.resources, ("organization", "openai_organization"), ("OPENAI_ORG_ID",))
        project, _ = resolve_setting(self.metadata, self.resources, ("project", "openai_project"), ("OPENAI_PROJECT_ID",))
        if org:
            headers["OpenAI-Organization"] = org
        if project:
            headers["OpenAI-Project"] = project
        return headers
