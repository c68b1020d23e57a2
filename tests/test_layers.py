"""The layering rules of docs/design.md, read from the source (every import, lazy ones too).

``multitask._core`` imports nothing from the rest; ``multitask._engine`` only ``_core``; a front
end (``pool``) and a backend (``backends``) never import each other; and there is no import
circle between the packages above ``_core``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "multitask"
CORE = PKG / "_core"
PACKAGES = ("_core", "_engine", "backends", "pool", "monitor")


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return parts


def _imports(path: Path) -> list[str]:
    """Absolute names of every ``multitask`` module ``path`` imports, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                found.append(".".join([*base, node.module or ""]).rstrip("."))
                if node.module is None:   # from . import x: x is a module
                    found.extend(".".join([*base, a.name]) for a in node.names)
            elif node.module:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [m for m in found if m == "multitask" or m.startswith("multitask.")]


def _unit(module: str) -> str:
    """The package of ``multitask.<pkg>...`` this module belongs to, or its top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for pkg in PACKAGES:
        for path in sorted((PKG / pkg).glob("*.py")):
            for mod in _imports(path):
                unit = _unit(mod)
                if unit in PACKAGES and unit != pkg:
                    graph[pkg].add(unit)
    return graph


def test_the_import_reader_resolves_relative_imports():
    path = PKG / "backends" / "process.py"
    found = set(_imports(path))
    assert "multitask._engine.jobs" in found
    assert "multitask._core._ring" in found


def test_core_depends_on_nothing_else_in_the_package():
    offenders = []
    for path in sorted(CORE.glob("*.py")):
        for mod in _imports(path):
            if not mod.startswith("multitask._core"):
                offenders.append(f"{path.name}: {mod}")
    assert not offenders, offenders


def test_engine_depends_only_on_core():
    offenders = []
    for path in sorted((PKG / "_engine").glob("*.py")):
        for mod in _imports(path):
            if not mod.startswith(("multitask._core", "multitask._engine")):
                offenders.append(f"{path.name}: {mod}")
    assert not offenders, offenders


def test_front_ends_and_backends_meet_only_in_the_engine():
    graph = _package_graph()
    assert "backends" not in graph["pool"], "pool imports a backend (load it by name)"
    assert "pool" not in graph["backends"], "a backend imports the Pool front end"
    assert "pool" not in graph["monitor"], "the monitor imports the Pool (which imports it)"


def test_no_import_circle_between_packages():
    graph = _package_graph()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append([*path[path.index(nxt):], nxt])
            else:
                visit(nxt, [*path, nxt])

    for start in PACKAGES:
        visit(start, [start])
    assert not cycles, cycles


def test_core_and_engine_have_their_modules():
    assert {p.name for p in CORE.glob("*.py")} >= {"_errors.py", "_ring.py", "_serialize.py",
                                                  "_spawn.py"}
    assert {p.name for p in (PKG / "_engine").glob("*.py")} >= {
        "backend.py", "codes.py", "jobs.py", "log.py", "stats.py"}
