"""The package keeps its shape: layers import only downward, no import cycles, no lazy-import workarounds.

See docs/architecture.md for the layers and why each module lives where it does.
"""

from __future__ import annotations

import ast

from .layers import (
    LAYERS,
    ROOT,
    Import,
    all_imports,
    cycles,
    imports_in,
    layer_violations,
    module_name,
    part_of,
)


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(module_name(path)) for path in ROOT.rglob("*.py")}
    placed = set().union(*LAYERS)
    assert parts <= placed, f"not in any layer: {sorted(parts - placed)}"


def test_imports_only_go_down_the_layers():
    assert layer_violations(all_imports()) == []


def test_the_check_catches_an_upward_and_a_sideways_import():
    """A made-up io module that imports the training engine, and inference importing training: both refused."""
    upward = imports_in("pe_segmentation.io.volume", "from pe_segmentation.training import run_training\n")
    sideways = imports_in(
        "pe_segmentation.inference.predictor",
        "def lazy():\n    import pe_segmentation.training.trainer\n",
    )
    downward = imports_in(
        "pe_segmentation.training.trainer", "from pe_segmentation.io.volume import Volume\n"
    )
    problems = layer_violations([*upward, *sideways, *downward])
    assert problems == [
        "pe_segmentation.io.volume:1 imports pe_segmentation.training, a layer above it",
        "pe_segmentation.inference.predictor:2 imports pe_segmentation.training.trainer, beside it in the same layer",
    ]


def test_no_import_cycle_between_modules_or_packages():
    imports = all_imports()
    modules: dict[str, set[str]] = {}
    parts: dict[str, set[str]] = {}
    for item in imports:
        modules.setdefault(item.source, set()).add(item.target)
        if part_of(item.source) != part_of(item.target):
            parts.setdefault(part_of(item.source), set()).add(part_of(item.target))
    assert cycles(modules) == []
    assert cycles(parts) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_lazy_imports_of_the_package():
    """No pe_segmentation import inside a function, no module ``__getattr__``, no ``TYPE_CHECKING`` guard: each
    of these has hidden an import cycle here before."""
    lazy = [f"{i.source}:{i.line} {i.target}" for i in all_imports() if i.in_function]
    assert lazy == []
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "__getattr__" not in names, f"{path}: module __getattr__ (lazy exports)"
        guards = [
            n
            for n in tree.body
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
            for child in ast.walk(n)
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("pe_segmentation")
        ]
        assert not guards, f"{path}: pe_segmentation imported under TYPE_CHECKING"


def test_import_records_functions_and_from_imports():
    code = "from pe_segmentation.io import volume\nimport os\n\ndef f():\n    from pe_segmentation.errors import ConfigError\n"
    found = list(imports_in("pe_segmentation.data.x", code, {"pe_segmentation.io.volume"}))
    assert found == [
        Import("pe_segmentation.data.x", "pe_segmentation.io.volume", 1, False),
        Import("pe_segmentation.data.x", "pe_segmentation.errors", 5, True),
    ]
