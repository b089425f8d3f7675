"""Arrows point one way: the engine imports neither the gateway nor the workers, the gateway
never imports the workers, and no two modules import each other (not even lazily)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
# Each layer may import itself and the layers after it in this list, never those before it.
LAYERS = ("workers", "service", "trustdiff")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPOSITORY_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for layer in LAYERS
        for path in sorted((REPOSITORY_ROOT / layer).rglob("*.py"))
    }


def imported_names(path: Path, module: str) -> Iterator[tuple[str, int]]:
    """Every module name an import statement in `path` names, at any depth, with its line.

    `from a.b import c` yields `a.b.c` (resolved to `a.b` later when `c` is not a module);
    a package's `__init__` that `import a.b.c` runs implicitly is not an arrow of its own.
    Function-level and `TYPE_CHECKING` imports count: a lazy import is still an arrow.
    """
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                if not is_package:
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                # `from pkg import sub` names the submodule, not the package, when `sub` is
                # one (resolved later: the longest known prefix wins).
                yield f"{base}.{alias.name}", node.lineno


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module `name` refers to (its longest known prefix), or None if external."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported project module: first line importing it}."""
    modules = project_modules()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for name, line in imported_names(path, module):
            target = resolve(name, modules)
            if target is not None and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def strongly_connected_components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module are cycles."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = lowlink[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph[successor])))
                    break
                if successor in on_stack:
                    lowlink[node] = min(lowlink[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    lowlink[parent] = min(lowlink[parent], lowlink[node])
                if lowlink[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def layer_of(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_the_walk_sees_every_layer_and_the_lazy_imports() -> None:
    graph = import_graph()
    assert {module.split(".")[0] for module in graph} == set(LAYERS)
    # Known arrows, one of them a function-level import: the walk must find them.
    assert "service.models" in graph["service.audits"]
    assert "trustdiff.audit" in graph["service.audits"]  # imported inside create_audit
    assert "workers.runner" in graph["workers.tasks"]


def test_no_arrow_points_from_a_lower_layer_to_a_higher_one() -> None:
    graph = import_graph()
    wrong_way = [
        f"{module} -> {target} (line {line})"
        for module, edges in graph.items()
        for target, line in edges.items()
        if layer_of(target) < layer_of(module)
    ]
    assert not wrong_way, "imports pointing the wrong way:\n" + "\n".join(wrong_way)


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = [
        " <-> ".join(component)
        for component in strongly_connected_components(graph)
        if len(component) > 1
    ]
    assert not cycles, "modules that import each other:\n" + "\n".join(cycles)


def test_the_result_reaches_its_renderer_through_an_entry_point() -> None:
    # The document renders itself in Jupyter without importing the report above it.
    from trustdiff.report import render_report
    from trustdiff.result import html_renderer

    assert html_renderer() is render_report


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b": 1}, "b": {"c": 1}, "c": {}}, []),
        ({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}, [["a", "b", "c"]]),
        ({"a": {"b": 1}, "b": {"a": 1}, "c": {"d": 1}, "d": {"c": 1}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(
    graph: dict[str, dict[str, int]], expected: list[list[str]]
) -> None:
    found = sorted(c for c in strongly_connected_components(graph) if len(c) > 1)
    assert found == expected
