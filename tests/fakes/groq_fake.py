"""Groq's API: the OpenAI protocol under ``/openai/v1``; stream usage arrives in the last
chunk's ``x_groq.usage``; no embeddings route (404)."""

from __future__ import annotations

from .openai_fake import OpenAIFake

__all__ = ["GroqFake"]


class GroqFake(OpenAIFake):
    provider = "groq"

    def __init__(self, api_key: str | None = "gsk_test_123") -> None:
        super().__init__(
            api_key=api_key,
            prefix="/openai/v1",
            models=("llama-3.1-8b-instant", "llama-3.3-70b-versatile"),
            usage_style="x_groq",
            embeddings=False,
            surfaces=False,
            owned_by="Meta",
        )
