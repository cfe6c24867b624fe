"""benchmarks/_precision.py: how benchmarks/models.py reads the CPU's flags, measures
agreement with the fp32 reference and judges issue 16's targets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

# benchmarks/ is a folder of scripts, not a package: load the helper by its path
_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_precision.py"
_SPEC = importlib.util.spec_from_file_location("benchmarks_precision", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
precision = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = precision  # dataclasses look their module up there
_SPEC.loader.exec_module(precision)
CpuInfo, cosine_stats, cpu_info = precision.CpuInfo, precision.cosine_stats, precision.cpu_info
matching_prefix, minilm_targets = precision.matching_prefix, precision.minilm_targets

_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Example CPU @ 2.00GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
bugs\t\t: none

processor\t: 1
model name\t: Example CPU @ 2.00GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
"""


def test_cpu_info_reads_the_model_and_each_flag() -> None:
    info = cpu_info(_CPUINFO)
    assert info.model == "Example CPU @ 2.00GHz"
    assert info.flags == {
        "avx2": True,
        "avx512f": True,
        "avx512_vnni": True,
        "avx_vnni": False,
        "amx_int8": False,
    }
    assert info.vnni
    assert "avx512_vnni yes" in info.describe() and "amx_int8 no" in info.describe()
    avx2_only = cpu_info(_CPUINFO.replace(" avx512f avx512_vnni", ""))
    assert not avx2_only.vnni and avx2_only.flags["avx2"]
    assert cpu_info("model name : x\n").flags == {}
    assert "unknown" in cpu_info("model name : x\n").describe()
    # the machine running the tests: whatever it is, the flags are read or reported unknown
    assert cpu_info().flags == {} or set(cpu_info().flags) >= {"avx2", "avx_vnni"}


def test_cosine_stats_per_row() -> None:
    reference = np.eye(3, dtype=np.float32)
    rotated = reference.copy()
    rotated[1] = [0.0, 1.0, 1.0]  # 45 degrees off, and not unit length
    low, mean = cosine_stats(2.0 * rotated, reference)
    assert low == pytest.approx(np.sqrt(0.5))
    assert mean == pytest.approx((2 + np.sqrt(0.5)) / 3)


def test_matching_prefix_stops_at_the_first_difference() -> None:
    assert matching_prefix([1, 2, 3, 4], [1, 2, 3, 4]) == 4
    assert matching_prefix([1, 2, 9, 4], [1, 2, 3, 4]) == 2
    assert matching_prefix([7, 2, 3], [1, 2, 3]) == 0


def _times(torch32: float, webnn8: float, ort8: float, cpu32: float, cpu8: float) -> dict:
    return {
        "sentence-transformers float32": torch32,
        "onnxruntime int8": ort8,
        "ipfs_accelerate[webnn] int8": webnn8,
        "ipfs_accelerate[webnn] float32": torch32,
        "ipfs_accelerate[cpu] float32": cpu32,
        "ipfs_accelerate[cpu] int8": cpu8,
    }


def test_targets_depend_on_vnni_speed_and_cosine() -> None:
    vnni = CpuInfo("x", {"avx2": True, "avx_vnni": True})
    avx2 = CpuInfo("x", {"avx2": True, "avx_vnni": False})
    times = _times(torch32=1.0, webnn8=0.6, ort8=0.7, cpu32=1.0, cpu8=1.04)
    good = {"ipfs_accelerate[webnn] int8": 0.995}
    by_label = {v.label.split(" (")[0]: v for v in minilm_targets(times, good, vnni)}
    webnn_torch = next(v for v in by_label.values() if "torch fp32 (with VNNI)" in v.label)
    assert webnn_torch.target == 2.0 and webnn_torch.value == pytest.approx(1 / 0.6)
    assert not webnn_torch.met and "NOT MET" in webnn_torch.describe()
    # 1.67x clears the 1.3x that an AVX2-only CPU is held to
    on_avx2 = next(v for v in minilm_targets(times, good, avx2) if "AVX2 alone" in v.label)
    assert on_avx2.target == 1.3 and on_avx2.met and on_avx2.describe().endswith(", met")
    vs_ort = next(v for v in minilm_targets(times, good, vnni) if "onnxruntime" in v.label)
    assert vs_ort.value == pytest.approx(0.7 / 0.6) and vs_ort.met
    # the same speed at a minimum cosine under 0.99 does not count
    poor = {"ipfs_accelerate[webnn] int8": 0.98}
    vs_ort_poor = next(v for v in minilm_targets(times, poor, vnni) if "onnxruntime" in v.label)
    assert not vs_ort_poor.met and "min cosine 0.9800" in vs_ort_poor.describe()
    cpu8 = next(v for v in minilm_targets(times, good, vnni) if "cpu int8" in v.label)
    assert cpu8.value == pytest.approx(1 / 1.04) and cpu8.met  # 0.96x >= 0.95x


def test_a_target_whose_row_did_not_run_is_not_met() -> None:
    times = {"sentence-transformers float32": 1.0}
    verdicts = minilm_targets(times, {}, CpuInfo("x", {}))
    assert len(verdicts) == 5
    assert all(v.value is None and not v.met for v in verdicts)
    assert all(v.describe().endswith("not run") for v in verdicts)


def test_encoder_targets_judge_cpu_and_webnn_fp32_with_their_cosine() -> None:
    times = {
        "sentence-transformers float32": 1.0,
        "ipfs_accelerate[cpu] float32": 0.95,  # 1.05x: meets 1.0x
        "ipfs_accelerate[webnn] float32": 0.9,  # 1.11x: short of 1.2x
    }
    cosines = {"ipfs_accelerate[cpu] float32": 0.9999, "ipfs_accelerate[webnn] float32": 0.9999}
    cpu, webnn = precision.encoder_targets("MPNet", times, cosines)
    assert cpu.label.startswith("MPNet cpu float32 >= 1.0x") and cpu.target == 1.0
    assert cpu.value == pytest.approx(1 / 0.95) and cpu.met
    assert webnn.target == 1.2 and webnn.value == pytest.approx(1 / 0.9) and not webnn.met
    # fast enough but far from torch's vectors: not met
    wrong = {"ipfs_accelerate[cpu] float32": 0.5}
    assert not precision.encoder_targets("MPNet", times, wrong)[0].met
    # a backend that did not run
    missing = precision.encoder_targets("XLM-R", {"sentence-transformers float32": 1.0}, {})
    assert all(v.value is None and not v.met for v in missing)
