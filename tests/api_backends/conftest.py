"""Helpers for the API backend tests: run coroutines with a hard timeout, fast resilience
settings (millisecond backoffs and cooldowns), and a fake server on its own loop thread for
the sync-facade tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from ..fakes._server import serve_on_thread

T = TypeVar("T")

FAST: dict[str, Any] = {
    "initial_backoff": 0.001,
    "max_backoff": 0.004,
    "jitter": 0.0,
    "connect_timeout": 2.0,
    "timeout": 5.0,
    "breaker": {"failure_threshold": 50, "min_calls": 50, "window_size": 50, "cooldown": 0.05},
}


def fast(**overrides: Any) -> dict[str, Any]:
    config = {**FAST, **overrides}
    if "breaker" in overrides:
        config["breaker"] = {**FAST["breaker"], **overrides["breaker"]}
    return config


def run(awaitable: Awaitable[T], timeout: float = 30.0) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(awaitable, timeout)

    return asyncio.run(guarded())


#: serve a fake from a loop on a background thread (for sync callers)
server_thread = serve_on_thread


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may pick up a real key or host from the developer's environment."""
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GROQ_API_KEY",
        "HF_TOKEN",
        "OLLAMA_HOST",
        "SAMPLE_API_URL",
        "SAMPLE_API_KEY",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
    ):
        monkeypatch.delenv(name, raising=False)
