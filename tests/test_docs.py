"""Every Python example in README.md and docs/*.md runs, in order, page by page.

Each ```python block runs in a fresh namespace (blocks are self-contained, as a reader would
copy them). A page that needs a service (an API server, S3) says so in a comment,
``<!-- docs-test: services=openai,s3 -->``, and gets local ones (tests/_docs_services.py)
through the environment variables that the page's text explains; ``requires=webgpu`` skips
the page where no WebGPU adapter starts (unless IPFS_ACCELERATE_REQUIRE_WEBGPU=1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._docs_services import PROVIDER_ENV, Services, page_options, services_for
from .conftest import start_backend

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

pytestmark = pytest.mark.timeout(120)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    text = page.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 2, m.group(1)) for m in BLOCK.finditer(text)]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    pool = Services(tmp_path_factory.mktemp("docs-services"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples_run(
    page: Path, services: Services, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    options = page_options(page.read_text(encoding="utf-8"))
    for name in options.get("requires", []):
        start_backend(name)  # skips (or fails where required) when the backend cannot start
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    # caches the examples fill (WebGPU tuning, s3:// checkpoints) go to a scratch directory
    if "webgpu" in options.get("requires", []):
        monkeypatch.setenv("IPFS_ACCELERATE_CACHE_DIR", str(tmp_path / "cache"))
    if "s3" in options.get("services", []):
        monkeypatch.setenv("IPFS_ACCELERATE_CACHE_DIR", str(tmp_path / "cache"))
    for key, value in services_for(services, options.get("services", [])):
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    # backends an example registers (docs/api_backends.md writes one) leave with the page
    from ipfs_accelerate.api_backends import _registry

    monkeypatch.setattr(_registry, "_extra", dict(_registry._extra))
    _isolate_tracer_provider(monkeypatch)
    for line, code in python_blocks(page):
        namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
        try:
            exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{page.name}, example at line {line} failed: {type(exc).__name__}: {exc}")


def _isolate_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenTelemetry lets a process install its tracer provider once: a page that installs one
    (docs/router.md) gets a fresh slot, and the process's state comes back after the page, so
    neither the page nor the tests that run later depend on who came first."""
    try:
        from opentelemetry import trace
        from opentelemetry.util._once import Once
    except ImportError:
        return
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)


def test_every_page_has_examples_or_says_why() -> None:
    for page in PAGES:
        assert python_blocks(page) or "no code examples" in page.read_text(), (
            f"{page.name} has no examples"
        )


def test_page_markers_name_known_services() -> None:
    known = set(Services(Path(".")).__dict__["_starters"])
    for page in PAGES:
        for name in page_options(page.read_text(encoding="utf-8")).get("services", []):
            assert name in known, f"{page.name} asks for an unknown service {name!r}"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_relative_links_point_at_pages_and_headings() -> None:
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: link to a missing page {target!r}"
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.M)
                assert anchor in {_slug(h) for h in headings}, (
                    f"{page.name}: no heading for {target!r}"
                )
