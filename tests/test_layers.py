"""The layers point down only: the import graph of the project's packages, built from their
source (every import, lazy ones inside functions included), has no cycle, and no package
imports a layer above it (docs: README "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package → the project packages it may import (the layers below it)
ALLOWED = {
    "knitwork": set(),  # the core: torch, numpy, Pillow; never ray, mlflow, boto3
    "knitwork_compare": set(),  # MLflow comparison and report
    "pipeline": {"knitwork"},  # storage, tracking, Ray driver and worker
    "tune": {"knitwork", "pipeline"},  # the Ray Tune search
    "knitwork_cli": {"knitwork", "pipeline", "tune", "knitwork_compare"},  # the entry layer
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every project module ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in ALLOWED}
    return found


def graph() -> dict[str, set[str]]:
    """Module → project modules it imports (``from pkg import mod`` resolved to the module)."""
    modules = {
        module_name(p): p for package in ALLOWED for p in sorted((ROOT / package).rglob("*.py"))
    }
    edges = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        edges[name] = targets
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = 2, path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {p: set() for p in ALLOWED}
    for source, targets in edges.items():
        top = source.split(".")[0]
        packages[top] |= {t.split(".")[0] for t in targets} - {top}
    return packages


def test_every_package_has_modules():
    edges = graph()
    for package in ALLOWED:
        assert any(m.split(".")[0] == package for m in edges), package


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_from_a_layer_above(package):
    edges = graph()
    wrong = sorted(
        f"{source} imports {target}"
        for source, targets in edges.items()
        if source.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in ALLOWED[package] | {package}
    )
    assert not wrong, wrong


def test_no_import_cycle_between_packages_or_modules():
    edges = graph()
    assert find_cycle(package_graph(edges)) is None, find_cycle(package_graph(edges))
    assert find_cycle(edges) is None, find_cycle(edges)


def test_the_checks_catch_what_they_look_for():
    """The detector itself: a cycle and an upward edge are found when present."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    fake = {"knitwork.x": {"pipeline.driver"}, "pipeline.driver": set()}
    assert package_graph(fake)["knitwork"] == {"pipeline"}  # an upward edge, seen
