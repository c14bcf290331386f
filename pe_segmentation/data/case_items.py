"""Case dicts, the unit every dataset adapter returns: checked absolute paths, a case id, a patient id.

Shared by the adapters of :mod:`pe_segmentation.data.datasets`: each item is
``{"case": str, "patient": str, "image": str[, "label": str]}``; lists are sorted by case id with no duplicate
ids (splits and outputs are keyed by case), and case ids come from file or folder names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.volume_files import case_name

CaseItem = dict[str, str]


def existing_path(path: Path, what: str) -> str:
    """``path`` made absolute, after checking that it exists."""
    if not path.exists():
        raise InputDataError(f"{path}: {what} not found")
    return str(path.resolve())


def case_item(case: str, image: Path, label: Path | None, patient: str | None = None) -> CaseItem:
    """One case dict with absolute, existing paths; the patient defaults to the case."""
    item = {"case": case, "patient": patient or case, "image": existing_path(image, "image")}
    if label is not None:
        item["label"] = existing_path(label, "label")
    return item


def sorted_unique(items: list[CaseItem], source: Path) -> list[CaseItem]:
    """Sort by case id and refuse duplicate ids (splits and outputs are keyed by case)."""
    seen: set[str] = set()
    for item in items:
        if item["case"] in seen:
            raise InputDataError(f"{source}: case id '{item['case']}' appears twice")
        seen.add(item["case"])
    return sorted(items, key=lambda item: item["case"])


def input_name(path: Path) -> str:
    """Case name of an image input: a folder's name, or a volume file's name without its suffix."""
    return path.name if path.is_dir() else case_name(path)


def strip_suffix(name: str, suffixes: Sequence[str]) -> str:
    """``name`` without the longest of ``suffixes`` it ends with (case-insensitive), never down to nothing."""
    lowered = name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if lowered.endswith(suffix.lower()) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def listing(names: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` names, comma-separated, and how many more: one line for an error message."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
