"""Per-adapter kernel choice by measurement, remembered on disk.

The fastest float32 matmul kernel differs by an order of magnitude between adapters, so the
first large float32 product on an adapter times each candidate on a probe problem (with its
own recorder and buffers, so the caller's open batch is neither submitted nor counted) and
records the ranking in ``$IPFS_ACCELERATE_CACHE_DIR/webgpu_tuning.json``, keyed by adapter
and driver. ``$IPFS_ACCELERATE_WEBGPU_MATMUL`` ("rb8x8:8x8" = 8x8 outputs per invocation in
8x8 workgroups, "tiled", "naive") forces a choice. docs/webgpu.md has the measurements.
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

from ipfs_accelerate.hal.webgpu._kernels._matmul import FIXED_SHAPES, fixed_kernel, label
from ipfs_accelerate.hal.webgpu._matmul_dispatch import matmul_recording

if TYPE_CHECKING:
    from ipfs_accelerate.hal.webgpu._dispatcher import Dispatcher

#: (variant, block (rows, cols) per invocation, workgroup) candidates
CANDIDATES: tuple[tuple[str, tuple[int, int], tuple[int, int]], ...] = (
    ("rb", (4, 4), (8, 8)),
    ("rb", (4, 4), (16, 16)),
    ("rb", (8, 8), (8, 8)),
    ("rb", (8, 16), (8, 4)),
    ("rb", (16, 16), (8, 8)),
    fixed_kernel("tiled"),
    fixed_kernel("naive"),
)
#: problems at least this large (M*N*K) trigger the measurement when nothing is cached
TUNE_THRESHOLD = 1 << 21


@dataclass(frozen=True)
class MatmulChoice:
    """The kernel for float32 products: ``variant`` where its shape rules allow, else
    ``fallback``."""

    variant: str
    block: tuple[int, int]
    workgroup: tuple[int, int]
    fallback: str
    source: str  # "measured", "cached", "default" or "forced"
    gflops: tuple[tuple[str, float], ...] = ()

    @property
    def name(self) -> str:
        return label(self.variant, self.block, self.workgroup)


def cache_path() -> Path:
    from ipfs_accelerate._paths import cache_dir

    return cache_dir() / "webgpu_tuning.json"


def _parse_forced(text: str) -> MatmulChoice | None:
    text = text.strip().lower()
    if text in FIXED_SHAPES:
        return MatmulChoice(*fixed_kernel(text), text, "forced")
    if not text.startswith("rb"):
        return None
    try:
        block_text, _, group_text = text[2:].partition(":")
        rows, cols = (int(v) for v in block_text.split("x"))
        wx, wy = (int(v) for v in (group_text or "8x8").split("x"))
    except ValueError:
        return None
    if rows < 1 or cols < 4 or cols % 4 or rows > 16 or cols > 16:
        return None
    return MatmulChoice("rb", (rows, cols), (wx, wy), "naive", "forced")


class Tuner:
    """Finds (once per adapter) and remembers the matmul kernel choice."""

    def __init__(self, dispatcher: Dispatcher, path: str | os.PathLike[str] | None = None) -> None:
        self._dispatcher = dispatcher
        self._path = Path(path) if path is not None else cache_path()
        dev = dispatcher.device
        self.key = "|".join(
            (dev.vendor, dev.device_name, dev.api, dev.adapter_type, dev.description)
        )
        self._choice: MatmulChoice | None = None
        #: the adapter default, once the environment and the cache file have been looked at and
        #: had nothing: small products then take it without reading them again
        self._unmeasured: MatmulChoice | None = None

    def default(self) -> MatmulChoice:
        """The choice before (or without) measuring: by adapter type."""
        forced = _parse_forced(os.environ.get("IPFS_ACCELERATE_WEBGPU_MATMUL", ""))
        if forced is not None:
            return forced
        if self._dispatcher.device.adapter_type == "cpu":
            return MatmulChoice("rb", (8, 8), (8, 8), "naive", "default")
        return MatmulChoice(*fixed_kernel("tiled"), "tiled", "default")

    def current(self) -> MatmulChoice:
        """The choice in force now: the one found (measured, cached or forced), else the
        default; looks at nothing and measures nothing."""
        return self._choice or self.default()

    def choice(self, work: int) -> MatmulChoice:
        """The choice for a float32 product of ``work`` = M*N*K multiply-adds."""
        if self._choice is not None:
            return self._choice
        if self._unmeasured is None:
            forced = _parse_forced(os.environ.get("IPFS_ACCELERATE_WEBGPU_MATMUL", ""))
            if forced is not None:
                self._choice = forced
                return forced
            cached = self._load()
            if cached is not None:
                self._choice = cached
                return cached
            self._unmeasured = self.default()
        if work < TUNE_THRESHOLD:
            return self._unmeasured
        self._choice = self.measure()
        if self._choice.source == "measured":
            self._save(self._choice)
        return self._choice

    # ------------------------------------------------------------------ measuring

    def measure(self, size: int | None = None) -> MatmulChoice:
        """Time every candidate on a size x size x size float32 product.

        Each candidate runs once to compile and warm up, then once timed (twice for the ones
        within 2x of the best so far, to rank the close ones on more than one sample). The
        fastest wins, unless one within 15% of it compiles faster."""
        dispatcher = self._dispatcher
        dev = dispatcher.device
        if size is None:
            size = 384 if dev.adapter_type == "cpu" else 1024
        rng = np.random.default_rng(0)
        a = rng.standard_normal((size, size)).astype(np.float32)
        b = rng.standard_normal((size, size)).astype(np.float32)
        results: list[tuple[str, tuple[int, int], tuple[int, int], float, float]] = []
        best = 0.0
        with dispatcher.private_recorder() as (recorder, upload, alloc):
            buf_a, buf_b = upload(a), upload(b)
            out = alloc(size * size * 4)
            for variant, block, workgroup in CANDIDATES:
                if workgroup[0] * workgroup[1] > dev.max_invocations:
                    continue  # beyond this adapter's workgroup limits
                try:
                    record = matmul_recording(
                        dispatcher, variant, block, workgroup, size, size, size
                    )
                    start = time.perf_counter()
                    record(recorder, buf_a, buf_b, out)  # compile and warm up
                    recorder.read(None, 0)
                    warm_up = time.perf_counter() - start
                    samples = []
                    for _ in range(2):
                        start = time.perf_counter()
                        record(recorder, buf_a, buf_b, out)
                        recorder.read(None, 0)
                        samples.append(time.perf_counter() - start)
                        rate = 2.0 * size**3 / min(samples) / 1e9
                        if rate < best / 2:
                            break
                except Exception:  # a candidate the adapter cannot run is simply not chosen
                    continue
                best = max(best, rate)
                # compile time: the warm-up minus one run
                results.append(
                    (
                        variant,
                        block,
                        workgroup,
                        rate,
                        max(warm_up - 2.0 * size**3 / rate / 1e9, 0.0),
                    )
                )
        if not results:
            return self.default()
        results.sort(key=lambda r: r[3], reverse=True)
        # big register blocks compile slowly (once per kernel variant and process): among the
        # kernels within 15% of the fastest, the quickest to compile wins
        close = [r for r in results if r[3] >= 0.85 * results[0][3]]
        top = min(close, key=lambda r: r[4])
        fixed = [r for r in results if r[0] in FIXED_SHAPES]
        fallback = max(fixed, key=lambda r: r[3])[0] if fixed else "naive"
        ranking = tuple((label(v, bl, w), round(g, 3)) for v, bl, w, g, _ in results)
        return MatmulChoice(top[0], top[1], top[2], fallback, "measured", ranking)

    # ------------------------------------------------------------------ the cache file

    def _load(self) -> MatmulChoice | None:
        try:
            data: dict[str, Any] = json.loads(self._path.read_text(encoding="utf-8"))
            entry = data.get(self.key)
            if not isinstance(entry, dict):
                return None
            variant = str(entry["variant"])
            block = (int(entry["block"][0]), int(entry["block"][1]))
            workgroup = (int(entry["workgroup"][0]), int(entry["workgroup"][1]))
            if variant not in ("rb", "tiled", "naive") or block[1] % 4:
                return None
            ranking = tuple((str(n), float(g)) for n, g in entry.get("gflops", []))
            return MatmulChoice(
                variant, block, workgroup, str(entry.get("fallback", "naive")), "cached", ranking
            )
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
                "block": list(choice.block),
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
