"""The servers package and the observability module import each other one way only:
``servers`` uses ``_observability`` (spans), never the reverse. Checked twice: statically,
over every import in the package's source (those inside functions included, those under
``if TYPE_CHECKING`` excluded as they never run), and by importing each servers module first
in a fresh interpreter."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import ipfs_accelerate

PACKAGE = Path(ipfs_accelerate.__file__).parent
OBSERVABILITY = "ipfs_accelerate.api_backends._observability"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
SERVERS = sorted(m for m in MODULES if m == "ipfs_accelerate.servers" or ".servers." in m)


def runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in runtime_imports_of(child))
            continue
        yield from runtime_imports_of(node)


def runtime_imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from runtime_imports(node)


def imported_modules(name: str) -> set[str]:
    """The package's modules that ``name`` imports (a ``from m import x`` names m.x when x is
    a module)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        found.update(t for t in targets if t in MODULES and t != name)
    return found


def cycle_through(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path start -> ... -> start in ``graph``, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_graph_sees_the_known_edges() -> None:
    # the check below means something only if it reads these imports
    assert "ipfs_accelerate.resilience" in imported_modules("ipfs_accelerate.servers._managed")
    assert "ipfs_accelerate.servers._spec" in imported_modules("ipfs_accelerate.servers")
    assert "ipfs_accelerate.servers" in imported_modules("ipfs_accelerate.api_backends._unified")


def test_no_import_cycle_through_servers_or_observability() -> None:
    graph = {name: imported_modules(name) for name in MODULES}
    # a package's __init__ that imports its own submodules is not a cycle: Python imports the
    # package first; only the way back (a submodule importing its package) would be one
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    for name in [*SERVERS, OBSERVABILITY]:
        assert cycle_through(name, graph) is None, " -> ".join(cycle_through(name, graph) or [])
    reachable = {OBSERVABILITY}
    frontier = [OBSERVABILITY]
    while frontier:
        for nxt in graph[frontier.pop()] - reachable:
            reachable.add(nxt)
            frontier.append(nxt)
    assert not reachable & set(SERVERS), "the observability module must not import the servers"


@pytest.mark.parametrize("module", SERVERS)
def test_each_servers_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    code = f"import {module}, sys; print(sorted(m for m in sys.modules if m.startswith('docker')))"
    # this checkout's sources, whichever copy the environment has installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), *sys.path[1:]])}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # the docker SDK loads on first use only
