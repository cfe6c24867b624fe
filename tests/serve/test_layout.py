"""The modules of serve/ import each other in one direction: the route modules do not import
the module that assembles them, and no chain of imports comes back to where it started.

Imports are read with ``ast`` (function-level ones included: a lazy import still closes a
circle); those under ``if TYPE_CHECKING:`` are left out, as they never run."""

from __future__ import annotations

import ast
from pathlib import Path

import ipfs_accelerate.serve

SERVE = Path(ipfs_accelerate.serve.__file__).parent
PACKAGE = "ipfs_accelerate.serve"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except what sits under ``if TYPE_CHECKING:``."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def _imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The serve/ modules (by stem; ``__init__`` for the package) that ``path`` imports."""
    targets: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE:
                    targets.add("__init__")
                elif alias.name.startswith(PACKAGE + "."):
                    targets.add(alias.name.split(".")[2])
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:
            base = node.module
        elif node.level == 0 and node.module == PACKAGE:
            base = None
        elif node.level == 0 and (node.module or "").startswith(PACKAGE + "."):
            base = (node.module or "").split(".")[2]
        else:
            continue
        if base is not None:
            targets.add(base.split(".")[0])
            continue
        # ``from . import x``: a submodule when serve/ has one of that name, else the package
        targets.update(a.name if a.name in modules else "__init__" for a in node.names)
    return targets & modules


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in SERVE.glob("*.py")}
    return {
        name: _imported_modules(SERVE / f"{name}.py", modules) - {name} for name in sorted(modules)
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in graph:
        found = visit(start, [])
        if found:
            return found
    return None


def test_serve_imports_form_no_circle() -> None:
    graph = import_graph()
    assert "_app" in graph["ray_serve"]  # the graph sees real edges
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_routes_do_not_import_the_app_that_assembles_them() -> None:
    graph = import_graph()
    for route_module in ("_openai", "_tei", "_kserve"):
        assert "_app" not in graph[route_module], route_module
        assert {"_state", "_requests"} & graph[route_module], route_module
    assert {"_openai", "_tei", "_kserve"} <= graph["_app"]
    assert "_decode" not in graph["_models"]  # media decoding is the routes' business


def test_the_cycle_finder_finds_one() -> None:
    circle = _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()})
    assert circle == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
