"""``bench``: run the benchmarks in benchmarks/ and summarise the ratios they report;
``bench --compare BASELINE`` checks a run against a baseline's ratios (:mod:`._bench_compare`);
``bench providers`` races configured API backends (:mod:`._bench_providers`).

Each benchmark runs with ``--json FILE`` appended to its arguments and writes its ratios
there (benchmarks/_results.py); the summary and the plot read that file, not the output."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import ipfs_accelerate

from ._app import app
from ._bench_compare import DEFAULT_THRESHOLD, Comparison, compare_runs, load_runs
from ._bench_providers import bench_providers, parse_spec
from ._output import ExitCode, JsonOption, command, print_json, stderr, stdout, usage_error


def _benchmark_dir(directory: Path | None) -> Path:
    candidates = [directory] if directory is not None else []
    if directory is None:
        env = os.environ.get("IPFS_ACCELERATE_BENCHMARKS")
        if env:
            candidates.append(Path(env))
        candidates.append(Path(ipfs_accelerate.__file__).resolve().parents[2] / "benchmarks")
        candidates.append(Path.cwd() / "benchmarks")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    from ipfs_accelerate.errors import ConfigurationError

    raise ConfigurationError(
        f"no benchmarks directory (looked in {', '.join(str(c) for c in candidates)}); give --dir "
        "or "
        "$IPFS_ACCELERATE_BENCHMARKS (the benchmarks live in the source checkout, not in the wheel)"
    )


def _discover(directory: Path) -> dict[str, tuple[Path, str]]:
    import ast

    found = {}
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except SyntaxError:
            doc = ""
        found[path.stem] = (path, doc.strip().splitlines()[0] if doc.strip() else "")
    return found


def read_results(path: Path) -> list[dict[str, Any]]:
    """The ratios in a results file a benchmark wrote with ``--json FILE`` (the format of
    benchmarks/_results.py): ``{"ratios": [{"label": str, "value": number, ...}, ...]}``.
    Raises InvalidArgumentError naming the file when it is not that."""
    from ipfs_accelerate.errors import InvalidArgumentError

    from ._bench_compare import validate_ratios

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(f"{path}: not a benchmark results file ({exc})") from None
    ratios = document.get("ratios") if isinstance(document, dict) else None
    return validate_ratios(str(path), ratios)


def _run_benchmark(path: Path, args: list[str], timeout: float, echo: bool) -> dict[str, Any]:
    """Run one benchmark, echoing what it prints, and read the ratios from the results file
    it writes with ``--json FILE`` (none when it wrote none, or failed while writing it)."""
    from ipfs_accelerate.errors import InvalidArgumentError

    with tempfile.TemporaryDirectory(prefix="ipfs-accelerate-bench-") as scratch:
        results_file = Path(scratch) / f"{path.stem}.json"
        result = _run_process(path, [*args, "--json", str(results_file)], timeout, echo)
        ratios: list[dict[str, Any]] = []
        if results_file.exists():
            try:
                ratios = read_results(results_file)
            except InvalidArgumentError:
                if result["returncode"] == 0:  # a failed run already says it failed
                    raise
    return {"name": path.stem, "path": str(path), "args": args, **result, "ratios": ratios}


def _run_process(path: Path, args: list[str], timeout: float, echo: bool) -> dict[str, Any]:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    env = dict(os.environ)
    src = str(Path(ipfs_accelerate.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, str(path), *args]
    lines: list[str] = []
    started = time.perf_counter()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
    ) as progress:
        task = progress.add_task(path.stem, total=None)
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                if echo:
                    progress.console.print(line.rstrip("\n"), markup=False, highlight=False)
                progress.update(task, description=f"{path.stem}: {line.strip()[:70]}")
            returncode = process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
    seconds = time.perf_counter() - started
    output = "\n".join(lines)
    if returncode < 0 or (seconds >= timeout and returncode != 0):
        output += f"\n[killed after {timeout:g} s]"
    return {"returncode": returncode, "seconds": round(seconds, 2), "output": output}


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_ratios = [r for r in results if r["ratios"]]
    if not with_ratios:
        from ipfs_accelerate.errors import InvalidArgumentError

        raise InvalidArgumentError("--plot: the benchmarks reported no ratios to plot")
    heights = [max(1.5, 0.35 * len(r["ratios"]) + 0.8) for r in with_ratios]
    figure, axes = plt.subplots(
        len(with_ratios),
        1,
        figsize=(10, sum(heights)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for axis, result in zip(axes[:, 0], with_ratios, strict=True):
        labels = [r["label"] for r in result["ratios"]]
        values = [r["value"] for r in result["ratios"]]
        axis.barh(range(len(values)), values, color="#4c72b0")
        axis.set_yticks(range(len(values)), labels, fontsize=7)
        axis.invert_yaxis()
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.set_title(
            f"{result['name']} (ratios as the benchmark defines them)", fontsize=9, loc="left"
        )
        for index, value in enumerate(values):
            axis.text(value, index, f" {value:.2f}x", va="center", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@app.command()
@command
def bench(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="NAME...",
            help="Benchmarks to run (default: all); see --list.",
            show_default=False,
        ),
    ] = None,
    list_only: Annotated[
        bool, typer.Option("--list", help="List the benchmarks and exit.")
    ] = False,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="The benchmarks directory (default: the checkout's benchmarks/)."
        ),
    ] = None,
    args: Annotated[
        str, typer.Option("--args", help="Arguments for each benchmark, e.g. --args '--repeat 3'.")
    ] = "",
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Write a PNG of the ratios each benchmark printed (needs matplotlib)."
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Seconds before a benchmark is stopped.")
    ] = 1800.0,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Do not echo the benchmarks' output while they run."),
    ] = False,
    compare: Annotated[
        Path | None,
        typer.Option(
            "--compare",
            metavar="BASELINE",
            help="Compare with the ratios in BASELINE (a --json results file): the one "
            "positional CURRENT.json, else a run of the benchmarks named (default: the "
            "baseline's). Exits 1 when a ratio fell by more than --threshold.",
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            min=0.001,
            max=0.999,
            help="With --compare: how far (a fraction of the baseline) a ratio may move the "
            "wrong way before it counts as a regression.",
        ),
    ] = DEFAULT_THRESHOLD,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="With --compare: a baseline ratio that is missing fails."),
    ] = False,
    backends: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            "-b",
            metavar="NAME[:MODEL][=URL]",
            help="bench providers: a backend to race (repeat it); keys from its environment.",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="bench providers: the model (default: each one's)."),
    ] = None,
    requests: Annotated[
        int,
        typer.Option("--requests", min=1, max=100_000, help="bench providers: per backend."),
    ] = 50,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", min=1, max=1024, help="bench providers: in flight."),
    ] = 4,
    prompt: Annotated[
        str, typer.Option("--prompt", help="bench providers: the user message sent.")
    ] = "Say hello.",
    max_tokens: Annotated[
        int,
        typer.Option("--max-tokens", min=1, max=1_000_000, help="bench providers: per reply."),
    ] = 16,
    json_output: JsonOption = False,
) -> None:
    """Run the benchmarks in benchmarks/ (each beside its peer), print their tables and a \
summary of the ratios. `bench --compare BASELINE.json [CURRENT.json]` checks ratios against \
a baseline; `bench providers -b openai -b groq ...` races API backends."""
    if names and names[0] == "providers":
        if len(names) > 1 or compare is not None or list_only or plot is not None:
            raise usage_error("bench providers takes only its options (--backend, --requests...)")
        _providers(
            [parse_spec(b) for b in backends or []],
            model=model,
            prompt=prompt,
            max_tokens=max_tokens,
            requests=requests,
            concurrency=concurrency,
            json_output=json_output,
        )
        return
    if backends:
        raise usage_error("--backend belongs to bench providers")
    given = list(names or [])
    if compare is not None and len(given) == 1 and given[0].endswith(".json"):
        _report_comparison(
            compare,
            given[0],
            load_runs(compare),
            load_runs(Path(given[0])),
            threshold,
            strict,
            json_output,
        )
        return
    root = _benchmark_dir(directory)
    available = _discover(root)
    if list_only:
        if json_output:
            print_json(
                {
                    "directory": str(root),
                    "benchmarks": [
                        {"name": n, "path": str(p), "summary": d} for n, (p, d) in available.items()
                    ],
                }
            )
            return
        listing = Table(title=f"Benchmarks in {root}", title_justify="left")
        listing.add_column("name")
        listing.add_column("what it measures")
        for name, (_, description) in available.items():
            listing.add_row(name, description)
        stdout.print(listing)
        return
    baseline = load_runs(compare) if compare is not None else None
    chosen = list(names or (baseline if baseline is not None else available))
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise usage_error(
            f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}"
        )
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from ipfs_accelerate.errors import ConfigurationError

            raise ConfigurationError(
                "--plot needs matplotlib, which is not installed: pip install matplotlib"
            ) from None
    extra = shlex.split(args)
    results = []
    for name in chosen:
        if not json_output:
            stdout.rule(f"[bold]{name}[/]")
        result = _run_benchmark(
            available[name][0], extra, timeout, echo=not json_output and not quiet
        )
        if quiet and not json_output:
            stdout.print(result["output"], markup=False)
        results.append(result)
    if plot is not None:
        _plot(results, plot)
    failed = [r["name"] for r in results if r["returncode"] != 0]
    if baseline is not None and compare is not None:
        current = {r["name"]: r["ratios"] for r in results if r["returncode"] == 0}
        if failed:
            stderr.print(f"[red]failed:[/] {', '.join(failed)} (their ratios count as missing)")
        _report_comparison(
            compare, None, baseline, current, threshold, strict, json_output, failed=bool(failed)
        )
        return
    if json_output:
        print_json(
            {"directory": str(root), "benchmarks": results, "plot": str(plot) if plot else None}
        )
    else:
        summary = Table(title="Summary", title_justify="left")
        for column in ("benchmark", "status", "seconds", "ratios printed"):
            summary.add_column(column)
        for result in results:
            status = (
                "[green]ok[/]"
                if result["returncode"] == 0
                else f"[red]exit {result['returncode']}[/]"
            )
            ratios = ", ".join(f"{r['value']:g}x" for r in result["ratios"][:8])
            more = len(result["ratios"]) - 8
            summary.add_row(
                result["name"],
                status,
                f"{result['seconds']:.1f}",
                ratios + (f" (+{more})" if more > 0 else ""),
            )
        stdout.print(summary)
        if plot is not None:
            stdout.print(f"plot written to {plot}")
    if failed:
        stderr.print(f"[red]failed:[/] {', '.join(failed)}")
        raise typer.Exit(ExitCode.FAILURE)


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


_STATUS_STYLE = {
    "ok": "ok",
    "improved": "[green]improved[/]",
    "regressed": "[red]REGRESSED[/]",
    "missing": "[yellow]missing[/]",
    "new": "[dim]new[/]",
}


def _report_comparison(
    baseline_path: Path,
    current_path: str | None,
    baseline: dict[str, list[dict[str, Any]]],
    current: dict[str, list[dict[str, Any]]],
    threshold: float,
    strict: bool,
    json_output: bool,
    failed: bool = False,
) -> None:
    comparison: Comparison = compare_runs(baseline, current, threshold)
    if json_output:
        print_json(
            {
                "baseline": str(baseline_path),
                "current": current_path,
                "strict": strict,
                **comparison.as_dict(),
            }
        )
    else:
        table = Table(
            title=f"Ratios against {baseline_path} (threshold {threshold:.0%})",
            title_justify="left",
        )
        for column in ("benchmark", "ratio", "better", "baseline", "current", "change", "status"):
            table.add_column(column)
        for row in comparison.rows:
            table.add_row(
                row.benchmark,
                row.label,
                row.better,
                _fmt(row.baseline),
                _fmt(row.current),
                _fmt(row.change, "{:+.1%}"),
                _STATUS_STYLE[row.status],
                end_section=False,
            )
        stdout.print(table)
        counts = comparison.as_dict()["counts"]
        stdout.print(", ".join(f"{count} {status}" for status, count in counts.items()))
    if comparison.failed(strict) or failed:
        if comparison.count("regressed"):
            stderr.print(
                f"[red]{comparison.count('regressed')} ratio(s) fell by more than "
                f"{threshold:.0%}[/]"
            )
        if strict and comparison.count("missing"):
            stderr.print(f"[red]{comparison.count('missing')} baseline ratio(s) missing[/]")
        raise typer.Exit(ExitCode.FAILURE)


def _providers(
    specs: list[Any],
    *,
    model: str | None,
    prompt: str,
    max_tokens: int,
    requests: int,
    concurrency: int,
    json_output: bool,
) -> None:
    summaries = bench_providers(
        specs,
        model=model,
        prompt=prompt,
        max_tokens=max_tokens,
        requests=requests,
        concurrency=concurrency,
    )
    if json_output:
        print_json({"requests": requests, "concurrency": concurrency, "providers": summaries})
        return
    table = Table(
        title=f"API backends side by side ({requests} chat requests each, {concurrency} in "
        "flight, interleaved rounds)",
        title_justify="left",
    )
    columns = ("backend", "model", "ok", "error rate", "p50 ms", "p95 ms", "p99 ms", "req/s")
    for column in (*columns, "vs best"):
        table.add_column(column)
    for s in summaries:
        table.add_row(
            s["label"],
            s["model"],
            f"{s['ok']}/{s['requests']}",
            f"{s['error_rate']:.1%}",
            _fmt(s["p50_ms"], "{:.1f}"),
            _fmt(s["p95_ms"], "{:.1f}"),
            _fmt(s["p99_ms"], "{:.1f}"),
            f"{s['throughput_rps']:.1f}",
            _fmt(s["throughput_vs_best"], "{:.2f}x"),
        )
    stdout.print(table)
    for s in summaries:
        if s["errors"]:
            errors = ", ".join(f"{name} x{count}" for name, count in s["errors"].items())
            stdout.print(f"{s['label']}: {errors}")
