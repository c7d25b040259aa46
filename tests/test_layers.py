"""The dependency rules of the packages, read from the source: who may import whom, and no cycles.

Every ``import`` and ``from ... import`` in app/, models/, index/ and bench/ counts, wherever it
stands: at the top, inside a function (a lazy import is still a dependency, only a later one)
and under ``if TYPE_CHECKING:`` (a type-only import still makes the importer know the imported
package; the cycle between the fine-tune handlers and the worker was one of those). Imports
spelled as strings (``importlib.import_module``) are not seen; the code has none.

The rules:

- ``app/`` may use everything below it; nothing below imports ``app/``.
- ``models/`` knows nothing of HTTP or SQL: no ``app/``, no ``index/``.
- ``index/`` stores and searches vectors and knows nothing of ``app/`` or ``models/``.
- ``bench/`` measures the others; none of them imports it.
- Inside ``models/``: ``media/`` and ``synth/`` stand alone; ``encoders/`` run on
  ``runtime/`` and take decoded ``media/``; ``training/`` uses ``encoders/``, ``runtime/``,
  ``media/`` and ``synth/``. Every package may raise ``models.errors``. ``runtime/`` stands
  alone too: each encoder owns its batchers and streams and the registry applies the
  precision choice, while nothing in ``runtime/`` needs an encoder's code (precision takes
  the encoder it probes as an argument), so runtime is the layer below encoders, not above.
- No import cycle between modules (a package's ``__init__`` importing its own submodules is
  an edge like any other, but Python's implicit import of a parent package is not).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "models", "index", "bench")

# models/ sub-package -> the models/ sub-packages it may import (besides itself and errors).
MODELS_MAY_USE: dict[str, frozenset[str]] = {
    "media": frozenset(),
    "synth": frozenset(),
    "runtime": frozenset(),
    "encoders": frozenset({"runtime", "media"}),
    "training": frozenset({"encoders", "runtime", "media", "synth"}),
}


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``importer`` (a module) names ``imported`` (a module)."""

    importer: str
    imported: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}"


def module_name(path: Path) -> str:
    """``models/encoders/hub.py`` -> ``models.encoders.hub``; a package's ``__init__.py`` is
    the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the checked packages, by name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def resolve(name: str) -> str | None:
    """The longest known module that ``name`` (a module or a name inside one) lies in."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules():
            return candidate
    return None


def named_by(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> Iterator[str]:
    """The modules an import statement runs: ``import a.b`` and ``from a import b`` name
    module ``a.b`` when there is one, ``from a import name`` names ``a``. Parent packages that
    Python imports on the way are not named (they run first, whoever imports them)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:  # relative: from the importer's package, one level up per extra dot
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    for alias in node.names:
        full = f"{base}.{alias.name}"
        yield full if full in modules() else base


@cache
def imports() -> tuple[Import, ...]:
    """Every edge between checked modules, inside functions and TYPE_CHECKING blocks too."""
    edges = []
    for importer, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = {resolve(name) for name in named_by(node, importer, is_package)}
            for imported in sorted(t for t in targets if t is not None and t != importer):
                rel = str(path.relative_to(ROOT))
                edges.append(Import(importer, imported, rel, node.lineno))
    return tuple(edges)


def top(module: str) -> str:
    return module.split(".")[0]


def models_part(module: str) -> str:
    """``models.encoders.clap.tiny`` -> ``encoders``; ``models.errors`` -> ``errors``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def assert_holds(rule: Callable[[Import], bool], what: str) -> None:
    """Fail with every import that breaks ``rule``, one per line."""
    broken = [str(edge) for edge in imports() if not rule(edge)]
    assert not broken, f"{what}, but:\n" + "\n".join(broken)


def test_the_checked_tree_is_found() -> None:
    assert {"app.main", "models.encoders.registry", "index.stores", "bench"} <= set(modules())
    edges = {(e.importer, e.imported) for e in imports()}
    assert ("app.lifespan", "models.encoders.registry") in edges  # a top-level import
    assert ("app.cli", "models.training.train_mini") in edges  # one inside a function
    assert ("models.encoders.aligner", "models.encoders.openclip") in edges  # TYPE_CHECKING


@pytest.mark.parametrize(
    ("statement", "importer", "is_package", "named"),
    [
        ("from .hub import reachable", "models.encoders.registry", False, "models.encoders.hub"),
        ("from .. import errors", "models.encoders.registry", False, "models.errors"),
        ("from . import hub", "models.encoders", True, "models.encoders.hub"),
        ("import models.encoders.hub as h", "app.cli", False, "models.encoders.hub"),
        ("from models.encoders.hub import reachable", "app.cli", False, "models.encoders.hub"),
    ],
)
def test_imports_are_resolved_to_modules(
    statement: str, importer: str, is_package: bool, named: str
) -> None:
    node = ast.parse(statement).body[0]
    assert isinstance(node, ast.Import | ast.ImportFrom)
    assert {resolve(name) for name in named_by(node, importer, is_package)} == {named}


def test_models_know_nothing_of_app_or_index() -> None:
    assert_holds(
        lambda e: top(e.importer) != "models" or top(e.imported) not in ("app", "index"),
        "models/ knows nothing of HTTP (app/) or SQL (index/)",
    )


def test_index_knows_nothing_of_app() -> None:
    assert_holds(
        lambda e: top(e.importer) != "index" or top(e.imported) != "app",
        "index/ knows nothing of app/",
    )


def test_index_knows_nothing_of_models() -> None:
    assert_holds(
        lambda e: top(e.importer) != "index" or top(e.imported) != "models",
        "index/ knows nothing of models/: what makes vectors is passed in",
    )


def test_only_bench_imports_bench() -> None:
    assert_holds(
        lambda e: top(e.imported) != "bench" or top(e.importer) == "bench",
        "bench/ measures the others and none of them imports it",
    )


@pytest.mark.parametrize("part", sorted(MODELS_MAY_USE))
def test_models_subpackages_import_only_what_their_role_allows(part: str) -> None:
    allowed = {part, "errors"} | MODELS_MAY_USE[part]

    def holds(e: Import) -> bool:
        inside = top(e.importer) == top(e.imported) == "models"
        return not inside or models_part(e.importer) != part or models_part(e.imported) in allowed

    assert_holds(holds, f"models/{part}/ imports only models/ {sorted(allowed)}")


def test_models_errors_and_root_import_nothing_of_models() -> None:
    assert_holds(
        lambda e: e.importer not in ("models", "models.errors") or top(e.imported) != "models",
        "models/__init__.py and models/errors.py import nothing of models/",
    )


def find_cycles(edges: tuple[Import, ...]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), each as a path that ends
    where it starts, e.g. ``[a.b, c.d, a.b]``."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_in(group, graph) for group in groups]


def cycle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph.get(node, set()) & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def test_no_import_cycles() -> None:
    cycles = [" -> ".join(path) for path in find_cycles(imports())]
    assert not cycles, "import cycles (one path per group of modules):\n" + "\n".join(cycles)


def test_a_cycle_is_reported_as_a_path() -> None:
    edges = (
        Import("a.b", "c.d", "a/b.py", 1),
        Import("c.d", "e.f", "c/d.py", 1),
        Import("e.f", "a.b", "e/f.py", 1),
        Import("e.f", "g.h", "e/f.py", 2),
    )
    assert find_cycles(edges) == [["a.b", "c.d", "e.f", "a.b"]]
