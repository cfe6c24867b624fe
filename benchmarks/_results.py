"""What a benchmark measured, as data: every benchmark here takes ``--json FILE`` and writes
the ratios it prints (and the figures behind them) to FILE, so that ``ipfs-accelerate bench``
reads numbers instead of parsing printed tables, and ``ipfs-accelerate bench --compare``
checks one run against another.

The document (schema 1; docs/benchmarks.md describes it in full)::

    {"schema": 1, "benchmark": "tensor_ops", "args": ["--repeat", "3"],
     "created": "2026-12-06T16:30:00+00:00",
     "machine": {"platform": "Linux-6.1-x86_64", "python": "3.12.3", "cpu": "AMD EPYC ...",
                 "cpu_count": 2, "cpu_flags": {"avx2": true, "avx512f": false, ...}},
     "ratios": [{"label": "add 1M: ours/numpy", "value": 1.04, "better": "lower",
                 "ours_s": 0.0012, "numpy_s": 0.00115}, ...]}

Each row of ``ratios`` has a ``label`` unique within the run, a finite ``value`` as the
benchmark defines it (its printed table says which way round), ``better`` saying whether a
larger value is the good direction (``"higher"``, e.g. peer time / our time) or a smaller
one (``"lower"``, e.g. our time / peer time), and the figures behind it under other keys.
Ratios, not absolute times, are what a comparison between machines or runs looks at.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "Results", "add_json_option", "machine"]

#: the version of the document above; readers refuse a newer one
SCHEMA = 1


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        metavar="FILE",
        type=Path,
        default=None,
        help="also write the results (the ratios printed, and their figures) to FILE as JSON",
    )


def machine() -> dict[str, Any]:
    """What the figures were measured on: enough to tell two machines apart, not a profile."""
    from _precision import cpu_info  # beside this script

    cpu = cpu_info()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu.model,
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu.flags,
    }


class Results:
    """The ratios one benchmark run reports, written by :meth:`write` as the document above."""

    def __init__(self, benchmark: str) -> None:
        self.benchmark = benchmark
        self.ratios: list[dict[str, Any]] = []

    def ratio(
        self, label: str, value: float, *, higher_is_better: bool = True, **measured: Any
    ) -> None:
        """Record one ratio; a value that is not finite (a contender that did not run) is
        left out, as the printed table shows it as n/a. A label recorded again in
        the same run is numbered (" [2]", " [3]") so that a comparison can still pair the
        rows of two runs, which record them in the same order."""
        if not math.isfinite(value):
            return
        finite = {
            key: None if isinstance(v, float) and not math.isfinite(v) else v
            for key, v in measured.items()
        }
        taken = {row["label"] for row in self.ratios}
        unique, count = label, 1
        while unique in taken:
            count += 1
            unique = f"{label} [{count}]"
        better = "higher" if higher_is_better else "lower"
        self.ratios.append({"label": unique, "value": float(value), "better": better, **finite})

    def document(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "benchmark": self.benchmark,
            "args": sys.argv[1:],
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "ratios": self.ratios,
        }

    def write(self, path: Path | None) -> None:
        if path is None:
            return
        text = json.dumps(self.document(), indent=1, allow_nan=False)
        path.write_text(text + "\n", encoding="utf-8")
