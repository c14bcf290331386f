"""One rule for package ``__init__``s and ``__all__``, checked over the whole package.

A package's ``__init__.py`` has a docstring, imports its public names from its own modules, and lists exactly
those names in ``__all__``; plain modules define no ``__all__`` (their public names are those without a leading
underscore). So ``from pe_segmentation.inference import Predictor`` is the way in from outside a package, and
nothing is exported by accident or left out.
"""

from __future__ import annotations

import ast

import pytest

from .layers import ROOT


def _init_files():
    return sorted(ROOT.rglob("__init__.py"))


def _exported(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return [ast.literal_eval(element) for element in node.value.elts]  # type: ignore[attr-defined]
    return None


def test_plain_modules_define_no_all():
    offenders = [
        str(path.relative_to(ROOT.parent))
        for path in ROOT.rglob("*.py")
        if path.name != "__init__.py" and _exported(ast.parse(path.read_text(encoding="utf-8"))) is not None
    ]
    assert offenders == []


@pytest.mark.parametrize("path", _init_files(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_package_init_exports_exactly_what_it_imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{path}: a package says in its docstring what it is for"
    imported = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module != "__future__"
        for alias in node.names
    }
    exported = _exported(tree)
    assert exported is not None, f"{path}: no __all__"
    assert sorted(exported) == sorted(imported), f"{path}: __all__ and the imported names differ"
    assert len(exported) == len(set(exported))
    assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))], (
        f"{path}: code lives in modules, the __init__ only exports it"
    )


def test_the_library_api_is_the_package_top_level():
    import pe_segmentation

    assert {"train", "infer", "evaluate", "synth"} <= set(pe_segmentation.__all__)
    assert pe_segmentation.infer.__module__ == "pe_segmentation.api.inference"
