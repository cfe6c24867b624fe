"""What loading a model adds to the process's resident memory, measured in fresh processes:
MiniLM int8 adds at most 35% of what float32 adds; a float16 checkpoint loaded with
dtype="auto" stays float16 (about half of float32)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# the model alone (BertModel: the tokenizer's few MB are the same in every dtype), after the
# imports and libraries; the model stays referenced while RSS is read
_MEASURE = """
import gc, json, sys
import numpy as np
from ipfs_accelerate.models import BertModel
from ipfs_accelerate.models import _precision, saving
from ipfs_accelerate.hal.cpu import _mkl
from ipfs_accelerate.tensor import from_numpy
from_numpy(np.zeros(4, np.float32), "cpu")
_mkl.enabled()  # MKL's library, loaded by whichever dtype asks first (int8's policy does)

def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

gc.collect()
before = rss()
model = BertModel.from_pretrained(sys.argv[1], "cpu", dtype=sys.argv[2])
gc.collect()
after = rss()
print(json.dumps({"added": after - before, "dtype": model.dtype}))
"""


def _added(source: Path | str, dtype: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(source), dtype],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    ).stdout  # fmt: skip
    result = json.loads(out.strip().splitlines()[-1])
    assert result["dtype"] == (dtype if dtype != "auto" else result["dtype"])
    print(f"{source} {dtype} -> {result['dtype']}: +{result['added'] / 2**20:.1f} MiB")
    return int(result["added"])


@pytest.fixture(scope="module")
def fp32_added(minilm_dir: Path) -> int:
    return _added(minilm_dir, "float32")


@pytest.mark.timeout(300)
def test_int8_minilm_adds_at_most_35_percent_of_float32(minilm_dir: Path, fp32_added: int) -> None:
    assert fp32_added > 60 * 2**20  # the float32 weights are ~87 MiB: the measure sees them
    int8 = _added(minilm_dir, "int8")
    assert int8 <= 0.35 * fp32_added, f"int8 adds {int8 / fp32_added:.0%} of float32's RSS"


@pytest.mark.timeout(300)
def test_a_float16_checkpoint_stays_float16_under_auto(
    minilm_dir: Path, fp32_added: int, tmp_path: Path
) -> None:
    import shutil

    import numpy as np

    from ipfs_accelerate.models.loading import read_weights
    from ipfs_accelerate.models.saving import write_safetensors

    half = tmp_path / "minilm-f16"
    shutil.copytree(minilm_dir, half)
    tensors = {k: np.asarray(v, dtype=np.float16) for k, v in read_weights(minilm_dir).items()}
    write_safetensors(half / "model.safetensors", tensors, {"format": "pt"})
    added = _added(half, "auto")
    assert added <= 0.6 * fp32_added, f"float16 adds {added / fp32_added:.0%} of float32's RSS"
