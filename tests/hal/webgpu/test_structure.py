"""The WebGPU package's shape, checked from its source (no adapter needed): its modules import
each other without a circle, and none reaches into another object's underscored attributes,
so the op families, the fuser and the tuner go through the dispatcher's public methods."""

from __future__ import annotations

import ast
from pathlib import Path

import ipfs_accelerate.hal.webgpu as webgpu_package

PACKAGE = "ipfs_accelerate.hal.webgpu"
ROOT = Path(webgpu_package.__file__).parent

#: underscored attributes that belong to no module of this package: the HAL contract's
#: handle of a tensor (hal/_backend.py: backends read ``_data``), and wgpu-py's native
#: handle of its objects, which the cffi encoding fast path passes to wgpu-native
FOREIGN_PRIVATE = {"_data", "_internal"}


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join((PACKAGE, *parts))
        found[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (module level or inside functions), leaving out the
    ``if TYPE_CHECKING:`` blocks, which exist for the type checker only."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        for node in _runtime_imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                assert node.level == 0, f"{name}: relative import"  # the package imports absolutely
                base = node.module or ""
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        iterators = [iter(sorted(graph[start]))]
        state[start] = 1
        while iterators:
            successor = next(iterators[-1], None)
            if successor is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(successor) == 1:
                return [*path[path.index(successor) :], successor]
            elif not state.get(successor):
                state[successor] = 1
                path.append(successor)
                iterators.append(iter(sorted(graph[successor])))
    return None


def test_the_import_graph_sees_the_dispatcher_and_its_users() -> None:
    graph = _import_graph(_modules())
    backend, dispatcher = f"{PACKAGE}._backend", f"{PACKAGE}._dispatcher"
    assert dispatcher in graph[f"{PACKAGE}._ops_matmul"]
    assert {f"{PACKAGE}._fusion", dispatcher} <= graph[backend]
    assert f"{PACKAGE}._tuning" in graph[f"{PACKAGE}._ops_matmul"]
    # the fuser and the tuner name the dispatcher only for the type checker
    assert dispatcher not in graph[f"{PACKAGE}._fusion"]
    assert dispatcher not in graph[f"{PACKAGE}._tuning"]


def test_no_import_circle_in_the_package() -> None:
    assert _cycle(_import_graph(_modules())) is None


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def _foreign_private_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, expression) of every read or write of an underscored attribute of something
    other than ``self``/``cls`` (dunders aside)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__")):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if attr in FOREIGN_PRIVATE:
            continue
        found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_module_reaches_into_another_objects_private_attributes() -> None:
    offenders = {
        name: uses for name, tree in _modules().items() if (uses := _foreign_private_uses(tree))
    }
    assert offenders == {}


def test_the_private_attribute_check_sees_what_fusion_used_to_do() -> None:
    source = "def run(backend, self):\n    backend._kernels.get(1)\n    self._pool.acquire(4)\n"
    assert _foreign_private_uses(ast.parse(source)) == [(2, "backend._kernels")]
