"""Prints the WebNN conformance pass counts per operation at the end of the run."""

from __future__ import annotations

import sys
from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    module = sys.modules.get(f"{__package__}.test_conformance")
    results: dict[str, tuple[int, int, int, dict[str, float]]] = getattr(module, "RESULTS", {})
    if not results:
        return
    write = terminalreporter.write_line
    terminalreporter.section("WebNN conformance (web-platform-tests vectors)")
    total = [0, 0, 0]
    for stem, (passed, failed, skipped, worst) in sorted(results.items()):
        cases = passed + failed + skipped
        extra = "".join(
            f", {n} {label}" for n, label in ((failed, "failed"), (skipped, "skipped")) if n
        )
        errors = ", ".join(
            f"worst {value:g} ULP" if metric == "ULP" else f"worst abs error {value:.3g}"
            for metric, value in sorted(worst.items())
        )
        write(f"{stem:<24} {passed:>4}/{cases:<4} passed{extra}   {errors}")
        for i, n in enumerate((passed, failed, skipped)):
            total[i] += n
    write(
        f"{'total':<24} {total[0]:>4}/{sum(total):<4} passed, {total[1]} failed, {total[2]} skipped"
    )
