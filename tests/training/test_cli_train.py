"""ipfs-accelerate train-classifier and classify end to end on a small JSONL file; embed
--model on the saved directory; bad lines are reported with their line number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ipfs_accelerate.cli import ExitCode, app
from ipfs_accelerate.models import TextClassifier, TextEmbedder

pytestmark = pytest.mark.timeout(300)

runner = CliRunner()

ROWS = [
    ("the kitten chased a ball of yarn", "pets"), ("my dog loves to fetch sticks", "pets"),
    ("a parrot can learn to talk", "pets"), ("heavy rain is expected tonight", "weather"),
    ("a sunny and warm afternoon", "weather"), ("snow will cover the roads tomorrow", "weather"),
]  # fmt: skip


def _invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_train_classify_and_embed_from_the_saved_directory(
    minilm_dir: Path, tmp_path: Path
) -> None:
    data = _write(
        tmp_path / "data.jsonl",
        [json.dumps({"text": t, "label": label}) for t, label in ROWS[:3]]
        + [""]  # blank lines are skipped
        + [json.dumps({"text": t, "label": label}) for t, label in ROWS[3:]],
    )
    out = tmp_path / "clf"
    result = _invoke(
        "train-classifier", str(data), "--out", str(out), "--model", str(minilm_dir),
        "--device", "cpu", "--epochs", "30", "--batch-size", "4", "--lr", "0.05", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["examples"] == 6 and summary["labels"] == ["pets", "weather"]
    assert summary["train_accuracy"] == 1.0 and len(summary["losses"]) == 30
    assert summary["losses"][-1] < summary["losses"][0]

    texts = ["a cat asleep on the sofa", "thunder and lightning tonight"]
    result = _invoke("classify", str(out), *texts, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert [r["label"] for r in answer["results"]] == ["pets", "weather"]
    expected = TextClassifier.load(out, "cpu").predict_proba(texts)
    got = [[r["scores"][k] for k in ("pets", "weather")] for r in answer["results"]]
    np.testing.assert_allclose(got, expected, rtol=1e-5)

    table = _invoke("classify", str(out), *texts, "--device", "cpu")
    assert table.exit_code == 0 and "weather" in table.stdout

    result = _invoke("embed", "--model", str(out), "--device", "cpu", "--json", *texts)
    assert result.exit_code == 0, result.output
    vectors = json.loads(result.stdout)["embeddings"]
    np.testing.assert_allclose(
        vectors, TextEmbedder.from_pretrained(minilm_dir, "cpu").embed(texts), atol=2e-5
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "data.jsonl:2: not JSON"),
        ('["a list"]', "data.jsonl:2: expected an object"),
        ('{"text": "", "label": "x"}', 'data.jsonl:2: "text" must be'),
        ('{"text": "hi", "label": true}', 'data.jsonl:2: "label" must be'),
        ('{"text": "hi"}', 'data.jsonl:2: "label" must be'),
    ],
)
def test_a_bad_line_is_named_by_number(tmp_path: Path, line: str, message: str) -> None:
    data = _write(tmp_path / "data.jsonl", ['{"text": "fine", "label": "a"}', line])
    result = _invoke(
        "train-classifier", str(data), "--out", str(tmp_path / "o"), "--device", "cpu", "--json"
    )
    assert result.exit_code == ExitCode.INPUT, result.output
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "InvalidArgumentError" and message in error["message"]
    assert not (tmp_path / "o").exists()


def test_missing_files_and_directories(tmp_path: Path) -> None:
    missing = _invoke("train-classifier", str(tmp_path / "no.jsonl"), "--out", str(tmp_path))
    assert missing.exit_code == ExitCode.INPUT
    result = _invoke("classify", str(tmp_path), "x", "--json")
    assert result.exit_code == ExitCode.CONFIGURATION
    assert json.loads(result.stdout)["error"]["type"] == "CheckpointError"
    assert _invoke("train-classifier", "d.jsonl", "--out", "o", "--lr", "0").exit_code == 2
