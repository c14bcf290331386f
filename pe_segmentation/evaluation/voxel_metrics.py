"""Voxel-wise metrics of one predicted embolus mask against its reference label.

Overlap metrics come from exact integer confusion counts; surface metrics (HD95, ASSD, normalised surface Dice)
from MONAI's implementations with the voxel spacing, so distances are in millimetres on anisotropic grids.

Conventions (also in ``docs/evaluation.md``): a ratio whose denominator is zero is undefined (NaN), with one
exception: when label and prediction are both empty they agree perfectly, so Dice and IoU are 1, HD95 and ASSD
are 0 mm and NSD is 1. When exactly one of them is empty, Dice, IoU and NSD are 0 and HD95/ASSD are NaN (there is
no surface to measure to); summaries count such values as undefined rather than inventing a distance.

Surface conventions are MONAI's: the surface of a mask is its voxels with a 6-neighbour outside the mask;
distances join voxel centres; HD95 is the larger of the two directed 95th percentiles (linear interpolation);
ASSD is the mean over both directed distance sets together; NSD counts surface voxels of either mask lying within
the tolerance of the other surface, divided by all surface voxels of both.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: Metrics derived from the confusion counts, all in [0, 1].
OVERLAP_METRICS = ("dice", "iou", "sensitivity", "specificity", "precision", "accuracy")
#: Surface metrics: two distances in mm and the normalised surface Dice in [0, 1].
SURFACE_METRICS = ("hd95_mm", "assd_mm", "nsd")
#: Every per-case voxel metric, in the order reports show them.
VOXEL_METRICS = OVERLAP_METRICS + SURFACE_METRICS


@dataclass(frozen=True)
class ConfusionCounts:
    """Voxel counts of the embolus class: true/false positives and negatives."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def label_voxels(self) -> int:
        return self.tp + self.fn

    @property
    def pred_voxels(self) -> int:
        return self.tp + self.fp

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _check_masks(pred: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"pred and label must have the same shape, got {pred.shape} and {label.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got {pred.ndim}D")
    return pred.astype(bool, copy=False), label.astype(bool, copy=False)


def _check_spacing(spacing: Sequence[float] | np.ndarray, ndim: int) -> list[float]:
    values = [float(s) for s in spacing]
    if len(values) != ndim:
        raise ValueError(f"spacing needs one value per axis ({ndim}), got {values}")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be positive and finite, got {values}")
    return values


def confusion_counts(pred: np.ndarray, label: np.ndarray) -> ConfusionCounts:
    """Exact voxel counts of a binary prediction against a binary label (non-zero = embolus)."""
    pred, label = _check_masks(pred, label)
    tp = int(np.count_nonzero(pred & label))
    n_pred, n_label = int(np.count_nonzero(pred)), int(np.count_nonzero(label))
    fp, fn = n_pred - tp, n_label - tp
    return ConfusionCounts(tp=tp, fp=fp, fn=fn, tn=int(pred.size) - tp - fp - fn)


def overlap_metrics(counts: ConfusionCounts) -> dict[str, float]:
    """Dice, IoU, sensitivity, specificity, precision and accuracy from confusion counts.

    Undefined ratios (zero denominator) are NaN, except Dice and IoU of an empty prediction on an empty label,
    which are 1 (the masks agree).
    """
    tp, fp, fn, tn = counts.tp, counts.fp, counts.fn, counts.tn
    both_empty = counts.label_voxels == 0 and counts.pred_voxels == 0
    return {
        "dice": 1.0 if both_empty else _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": 1.0 if both_empty else _ratio(tp, tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "accuracy": _ratio(tp + tn, counts.total),
    }


def _crop_to_union(pred: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to the bounding box of their union plus one voxel (surfaces are unchanged)."""
    union = pred | label
    slices = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        present = np.flatnonzero(union.any(axis=other))
        slices.append(slice(max(int(present[0]) - 1, 0), int(present[-1]) + 2))
    box = tuple(slices)
    return pred[box], label[box]


def surface_metrics(
    pred: np.ndarray, label: np.ndarray, spacing: Sequence[float] | np.ndarray, tolerance_mm: float = 2.0
) -> dict[str, float]:
    """HD95 and ASSD in mm, and the normalised surface Dice at ``tolerance_mm``, through MONAI.

    Args:
        pred: binary prediction (non-zero = embolus), 2D or 3D.
        label: binary reference of the same shape.
        spacing: voxel size in mm along each axis.
        tolerance_mm: the NSD tolerance: surface voxels closer than this to the other surface count as correct.

    Returns:
        ``{"hd95_mm", "assd_mm", "nsd"}``; see the module docstring for empty masks.
    """
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    pred, label = _check_masks(pred, label)
    spacing = _check_spacing(spacing, pred.ndim)
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be finite and >= 0, got {tolerance_mm}")
    has_pred, has_label = bool(pred.any()), bool(label.any())
    if not has_pred and not has_label:
        return {"hd95_mm": 0.0, "assd_mm": 0.0, "nsd": 1.0}
    if not has_pred or not has_label:
        return {"hd95_mm": math.nan, "assd_mm": math.nan, "nsd": 0.0}
    pred, label = _crop_to_union(pred, label)
    y_pred = torch.from_numpy(np.ascontiguousarray(pred)[None, None]).float()
    y = torch.from_numpy(np.ascontiguousarray(label)[None, None]).float()
    with warnings.catch_warnings():
        # MONAI 1.6 calls its own deprecated get_mask_edges argument internally
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*always_return_as_numpy.*")
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing)
        assd = compute_average_surface_distance(
            y_pred, y, include_background=True, symmetric=True, spacing=spacing
        )
        nsd = compute_surface_dice(y_pred, y, [float(tolerance_mm)], include_background=True, spacing=spacing)
    return {"hd95_mm": float(hd95.item()), "assd_mm": float(assd.item()), "nsd": float(nsd.item())}


def voxel_metrics(
    pred: np.ndarray, label: np.ndarray, spacing: Sequence[float] | np.ndarray, tolerance_mm: float = 2.0
) -> dict[str, float | int]:
    """Every voxel metric of one case, plus the confusion counts (``tp``, ``fp``, ``fn``, ``tn``).

    Args:
        pred: binary prediction (non-zero = embolus).
        label: binary reference label of the same shape.
        spacing: voxel size in mm along each axis.
        tolerance_mm: NSD tolerance in mm.
    """
    counts = confusion_counts(pred, label)
    return {
        "tp": counts.tp,
        "fp": counts.fp,
        "fn": counts.fn,
        "tn": counts.tn,
        **overlap_metrics(counts),
        **surface_metrics(pred, label, spacing, tolerance_mm),
    }
