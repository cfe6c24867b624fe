"""``bench --compare`` on crafted results files and on a run, the results documents the real
benchmarks write, and ``bench providers`` against the loopback protocol fakes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.cli import ExitCode
from ipfs_accelerate.cli._bench_compare import compare_runs, load_runs
from ipfs_accelerate.cli._bench_providers import parse_spec, percentile
from ipfs_accelerate.errors import InvalidArgumentError
from tests.cli.test_cli import _benchmarks, as_json, invoke
from tests.serve.conftest import fake_on_thread

pytestmark = pytest.mark.timeout(120)

BASELINE = {
    "schema": 1,
    "benchmark": "demo",
    "ratios": [
        {"label": "speed vs peer", "value": 2.0, "better": "higher", "seconds": 0.5},
        {"label": "ours/peer time", "value": 1.0, "better": "lower"},
        {"label": "dropped in the current run", "value": 1.0},  # older files: no "better"
    ],
}


def _write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


def _current(path: Path, speed: float, time_ratio: float, extra: bool = True) -> Path:
    ratios = [
        {"label": "speed vs peer", "value": speed, "better": "higher"},
        {"label": "ours/peer time", "value": time_ratio, "better": "lower"},
    ]
    if extra:
        ratios.append({"label": "a new row", "value": 3.0, "better": "higher"})
    return _write(path, {"schema": 1, "benchmark": "demo", "ratios": ratios})


def test_compare_flags_a_regression_an_improvement_and_a_missing_row(tmp_path: Path) -> None:
    baseline = _write(tmp_path / "baseline.json", BASELINE)
    # speed fell 25% (regressed); the time ratio fell from 1.0 to 0.8 (lower is better: +25%)
    worse = _current(tmp_path / "worse.json", speed=1.5, time_ratio=0.8)
    result = invoke("bench", "--compare", str(baseline), str(worse), "--json")
    assert result.exit_code == ExitCode.FAILURE, result.output
    data = json.loads(result.stdout)
    rows = {row["label"]: row for row in data["rows"]}
    assert rows["speed vs peer"]["status"] == "regressed"
    assert rows["speed vs peer"]["change"] == pytest.approx(-0.25)
    assert rows["speed vs peer"]["baseline_figures"] == {"seconds": 0.5}
    assert rows["ours/peer time"]["status"] == "improved"
    assert rows["ours/peer time"]["change"] == pytest.approx(0.25)
    assert rows["dropped in the current run"]["status"] == "missing"
    assert rows["dropped in the current run"]["current"] is None
    assert rows["a new row"]["status"] == "new"
    assert data["counts"] == {"ok": 0, "improved": 1, "regressed": 1, "missing": 1, "new": 1}
    # the table says the same to a person
    shown = invoke("bench", "--compare", str(baseline), str(worse))
    assert shown.exit_code == ExitCode.FAILURE
    assert "REGRESSED" in shown.stdout and "missing" in shown.stdout
    assert "fell by more than 10%" in shown.stderr

    # an improvement (and a slower time ratio within the threshold) passes; a missing row is
    # reported but fails only with --strict
    better = _current(tmp_path / "better.json", speed=2.6, time_ratio=1.05, extra=False)
    passed = as_json(invoke("bench", "--compare", str(baseline), str(better), "--json"))
    statuses = [row["status"] for row in passed["rows"]]
    assert statuses == ["improved", "ok", "missing"]
    strict = invoke("bench", "--compare", str(baseline), str(better), "--strict")
    assert strict.exit_code == ExitCode.FAILURE and "1 baseline ratio(s) missing" in strict.stderr

    # the threshold is the documented fraction: -7.5% passes at 10%, fails at 5%
    slight = _current(tmp_path / "slight.json", speed=1.85, time_ratio=1.0)
    assert invoke("bench", "--compare", str(baseline), str(slight)).exit_code == 0
    tight = invoke("bench", "--compare", str(baseline), str(slight), "--threshold", "0.05")
    assert tight.exit_code == ExitCode.FAILURE


def test_compare_reads_bench_json_output_and_refuses_bad_files(tmp_path: Path) -> None:
    # what `bench --json` prints (several benchmarks) is a baseline as good as one file
    combined = {
        "directory": "benchmarks",
        "benchmarks": [
            {"name": "demo", "returncode": 0, "ratios": BASELINE["ratios"]},
            {"name": "other", "returncode": 0, "ratios": [{"label": "x", "value": 1.0}]},
        ],
    }
    runs = load_runs(_write(tmp_path / "combined.json", combined))
    assert list(runs) == ["demo", "other"]
    current = load_runs(_current(tmp_path / "current.json", 2.0, 1.0, extra=False))
    comparison = compare_runs(runs, current)
    missing = [(r.benchmark, r.label) for r in comparison.rows if r.status == "missing"]
    assert missing == [("demo", "dropped in the current run"), ("other", "x")]
    assert not comparison.failed() and comparison.failed(strict=True)

    for document, words in (
        ({"schema": 2, "benchmark": "demo", "ratios": []}, "newer than this reader"),
        ({"ratios": []}, "names its 'benchmark'"),
        ({"benchmark": "demo", "ratios": [{"label": "x", "value": float("inf")}]}, "finite"),
        ({"benchmark": "d", "ratios": [{"label": "x", "value": 1, "better": "up"}]}, "'better'"),
        ({"benchmarks": [{"ratios": []}]}, "benchmarks[0] has no string 'name'"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(document))  # inf is written as Infinity, as a bug would
        with pytest.raises(InvalidArgumentError, match=re.escape(words)) as caught:
            load_runs(bad)
        assert str(bad) in str(caught.value)
    refused = invoke("bench", "--compare", str(bad), str(tmp_path / "current.json"))
    assert refused.exit_code == ExitCode.INPUT and "bad.json" in refused.stderr
    with pytest.raises(InvalidArgumentError, match="threshold"):
        compare_runs(runs, current, threshold=1.5)
    # a ratio that fell to zero lost all of it; one that rose from zero, no finite factor
    zero = compare_runs({"b": [{"label": "x", "value": 1.0}]}, {"b": [{"label": "x", "value": 0}]})
    assert zero.rows[0].status == "regressed" and zero.rows[0].change == -1.0
    rose = compare_runs({"b": [{"label": "x", "value": 0}]}, {"b": [{"label": "x", "value": 1.0}]})
    assert rose.rows[0].status == "improved" and rose.as_dict()["rows"][0]["change"] is None


def test_compare_runs_the_benchmarks_a_baseline_names(tmp_path: Path) -> None:
    root = _benchmarks(tmp_path / "benchmarks")  # fast.py reports add 1.5, mul 0.75
    baseline = {
        "benchmark": "fast",
        "ratios": [{"label": "add", "value": 1.4}, {"label": "mul", "value": 1.0}],
    }
    path = _write(tmp_path / "baseline.json", baseline)
    result = invoke("bench", "--dir", str(root), "--compare", str(path), "--quiet", "--json")
    assert result.exit_code == ExitCode.FAILURE, result.output
    rows = {row["label"]: row for row in json.loads(result.stdout)["rows"]}
    assert rows["add"]["current"] == 1.5 and rows["add"]["status"] == "ok"
    assert rows["mul"]["current"] == 0.75 and rows["mul"]["status"] == "regressed"
    # a benchmark that fails counts as a failure, its ratios as missing
    broken = _write(tmp_path / "broken.json", {"benchmark": "broken", "ratios": baseline["ratios"]})
    failed = invoke("bench", "--dir", str(root), "--compare", str(broken), "--quiet", "--json")
    assert failed.exit_code == ExitCode.FAILURE
    assert {row["status"] for row in json.loads(failed.stdout)["rows"]} == {"missing"}


def test_real_benchmarks_write_schema_1_documents(tmp_path: Path) -> None:
    """sharing_register's smallest run: the document carries the machine and each row's
    direction, and compared with itself every row is ok."""
    root = Path(__file__).resolve().parents[2] / "benchmarks"
    written = tmp_path / "results.json"
    subprocess.run(
        [sys.executable, str(root / "sharing_register.py"), "--sizes-mb", "1", "--repeat", "1",
         "--json", str(written)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    document = json.loads(written.read_text())
    assert document["schema"] == 1 and document["benchmark"] == "sharing_register"
    machine = document["machine"]
    assert machine["cpu_count"] >= 1 and isinstance(machine["cpu_flags"], dict)
    assert machine["python"] == ".".join(map(str, sys.version_info[:3]))
    assert {row["better"] for row in document["ratios"]} == {"lower"}  # times over sha256's
    same = as_json(invoke("bench", "--compare", str(written), str(written), "--json"))
    assert {row["status"] for row in same["rows"]} == {"ok"}


def test_results_number_a_repeated_label() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from _results import Results
    finally:
        sys.path.pop(0)
    results = Results("demo")
    results.ratio("x", 1.0)
    results.ratio("x", 2.0, higher_is_better=False)
    results.ratio("x", float("nan"))  # not run: left out
    assert [(r["label"], r["better"]) for r in results.ratios] == [
        ("x", "higher"),
        ("x [2]", "lower"),
    ]


# ----------------------------------------------------------------------------- providers


def test_provider_specs_and_percentiles() -> None:
    assert parse_spec("openai") == parse_spec("openai")
    spec = parse_spec("ollama:llama3:8b=http://127.0.0.1:11434")
    assert (spec.name, spec.model, spec.base_url) == (
        "ollama",
        "llama3:8b",
        "http://127.0.0.1:11434",
    )
    assert parse_spec("vllm=http://h/v1?x=1").base_url == "http://h/v1?x=1"
    for bad, words in (("", "no backend name"), ("nope", "unknown backend 'nope'"),
                       ("openai:", "empty model"), ("openai=", "empty URL")):  # fmt: skip
        with pytest.raises(InvalidArgumentError, match=words):
            parse_spec(bad)
    values = sorted(np.random.default_rng(0).exponential(size=101).tolist())
    for q in (0.5, 0.95, 0.99):  # nearest rank is numpy's inverted_cdf
        assert percentile(values, q) == np.percentile(values, q * 100, method="inverted_cdf")
    assert percentile([], 0.5) is None


def test_bench_providers_races_two_fakes() -> None:
    from tests.fakes.groq_fake import GroqFake
    from tests.fakes.vllm_fake import BASE_MODEL, VLLMFake

    with fake_on_thread(VLLMFake()) as vllm, fake_on_thread(GroqFake("gsk_bench")) as groq:
        # two non-retryable failures on groq: its error rate is 2 of 12
        groq.inject(status=400, message="bad request for the bench", times=2)
        env = {"GROQ_API_KEY": "gsk_bench"}
        args = ["bench", "providers", "-b", f"vllm:{BASE_MODEL}={vllm.url}/v1",
                "-b", f"groq:llama-3.1-8b-instant={groq.url}/openai/v1",
                "--requests", "12", "--concurrency", "3", "--prompt", "race me"]  # fmt: skip
        data = as_json(invoke(*args, "--json", env=env))
        by_name = {p["backend"]: p for p in data["providers"]}
        assert [p["requests"] for p in data["providers"]] == [12, 12]
        assert by_name["vllm"]["ok"] == 12 and by_name["vllm"]["error_rate"] == 0
        assert by_name["groq"]["ok"] == 10 and by_name["groq"]["errors"] == {"BadRequestError": 2}
        assert by_name["groq"]["error_rate"] == pytest.approx(2 / 12)
        for p in data["providers"]:
            assert 0 < p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"]
            assert p["throughput_rps"] > 0 and 0 < p["throughput_vs_best"] <= 1
        assert max(p["throughput_vs_best"] for p in data["providers"]) == 1
        chats = [r for r in vllm.requests if r.path.endswith("/chat/completions")]
        assert len(chats) == 12 and chats[0].json["messages"][-1]["content"] == "race me"
        assert chats[0].json["model"] == BASE_MODEL and chats[0].json["max_tokens"] == 16
        shown = invoke(*args, env=env)
        assert shown.exit_code == 0 and "p95 ms" in shown.stdout
        assert "gsk_bench" not in shown.output
    assert invoke("bench", "providers").exit_code != 0  # no backend given
    no_key = invoke("bench", "providers", "-b", "groq", env={"GROQ_API_KEY": ""})
    assert no_key.exit_code == ExitCode.CONFIGURATION and "groq" in no_key.stderr
    assert invoke("bench", "-b", "groq").exit_code == ExitCode.USAGE


def test_every_benchmark_takes_json_through_the_shared_helper() -> None:
    """Each script in benchmarks/ records its ratios with _results.Results and offers
    --json FILE (what bench and bench --compare read)."""
    root = Path(__file__).resolve().parents[2] / "benchmarks"
    scripts = [p for p in sorted(root.glob("*.py")) if not p.name.startswith("_")]
    assert len(scripts) >= 10
    for script in scripts:
        source = script.read_text(encoding="utf-8")
        for needed in ("add_json_option(parser)", "Results(", ".write(args.json)"):
            assert needed in source, f"{script.name} lacks {needed}"
