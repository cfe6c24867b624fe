"""Helpers of the serve tests: test media, protocol fakes on a loop thread, a clean
environment; the session fixtures they share with the CLI tests are in fixtures.py."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.fakes._server import serve_on_thread

# the session fixtures (checkpoints, registry, server) live in tests/serve/fixtures.py
from tests.serve.fixtures import API_KEY, MINILM, Running

__all__ = ["API_KEY", "MINILM", "Running"]


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


# ----------------------------------------------------------------------------- media


def wav_bytes(seconds: float = 1.5, rate: int = 16000, seed: int = 0) -> bytes:
    import soundfile

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def png_bytes(seed: int = 0, size: tuple[int, int] = (40, 48)) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- fakes


#: serve a tests/fakes protocol fake from an event loop on a background thread
fake_on_thread = serve_on_thread


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test picks up a developer's real keys or hosts."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "HF_TOKEN",
                 "OLLAMA_HOST", "IPFS_ACCELERATE_API_KEY", "IPFS_ACCELERATE_DEVICE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
