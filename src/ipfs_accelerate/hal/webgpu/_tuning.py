"""Per-adapter kernel choice by measurement, remembered on disk.

The fastest float32 matmul kernel differs by an order of magnitude between adapters: on
lavapipe (a CPU running the shader as SIMD lanes) a 4x4 register-blocked kernel beats
shared-memory tiling ~10x, on real GPUs tiling wins. The first large float32 matmul on an
adapter times each candidate on a probe problem (with its own recorder and buffers, so the
caller's open batch is neither submitted nor counted) and records the ranking in
``$IPFS_ACCELERATE_CACHE_DIR/webgpu_tuning.json`` (default ``~/.cache/ipfs_accelerate``),
keyed by adapter and driver. ``$IPFS_ACCELERATE_WEBGPU_MATMUL`` ("rb4", "rb4:16x16",
"tiled", "naive") forces a choice.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ipfs_accelerate.hal.webgpu._backend import WebGPUBackend

#: (variant, workgroup) candidates, register-blocked ones first
CANDIDATES: tuple[tuple[str, tuple[int, int]], ...] = (
    ("rb4", (8, 8)),
    ("rb4", (16, 16)),
    ("rb4", (4, 16)),
    ("tiled", (16, 16)),
    ("naive", (8, 8)),
)
#: problems at least this large (M*N*K) trigger the measurement when nothing is cached
TUNE_THRESHOLD = 1 << 21


@dataclass(frozen=True)
class MatmulChoice:
    """The kernel for float32 products: ``best`` where its shape rules allow, else ``fallback``."""

    variant: str
    workgroup: tuple[int, int]
    fallback: str
    source: str  # "measured", "cached", "default" or "forced"
    gflops: tuple[tuple[str, float], ...] = ()

    @property
    def name(self) -> str:
        wx, wy = self.workgroup
        return f"{self.variant}:{wx}x{wy}" if self.variant == "rb4" else self.variant


def cache_path() -> Path:
    root = os.environ.get("IPFS_ACCELERATE_CACHE_DIR") or os.path.join(Path.home(), ".cache", "ipfs_accelerate")
    return Path(root) / "webgpu_tuning.json"


def _parse_forced(text: str) -> MatmulChoice | None:
    text = text.strip().lower()
    if not text:
        return None
    variant, _, shape = text.partition(":")
    if variant not in ("rb4", "tiled", "naive"):
        return None
    workgroup = (8, 8)
    if shape:
        with contextlib.suppress(ValueError):
            wx, wy = (int(v) for v in shape.split("x"))
            workgroup = (wx, wy)
    fallback = "naive" if variant == "rb4" else variant
    return MatmulChoice(variant, workgroup, fallback, "forced")


class Tuner:
    """Finds (once per adapter) and remembers the matmul kernel choice."""

    def __init__(self, backend: WebGPUBackend, path: str | os.PathLike[str] | None = None) -> None:
        self._backend = backend
        self._path = Path(path) if path is not None else cache_path()
        dev = backend.device
        self.key = "|".join((dev.vendor, dev.device_name, dev.api, dev.adapter_type, dev.description))
        self._choice: MatmulChoice | None = None

    def default(self) -> MatmulChoice:
        """The choice before (or without) measuring: by adapter type."""
        forced = _parse_forced(os.environ.get("IPFS_ACCELERATE_WEBGPU_MATMUL", ""))
        if forced is not None:
            return forced
        if self._backend.device.adapter_type == "cpu":
            return MatmulChoice("rb4", (8, 8), "naive", "default")
        return MatmulChoice("tiled", (16, 16), "tiled", "default")

    def choice(self, work: int) -> MatmulChoice:
        """The choice for a float32 product of ``work`` = M*N*K multiply-adds."""
        if self._choice is not None:
            return self._choice
        forced = _parse_forced(os.environ.get("IPFS_ACCELERATE_WEBGPU_MATMUL", ""))
        if forced is not None:
            self._choice = forced
            return forced
        cached = self._load()
        if cached is not None:
            self._choice = cached
            return cached
        if work < TUNE_THRESHOLD:
            return self.default()
        self._choice = self.measure()
        self._save(self._choice)
        return self._choice

    # ------------------------------------------------------------------ measuring

    def measure(self, size: int | None = None, repeats: int = 2) -> MatmulChoice:
        """Time every candidate on a size x size x size float32 product; fastest wins."""
        backend = self._backend
        dev = backend.device
        if size is None:
            size = 256 if dev.adapter_type == "cpu" else 1024
        rng = np.random.default_rng(0)
        a = rng.standard_normal((size, size)).astype(np.float32)
        b = rng.standard_normal((size, size)).astype(np.float32)
        results: list[tuple[str, tuple[int, int], float]] = []
        with backend.private_recorder() as (recorder, upload, alloc):
            buf_a, buf_b = upload(a), upload(b)
            out = alloc(size * size * 4)
            for variant, workgroup in CANDIDATES:
                try:
                    record = backend.matmul_recording(variant, workgroup, size, size, size)
                    record(recorder, buf_a, buf_b, out)  # compile and warm up
                    recorder.read(None, 0)
                    start = time.perf_counter()
                    for _ in range(repeats):
                        record(recorder, buf_a, buf_b, out)
                    recorder.read(None, 0)
                    elapsed = (time.perf_counter() - start) / repeats
                except Exception:  # a candidate the adapter cannot run is simply not chosen
                    continue
                results.append((variant, workgroup, 2.0 * size**3 / elapsed / 1e9))
        if not results:
            return self.default()
        results.sort(key=lambda r: r[2], reverse=True)
        best = results[0]
        fallback = max((r for r in results if r[0] != "rb4"), key=lambda r: r[2], default=("naive", (8, 8), 0.0))
        ranking = tuple((f"{v}:{w[0]}x{w[1]}" if v == "rb4" else v, round(g, 3)) for v, w, g in results)
        return MatmulChoice(best[0], best[1], fallback[0], "measured", ranking)

    # ------------------------------------------------------------------ the cache file

    def _load(self) -> MatmulChoice | None:
        try:
            data: dict[str, Any] = json.loads(self._path.read_text(encoding="utf-8"))
            entry = data.get(self.key)
            if not isinstance(entry, dict):
                return None
            variant = str(entry["variant"])
            workgroup = (int(entry["workgroup"][0]), int(entry["workgroup"][1]))
            if variant not in ("rb4", "tiled", "naive"):
                return None
            ranking = tuple((str(n), float(g)) for n, g in entry.get("gflops", []))
            return MatmulChoice(variant, workgroup, str(entry.get("fallback", "naive")), "cached", ranking)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    def _save(self, choice: MatmulChoice) -> None:
        try:
            data: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(self._path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    data = loaded
            data[self.key] = {
                "variant": choice.variant,
                "workgroup": list(choice.workgroup),
                "fallback": choice.fallback,
                "gflops": [list(item) for item in choice.gflops],
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".webgpu_tuning.")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
            os.replace(tmp, self._path)
        except OSError:  # a read-only home only costs a re-measurement next time
            pass
