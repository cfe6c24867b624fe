"""Every Python example in README.md and docs/*.md runs, in order, page by page.

Each ```python block runs in a fresh namespace (blocks are self-contained, as a reader would
copy them). A page that needs a service (an API server, S3) gets a local one from the
fixtures below through environment variables that the page's text explains.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    text = page.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 2, m.group(1)) for m in BLOCK.finditer(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples_run(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(page)
    for line, code in blocks:
        namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
        try:
            exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{page.name}, example at line {line} failed: {type(exc).__name__}: {exc}")


def test_every_page_has_examples_or_says_why() -> None:
    for page in PAGES:
        assert python_blocks(page) or "no code examples" in page.read_text(), f"{page.name} has no examples"
