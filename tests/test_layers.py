"""The layering rule of docs/design.md: ``multitask._core`` imports nothing from the rest."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "src" / "multitask" / "_core"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against multitask._core
                base = ["multitask", "_core"][: max(0, 2 - (node.level - 1))]
                found.append(".".join([*base, node.module or ""]).rstrip("."))
            elif node.module:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def test_core_depends_on_nothing_else_in_the_package():
    offenders = []
    for path in sorted(CORE.glob("*.py")):
        for mod in _imports(path):
            if mod.startswith("multitask") and not mod.startswith("multitask._core"):
                offenders.append(f"{path.name}: {mod}")
    assert not offenders, offenders


def test_core_has_modules():
    assert {p.name for p in CORE.glob("*.py")} >= {"_errors.py", "_ring.py", "_serialize.py",
                                                  "_spawn.py"}
