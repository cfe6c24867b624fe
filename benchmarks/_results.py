"""What a benchmark measured, as data: every benchmark here takes ``--json FILE`` and writes
the ratios it prints (and the times behind them) to FILE, so that ``ipfs-accelerate bench``
and other scripts read numbers instead of parsing the printed tables.

The document::

    {"benchmark": "tensor_ops", "args": ["--repeat", "3"],
     "ratios": [{"label": "add 1M: ours/numpy", "value": 1.04, "ours_s": 0.0012, ...}, ...]}

Each ratio has a ``label`` and a finite ``value`` as the benchmark defines it (its printed
table says which way round); other keys are the measurements behind it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["Results", "add_json_option"]


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        metavar="FILE",
        type=Path,
        default=None,
        help="also write the results (the ratios printed, and their times) to FILE as JSON",
    )


class Results:
    """The ratios one benchmark run reports, written by :meth:`write` as the document above."""

    def __init__(self, benchmark: str) -> None:
        self.benchmark = benchmark
        self.ratios: list[dict[str, Any]] = []

    def ratio(self, label: str, value: float, **measured: Any) -> None:
        """Record one ratio; a value that is not finite (a contender that did not run) is
        left out, as the printed table shows it as n/a."""
        if not math.isfinite(value):
            return
        finite = {
            key: None if isinstance(v, float) and not math.isfinite(v) else v
            for key, v in measured.items()
        }
        self.ratios.append({"label": label, "value": float(value), **finite})

    def write(self, path: Path | None) -> None:
        if path is None:
            return
        document = {"benchmark": self.benchmark, "args": sys.argv[1:], "ratios": self.ratios}
        path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
