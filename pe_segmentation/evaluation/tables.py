"""The CSV tables of an evaluation: ``per_case.csv``, ``emboli.csv`` and ``froc.csv``, each written atomically.

Cells are written for spreadsheets and ``csv.DictReader`` alike: booleans as 0/1, floats with 6 significant
digits, and undefined values (NaN) as empty cells.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pe_segmentation.evaluation.detection import FROCCurve
from pe_segmentation.evaluation.scoring import CaseEvaluation
from pe_segmentation.io.atomic import atomic_write_text

#: Columns of ``emboli.csv``: one row per reference embolus.
EMBOLI_FIELDS = (
    "case",
    "embolus",
    "voxels",
    "volume_mm3",
    "size_class",
    "detected",
    "coverage",
    "best_iou",
    "centroid_i",
    "centroid_j",
    "centroid_k",
)
#: Columns of ``froc.csv``: one row per operating point.
FROC_FIELDS = ("threshold", "fp_per_scan", "sensitivity")


def write_per_case_csv(path: str | os.PathLike[str], cases: Sequence[CaseEvaluation]) -> Path:
    """Write one row per case (the columns of the first case's row) to ``path`` and return it."""
    rows = [c.row for c in cases]
    return _write_csv(path, rows, list(rows[0]))


def write_emboli_csv(path: str | os.PathLike[str], cases: Sequence[CaseEvaluation]) -> Path:
    """Write one row per reference embolus of every case (:data:`EMBOLI_FIELDS`) to ``path`` and return it."""
    rows = [
        {
            "case": c.row["case"],
            "embolus": e.index,
            "voxels": e.voxels,
            "volume_mm3": e.volume_mm3,
            "size_class": e.size_class,
            "detected": e.detected,
            "coverage": e.coverage,
            "best_iou": e.best_iou,
            **{f"centroid_{axis}": value for axis, value in zip("ijk", e.centroid, strict=False)},
        }
        for c in cases
        for e in c.detection.emboli
    ]
    return _write_csv(path, rows, EMBOLI_FIELDS)


def write_froc_csv(path: str | os.PathLike[str], curve: FROCCurve) -> Path:
    """Write the FROC's operating points (:data:`FROC_FIELDS`) to ``path`` and return it."""
    rows = [
        {"threshold": t, "fp_per_scan": f, "sensitivity": s}
        for t, f, s in zip(curve.thresholds, curve.fp_per_scan, curve.sensitivity, strict=True)
    ]
    return _write_csv(path, rows, FROC_FIELDS)


def _write_csv(
    path: str | os.PathLike[str], rows: Sequence[dict[str, Any]], fieldnames: Sequence[str]
) -> Path:
    """Write ``rows`` (missing keys as empty cells) under a header of ``fieldnames`` atomically."""
    path = Path(path)
    atomic_write_text(path, _csv_text(rows, fieldnames))
    return path


def _csv_text(rows: Sequence[dict[str, Any]], fieldnames: Sequence[str]) -> str:
    """The CSV text of ``rows`` with ``\\n`` line ends, cells formatted by :func:`_csv_value`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in fieldnames})
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    """A cell: booleans as 0/1, floats to 6 significant digits, NaN and infinities as empty cells."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return "" if not math.isfinite(value) else f"{float(value):.6g}"
    return value
