"""The package's layers and the checks over its import graph, shared by the architecture tests.

Written over ``ast`` rather than with import-linter: the rules are a dozen lines, they also cover imports inside
functions (which import-linter's static graph sees too, but a lazy import is exactly what these rules forbid),
and a test can run them on a made-up module to show that a violation is caught.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "pe_segmentation"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

#: Top-level parts of the package, from the top layer down. Each imports only from layers below it; parts that
#: share a layer are independent of each other (training, inference and planning side by side). ``__init__``
#: is the package's own ``__init__.py``, which re-exports the library API.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__main__"}),
    frozenset({"cli"}),
    frozenset({"commands", "bundle"}),
    frozenset({"__init__"}),
    frozenset({"api"}),
    frozenset({"training", "inference", "planning"}),
    frozenset({"runtime"}),
    frozenset({"evaluation"}),
    frozenset({"config"}),
    frozenset({"data", "networks", "losses", "visualization"}),
    frozenset({"io"}),
    frozenset({"errors", "versions"}),
)


@dataclass(frozen=True)
class Import:
    """One import of a pe_segmentation module: who imports what, where, and whether inside a function."""

    source: str
    target: str
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    """``pe_segmentation/io/volume.py`` -> ``pe_segmentation.io.volume``; a package's ``__init__.py`` -> the
    package."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The top-level part a module belongs to (``pe_segmentation.io.volume`` -> ``io``; the package -> ``__init__``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(part: str) -> int:
    for index, layer in enumerate(LAYERS):
        if part in layer:
            return index
    raise KeyError(f"{PACKAGE}.{part} is in no layer: add it to LAYERS in {__file__}")


def _known_modules() -> set[str]:
    return {module_name(path) for path in ROOT.rglob("*.py")}


def imports_in(source_module: str, code: str, known: set[str] | None = None) -> Iterator[Import]:
    """Every import of a pe_segmentation module in ``code``; ``from X import name`` targets ``X.name`` when that
    is a module, else ``X``."""
    known = _known_modules() if known is None else known
    tree = ast.parse(code)
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(child) for function in functions for child in ast.walk(function) if child is not function}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                yield Import(source_module, target, node.lineno, id(node) in inner)


def all_imports() -> list[Import]:
    known = _known_modules()
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        found += imports_in(module_name(path), path.read_text(encoding="utf-8"), known)
    return found


def layer_violations(imports: list[Import]) -> list[str]:
    """Imports that go up a layer, or sideways between two parts of one layer."""
    problems = []
    for item in imports:
        source, target = part_of(item.source), part_of(item.target)
        if source == target:
            continue
        if layer_of(target) < layer_of(source):
            problems.append(f"{item.source}:{item.line} imports {item.target}, a layer above it")
        elif layer_of(target) == layer_of(source):
            problems.append(f"{item.source}:{item.line} imports {item.target}, beside it in the same layer")
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of a directed graph, one path each (depth-first search)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found
