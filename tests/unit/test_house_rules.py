"""The rules the code base keeps, checked on its source so a change that breaks one fails here, not in review.

- Only Dagster's public API: no ``dagster._`` import anywhere in the platform (tests may reach further).
- Layered and acyclic: the framework-free core (``dagster_project``) never imports the Dagster layer (``assets``,
  ``resources``) -- only ``dagster_project/definitions.py``, the code location that assembles both, does -- and
  the core's own modules form no import cycle.
- Small modules: none over ~400 lines outside the lakeFS emulator package (a dev service mirroring a large spec).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ("dagster_project", "assets", "resources")
EMULATOR = ROOT / "dagster_project" / "devservices" / "lakefs_emulator"
COMPOSITION_ROOT = ROOT / "dagster_project" / "definitions.py"
MAX_LINES = 420


def sources(*packages: str) -> Iterator[Path]:
    for package in packages:
        yield from sorted((ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (``from a.b import c`` counts as ``a.b`` and ``a.b.c``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", list(sources(*PLATFORM)), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_public_dagster_apis(path: Path) -> None:
    private = sorted(name for name in imports(path) if name == "dagster._" or name.startswith("dagster._"))
    assert private == [], f"{path.relative_to(ROOT)} imports private Dagster modules: {private}"


def test_the_core_never_imports_the_dagster_layer() -> None:
    layer = ("assets", "resources")
    upward = {str(path.relative_to(ROOT)): sorted(n for n in imports(path) if n.split(".")[0] in layer)
              for path in sources("dagster_project") if path != COMPOSITION_ROOT}
    assert {k: v for k, v in upward.items() if v} == {}


def test_the_core_has_no_import_cycles() -> None:
    modules = {module_name(path): path for path in sources("dagster_project")}
    graph = {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ re-exporting its own modules is not a cycle; a module importing its package's
    # __init__ is resolved to the modules that __init__ re-exports.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend([*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*trail, nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if state.get(start) is None and visit(start, [start]):
            break
    assert cycle == [], " -> ".join(cycle)


@pytest.mark.parametrize("path", [p for p in sources(*PLATFORM) if EMULATOR not in p.parents],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_too_long_to_read(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by concern"
