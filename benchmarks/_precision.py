"""What the low-precision rows of benchmarks/models.py are judged by: the CPU's integer
dot-product flags, agreement with the fp32 reference, and issue 16's targets."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CPU_FLAGS",
    "CpuInfo",
    "Verdict",
    "cosine_stats",
    "cpu_info",
    "encoder_targets",
    "matching_prefix",
    "minilm_targets",
]

#: the /proc/cpuinfo flags that decide what an int8 GEMM can use
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")

#: the least per-sentence cosine against torch fp32 at which a speed target counts
MIN_COSINE = 0.99


@dataclass(frozen=True)
class CpuInfo:
    model: str
    #: each of CPU_FLAGS: present or not; empty where the flags could not be read
    flags: dict[str, bool]

    @property
    def vnni(self) -> bool:
        """Whether int8 dot products run in one instruction (AVX512-VNNI, AVX-VNNI, AMX)."""
        return any(self.flags.get(name, False) for name in ("avx512_vnni", "avx_vnni", "amx_int8"))

    def describe(self) -> str:
        if not self.flags:
            return f"cpu: {self.model}; flags unknown (no /proc/cpuinfo)"
        listed = ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in self.flags.items())
        return f"cpu: {self.model}; {listed}"


def cpu_info(text: str | None = None) -> CpuInfo:
    """The CPU's model name and CPU_FLAGS, from ``text`` (a /proc/cpuinfo) or this machine's."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return CpuInfo(platform.processor() or "unknown", {})
    model, flags = "unknown", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
    if flags is None:
        return CpuInfo(model, {})
    return CpuInfo(model, {name: name in flags for name in CPU_FLAGS})


def cosine_stats(vectors: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(min, mean) of the row-wise cosine between ``vectors`` and ``reference``."""
    a = np.asarray(vectors, dtype=np.float64).reshape(len(reference), -1)
    b = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / np.maximum(norms, 1e-30)
    return float(cos.min()), float(cos.mean())


def matching_prefix(tokens: Any, reference: Any) -> int:
    """How many leading tokens two greedy decodes share (after the first difference the
    inputs differ, so later agreement means little)."""
    a, b = np.ravel(tokens), np.ravel(reference)
    same = a[: len(b)] == b[: len(a)]
    return int(len(same) if same.all() else np.argmin(same))


@dataclass(frozen=True)
class Verdict:
    label: str
    #: the measured ratio (peer time / our time); None where a contender did not run
    value: float | None
    target: float
    #: the least per-sentence cosine of the row judged, where the target asks for one
    min_cosine: float | None = None

    @property
    def met(self) -> bool:
        if self.value is None or self.value < self.target:
            return False
        return self.min_cosine is None or self.min_cosine >= MIN_COSINE

    def describe(self) -> str:
        if self.value is None:
            return f"target {self.label}: not run"
        cos = "" if self.min_cosine is None else f", min cosine {self.min_cosine:.4f}"
        return f"target {self.label}: {self.value:.3f}x{cos}, {'met' if self.met else 'NOT MET'}"


def minilm_targets(
    times: Mapping[str, float], min_cosine: Mapping[str, float], cpu: CpuInfo
) -> list[Verdict]:
    """Issue 5's fp32 targets and issue 16's int8 targets for MiniLM at batch 32. ``times``
    and ``min_cosine`` are keyed "contender dtype", as models.py names its rows."""

    def ratio(peer: str, ours: str) -> float | None:
        peer_s, ours_s = times.get(peer), times.get(ours)
        if peer_s is None or ours_s is None or not np.isfinite(ours_s) or ours_s <= 0:
            return None
        return peer_s / ours_s

    torch32, webnn8 = "sentence-transformers float32", "ipfs_accelerate[webnn] int8"
    vnni_target, isa = (2.0, "with VNNI") if cpu.vnni else (1.3, "on AVX2 alone")
    webnn8_cos = min_cosine.get(webnn8)
    return [
        Verdict(
            "cpu float32 >= 1.0x torch fp32", ratio(torch32, "ipfs_accelerate[cpu] float32"), 1.0
        ),
        Verdict(
            "webnn float32 >= 1.5x torch fp32",
            ratio(torch32, "ipfs_accelerate[webnn] float32"),
            1.5,
        ),
        Verdict(
            f"webnn int8 >= {vnni_target:.1f}x torch fp32 ({isa}), min cosine >= {MIN_COSINE}",
            ratio(torch32, webnn8),
            vnni_target,
            webnn8_cos,
        ),
        Verdict(
            f"webnn int8 >= 1.1x onnxruntime int8, min cosine >= {MIN_COSINE}",
            ratio("onnxruntime int8", webnn8),
            1.1,
            webnn8_cos,
        ),
        Verdict(
            "cpu int8 >= 0.95x cpu float32",
            ratio("ipfs_accelerate[cpu] float32", "ipfs_accelerate[cpu] int8"),
            0.95,
        ),
    ]


def encoder_targets(
    model: str, times: Mapping[str, float], min_cosine: Mapping[str, float]
) -> list[Verdict]:
    """Issue 22's fp32 targets for an encoder row other than MiniLM (``model`` names it in
    the labels): cpu >= 1.0x and webnn >= 1.2x sentence-transformers fp32, each at a minimum
    cosine >= MIN_COSINE against it (random weights leave more room for a wrong forward to
    look close than a trained model does, so the cosine is part of the verdict)."""
    torch32 = "sentence-transformers float32"
    verdicts = []
    for backend, target in (("cpu", 1.0), ("webnn", 1.2)):
        ours = f"ipfs_accelerate[{backend}] float32"
        peer_s, ours_s = times.get(torch32), times.get(ours)
        value = (
            None
            if peer_s is None or ours_s is None or not np.isfinite(ours_s) or ours_s <= 0
            else peer_s / ours_s
        )
        verdicts.append(
            Verdict(
                f"{model} {backend} float32 >= {target:.1f}x torch fp32, "
                f"min cosine >= {MIN_COSINE}",
                value,
                target,
                min_cosine.get(ours),
            )
        )
    return verdicts
