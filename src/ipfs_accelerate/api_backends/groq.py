"""Groq: the OpenAI protocol at ``https://api.groq.com/openai/v1``.

Chat, streaming (usage arrives in ``x_groq.usage`` of the last chunk, or as the OpenAI
usage chunk), tool calling and model listing. Groq offers no embeddings endpoint:
:meth:`embed` raises UnsupportedOpError without sending anything.

Configuration: ``metadata["api_key"]`` / ``groq_api_key`` / ``$GROQ_API_KEY`` (required),
``metadata["base_url"]`` to point elsewhere.
"""

from __future__ import annotations

from typing import ClassVar

from ._openai_compat import OpenAICompatibleBackend

__all__ = ["GroqBackend"]


class GroqBackend(OpenAICompatibleBackend):
    provider: ClassVar[str] = "groq"
    summary: ClassVar[str] = "Groq (`https://api.groq.com/openai/v1`)"
    routes: ClassVar[str] = (
        "OpenAI protocol under `/openai/v1`: `/chat/completions` (SSE, usage in `x_groq`), "
        "`/models`"
    )
    default_base_url: ClassVar[str | None] = "https://api.groq.com/openai/v1"
    base_url_keys: ClassVar[tuple[str, ...]] = ("groq_base_url",)
    api_key_keys: ClassVar[tuple[str, ...]] = ("groq_api_key",)
    api_key_env: ClassVar[tuple[str, ...]] = ("GROQ_API_KEY",)
    requires_api_key: ClassVar[bool] = True
    supports_embeddings: ClassVar[bool] = False
    default_model: ClassVar[str | None] = "llama-3.1-8b-instant"
    model_patterns: ClassVar[tuple[str, ...]] = (
        r"llama-3.*", r"llama3-.*", r"meta-llama/.*", r"mixtral-.*", r"gemma2?-.*",
        r"qwen[-/].*", r"deepseek-r1-distill-.*", r"openai/gpt-oss-.*", r"moonshotai/.*",
        r"whisper-large-v3.*", r"distil-whisper-.*", r"compound-beta.*", r"groq/.*",
    )  # fmt: skip
