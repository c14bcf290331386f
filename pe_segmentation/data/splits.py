"""Patient-level, seeded train/validation split, saved to JSON so that later runs reuse it.

All cases of a patient land on the same side (a patient's follow-up scan in validation would leak its
anatomy from training). The split depends only on the set of patients and the seed, never on the order in
which cases were listed. The saved file is the reference: :func:`get_or_create_split` reuses it as is.

File format (``split.json``)::

    {"version": 1, "seed": 0, "val_fraction": 0.2,
     "train": ["case_a", ...], "validation": ["case_c", ...]}
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pe_segmentation.errors import ConfigError, InputDataError
from pe_segmentation.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

SPLIT_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Case ids on each side of a split.

    Attributes:
        train: training case ids, sorted.
        validation: validation case ids, sorted.
        seed: the seed that drew the split (``None`` when made by hand).
        val_fraction: the requested fraction of patients in validation (``None`` when made by hand).
    """

    train: tuple[str, ...]
    validation: tuple[str, ...]
    seed: int | None = None
    val_fraction: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", tuple(sorted(self.train)))
        object.__setattr__(self, "validation", tuple(sorted(self.validation)))
        both = sorted(set(self.train) & set(self.validation))
        if both:
            raise InputDataError(f"split: case(s) on both sides: {', '.join(both[:5])}")
        for side, cases in (("train", self.train), ("validation", self.validation)):
            if len(set(cases)) != len(cases):
                raise InputDataError(f"split: duplicate case ids in '{side}'")

    @property
    def cases(self) -> set[str]:
        """All case ids of the split."""
        return set(self.train) | set(self.validation)

    def select(self, items: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
        """``(train_items, validation_items)``: the items of each side, in the order of ``items``.

        Items whose case is on neither side are left out (see :func:`get_or_create_split`).
        """
        train, validation = set(self.train), set(self.validation)
        return [i for i in items if i["case"] in train], [i for i in items if i["case"] in validation]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SPLIT_VERSION,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "train": list(self.train),
            "validation": list(self.validation),
        }


def _patients(items: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Patient id -> case ids; the patient defaults to the case id."""
    by_patient: dict[str, list[str]] = {}
    seen: set[str] = set()
    for item in items:
        if "case" not in item:
            raise InputDataError(f"split: item without a 'case' id: {dict(item)}")
        case = str(item["case"])
        if case in seen:
            raise InputDataError(f"split: case id '{case}' appears twice")
        seen.add(case)
        by_patient.setdefault(str(item.get("patient") or case), []).append(case)
    return by_patient


def split_cases(items: Sequence[Mapping[str, Any]], val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Draw a patient-level train/validation split.

    ``round(val_fraction * patients)`` patients go to validation, at least one and at most all but one.
    Patients are sorted before a seeded permutation, so the result depends only on the set of patients and the
    seed.

    Args:
        items: case dicts with ``case`` and optionally ``patient``.
        val_fraction: fraction of *patients* in validation, in (0, 1).
        seed: the random seed.

    Raises:
        ConfigError: ``val_fraction`` or ``seed`` out of range.
        InputDataError: fewer than 2 patients, a duplicate case id.
    """
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0 < val_fraction < 1
    ):
        raise ConfigError(f"val_fraction: must be between 0 and 1 (exclusive), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: expected an integer >= 0, got {seed!r}")
    by_patient = _patients(items)
    patients = sorted(by_patient)
    if len(patients) < 2:
        raise InputDataError(
            f"split: need at least 2 patients for a train/validation split, got {len(patients)}"
        )
    n_val = min(max(1, math.floor(val_fraction * len(patients) + 0.5)), len(patients) - 1)
    order = np.random.default_rng(seed).permutation(len(patients))
    val_patients = {patients[i] for i in order[:n_val]}
    train = [c for p in patients if p not in val_patients for c in by_patient[p]]
    validation = [c for p in patients if p in val_patients for c in by_patient[p]]
    return Split(tuple(train), tuple(validation), seed=seed, val_fraction=float(val_fraction))


def save_split(path: str | os.PathLike[str], split: Split) -> Path:
    """Write ``split`` as JSON, atomically."""
    path = Path(path).expanduser()
    atomic_write_text(path, json.dumps(split.to_dict(), indent=2) + "\n")
    return path


def _case_list(data: Mapping[str, Any], key: str, path: Path) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise InputDataError(f"{path}: '{key}' must be a list of case ids")
    return tuple(value)


def load_split(path: str | os.PathLike[str]) -> Split:
    """Read a split written by :func:`save_split`.

    Raises:
        InputDataError: missing or malformed file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputDataError(f"{path}: split file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputDataError(f"{path}: not a readable split file ({err})") from err
    if not isinstance(data, dict):
        raise InputDataError(f"{path}: not a split file (expected a JSON object)")
    if data.get("version", SPLIT_VERSION) != SPLIT_VERSION:
        raise InputDataError(f"{path}: split file version {data.get('version')!r} is not supported")
    try:
        return Split(
            _case_list(data, "train", path),
            _case_list(data, "validation", path),
            seed=data.get("seed"),
            val_fraction=data.get("val_fraction"),
        )
    except InputDataError as err:
        raise InputDataError(f"{path}: {err}") from err


def get_or_create_split(
    path: str | os.PathLike[str], items: Sequence[Mapping[str, Any]], val_fraction: float = 0.2, seed: int = 0
) -> Split:
    """Reuse the split saved at ``path``, or draw one with :func:`split_cases` and save it there.

    A saved split wins over ``val_fraction`` and ``seed`` (so that runs stay comparable). Cases that appeared
    since it was saved are on neither side and are left out, with a warning; delete the file to draw a new
    split over all cases.

    Raises:
        InputDataError: the saved split names cases that are not in ``items`` (or see :func:`split_cases`).
    """
    path = Path(path).expanduser()
    if not path.exists():
        split = split_cases(items, val_fraction=val_fraction, seed=seed)
        save_split(path, split)
        log.info(
            "split: %d train / %d validation cases, saved to %s",
            len(split.train),
            len(split.validation),
            path,
        )
        return split
    split = load_split(path)
    cases = {case for group in _patients(items).values() for case in group}
    missing = sorted(split.cases - cases)
    if missing:
        raise InputDataError(
            f"{path}: names {len(missing)} case(s) not in the data set ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); delete the file to draw a new split"
        )
    new = sorted(cases - split.cases)
    if new:
        log.warning(
            "%s: %d case(s) not in the saved split are left out (%s); delete the file to include them",
            path,
            len(new),
            ", ".join(new[:5]),
        )
    return split
