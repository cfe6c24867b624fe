"""The main job (`make demo`) end to end, offline, and the package's lazy imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_demo_answers_semantic_search_queries_offline() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160", "PYTHONPATH": str(ROOT / "src")}
    env.pop("XDG_RUNTIME_DIR", None)  # as in a container: lavapipe would complain on stderr
    result = subprocess.run(
        [sys.executable, "-m", "ipfs_accelerate.demo"],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "XDG_RUNTIME_DIR" not in result.stderr
    out = result.stdout
    assert "Best backend for a BERT model:" in out
    # the ranked results: each query's first hit is the sentence on its topic
    space = out.split("query: 'space exploration'")[1]
    assert space.index("Astronomers discovered a new planet") < space.index("A rocket launched")
    cooking = out.split("query: 'something to cook for dinner'")[1].split("query:")[0]
    assert "pasta recipe" in cooking and "stock market" not in cooking
    assert "Throughput (batch 32)" in out
    throughput = out.split("Throughput (batch 32)")[1]
    assert "cpu" in throughput and "failed" not in throughput


def test_models_package_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "import ipfs_accelerate.models.pipelines, ipfs_accelerate.models.loading\n"
        "heavy = ('tokenizers', 'PIL', 'soundfile', 'huggingface_hub', 'safetensors', 'torch',"
        " 'transformers', 'rich')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    assert out.stdout.strip() == "[]"
