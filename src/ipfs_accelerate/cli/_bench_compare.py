"""``bench --compare``: one run's ratios beside a baseline's, and whether any fell too far.

Ratios, not times, are compared: a ratio is measured against a peer in the same run, so it
travels between machines and loads where absolute times do not. Each row's ``better`` says
which way is good; a row *regressed* when it moved the wrong way by more than the threshold
(relative to the baseline), *improved* when it moved the right way by more than it, and is
*missing* when the baseline has it and the current run does not (a contender that did not
run, or a benchmark that failed)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DEFAULT_THRESHOLD",
    "SCHEMA",
    "Comparison",
    "Row",
    "compare_runs",
    "load_runs",
    "validate_ratios",
]

#: the newest results-document schema this reader knows (benchmarks/_results.py writes it)
SCHEMA = 1
#: a ratio may move the wrong way by this fraction of its baseline before it counts as a
#: regression: best-of-N ratios on a quiet machine repeat within a few percent, a busy one
#: within about ten
DEFAULT_THRESHOLD = 0.10

Status = Literal["ok", "improved", "regressed", "missing", "new"]


def validate_ratios(where: str, ratios: Any) -> list[dict[str, Any]]:
    """``ratios`` as read from a results file, checked: a list of objects with a string
    ``label``, a finite number ``value`` and, where present, ``better`` of "higher" or
    "lower". Raises InvalidArgumentError naming ``where`` and the offending entry."""
    from ipfs_accelerate.errors import InvalidArgumentError

    if not isinstance(ratios, list):
        raise InvalidArgumentError(f"{where}: a benchmark results file holds a list 'ratios'")
    for index, ratio in enumerate(ratios):
        value = ratio.get("value") if isinstance(ratio, dict) else None
        valid = (
            isinstance(ratio, dict)
            and isinstance(ratio.get("label"), str)
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
        )
        if not valid:
            raise InvalidArgumentError(
                f"{where}: ratios[{index}] must be an object with a string 'label' and a finite "
                f"number 'value', got {ratio!r}"
            )
        if ratio.get("better", "higher") not in ("higher", "lower"):
            raise InvalidArgumentError(
                f"{where}: ratios[{index}] 'better' must be 'higher' or 'lower', got "
                f"{ratio['better']!r}"
            )
    return ratios


def load_runs(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The ratios of each benchmark in ``path``: either one benchmark's results file
    (``{"benchmark": name, "ratios": [...]}``) or what ``bench --json`` printed
    (``{"benchmarks": [{"name": name, "ratios": [...]}, ...]}``). Raises InvalidArgumentError
    naming the file when it is neither, or is of a newer schema than this reader."""
    from ipfs_accelerate.errors import InvalidArgumentError

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(f"{path}: not a benchmark results file ({exc})") from None
    if not isinstance(document, dict):
        raise InvalidArgumentError(f"{path}: not a benchmark results file (not a JSON object)")
    schema = document.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA:
        raise InvalidArgumentError(
            f"{path}: results schema {schema!r} is newer than this reader's ({SCHEMA})"
        )
    if isinstance(document.get("benchmarks"), list):
        runs: dict[str, list[dict[str, Any]]] = {}
        for index, run in enumerate(document["benchmarks"]):
            name = run.get("name") if isinstance(run, dict) else None
            if not isinstance(name, str):
                raise InvalidArgumentError(f"{path}: benchmarks[{index}] has no string 'name'")
            runs[name] = validate_ratios(f"{path}: {name}", run.get("ratios"))
        return runs
    name = document.get("benchmark")
    if not isinstance(name, str):
        raise InvalidArgumentError(
            f"{path}: a results file names its 'benchmark' (or lists 'benchmarks')"
        )
    return {name: validate_ratios(str(path), document.get("ratios"))}


@dataclass(frozen=True)
class Row:
    benchmark: str
    label: str
    better: str
    baseline: float | None
    current: float | None
    #: how far the ratio moved in its good direction, relative to the baseline
    #: (+0.25: 25% better; -0.10: 10% worse); None for a missing or new row
    change: float | None
    status: Status
    #: the measurements behind each side's ratio (its other keys: times, tokens/s...), shown
    #: for reading, never judged: machines differ in absolute figures
    baseline_figures: dict[str, Any] = field(default_factory=dict)
    current_figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    threshold: float
    rows: list[Row]

    def count(self, status: Status) -> int:
        return sum(row.status == status for row in self.rows)

    def failed(self, strict: bool = False) -> bool:
        """Whether a ratio regressed (or, with ``strict``, went missing)."""
        return self.count("regressed") > 0 or (strict and self.count("missing") > 0)

    def as_dict(self) -> dict[str, Any]:
        statuses: tuple[Status, ...] = ("ok", "improved", "regressed", "missing", "new")
        return {
            "threshold": self.threshold,
            "counts": {status: self.count(status) for status in statuses},
            # a ratio that fell to zero moved by no finite factor: JSON has no infinity
            "rows": [{**asdict(row), "change": _finite_or_none(row.change)} for row in self.rows],
        }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _figures(ratio: dict[str, Any] | None) -> dict[str, Any]:
    if ratio is None:
        return {}
    return {k: v for k, v in ratio.items() if k not in ("label", "value", "better")}


def _change(baseline: float, current: float, better: str) -> float:
    """Relative movement in the good direction; a ratio that reached zero (or a baseline of
    zero) is judged by sign alone, since no finite factor describes it."""
    if better == "lower":
        baseline, current = current, baseline
    if baseline <= 0:
        return math.inf if current > baseline else (0.0 if current == baseline else -math.inf)
    return current / baseline - 1.0


def compare_runs(
    baseline: dict[str, list[dict[str, Any]]],
    current: dict[str, list[dict[str, Any]]],
    threshold: float = DEFAULT_THRESHOLD,
) -> Comparison:
    """Pair each baseline ratio with the current run's of the same benchmark and label."""
    from ipfs_accelerate.errors import InvalidArgumentError

    if not (0.0 < threshold < 1.0):
        raise InvalidArgumentError(
            f"compare threshold must be a fraction between 0 and 1, got {threshold!r}"
        )
    rows: list[Row] = []
    for name, ratios in baseline.items():
        now = {r["label"]: r for r in current.get(name, [])}
        for ratio in ratios:
            better = str(ratio.get("better", "higher"))
            found = now.pop(ratio["label"], None)
            if found is None:
                rows.append(
                    Row(name, ratio["label"], better, ratio["value"], None, None, "missing",
                        _figures(ratio))
                )  # fmt: skip
                continue
            change = _change(float(ratio["value"]), float(found["value"]), better)
            status: Status = "ok"
            if change < -threshold:
                status = "regressed"
            elif change > threshold:
                status = "improved"
            rows.append(
                Row(name, ratio["label"], better, ratio["value"], found["value"], change, status,
                    _figures(ratio), _figures(found))
            )  # fmt: skip
        for label, ratio in now.items():
            better = str(ratio.get("better", "higher"))
            rows.append(
                Row(name, label, better, None, ratio["value"], None, "new", {}, _figures(ratio))
            )
    for name in [n for n in current if n not in baseline]:
        for ratio in current[name]:
            better = str(ratio.get("better", "higher"))
            rows.append(
                Row(name, ratio["label"], better, None, ratio["value"], None, "new", {},
                    _figures(ratio))
            )  # fmt: skip
    return Comparison(threshold, rows)
