"""The package graph points one way: local_models <- router <- training, CLI and dev tools on top.

Every import counts, the ones inside functions too (that is where cycles hide). Allowed edges:
- ``local_models`` and ``policies`` import nothing from the other packages;
- ``router`` imports ``local_models`` and ``policies``, and ``training`` only from its top layer
  (``router/cli/``, ``router/devtools/``);
- ``training`` imports ``local_models`` and ``router``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("local_models", "router", "training", "policies")
ALLOWED = {
    "local_models": set(),
    "policies": set(),
    "router": {"local_models", "policies"},
    "training": {"local_models", "router", "policies"},
}
TOP_LAYER = ("router/cli/", "router/devtools/")


def imports_of(path: Path) -> list[tuple[str, int]]:
    """``(imported top-level package, line)`` for every absolute import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module.split(".")[0], node.lineno))
    return out


def violations() -> list[str]:
    bad = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            allowed = ALLOWED[pkg] | ({"training"} if rel.startswith(TOP_LAYER) else set())
            for target, line in imports_of(path):
                if target in PACKAGES and target != pkg and target not in allowed:
                    bad.append(f"{rel}:{line} imports {target}")
    return bad


def test_imports_follow_the_package_direction() -> None:
    assert violations() == []


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from training.registry import X\n")
    assert imports_of(f) == [("training", 2)]


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_package_is_discovered_by_setuptools(pkg: str) -> None:
    toml = (ROOT / "pyproject.toml").read_text()
    assert "[tool.setuptools.packages.find]" in toml and f'"{pkg}*"' in toml
