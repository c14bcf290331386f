"""PNG figures of an evaluation: per-metric box plots, the FROC curve and the study-level ROC curve.

All figures are drawn with matplotlib's Agg backend (no display needed) and written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pe_segmentation.visualization import pyplot, save_figure

#: FP rate 0 cannot sit on a log axis: such points of the FROC are drawn at this left edge.
_FP_FLOOR = 0.1
#: Metrics in [0, 1], drawn on a fixed 0..1 axis.
_UNIT_METRICS = (
    "dice",
    "iou",
    "sensitivity",
    "specificity",
    "precision",
    "accuracy",
    "nsd",
    "embolus_sensitivity",
)
#: Axis titles of the per-case metrics.
METRIC_TITLES = {
    "dice": "Dice",
    "iou": "IoU",
    "sensitivity": "Sensitivity (voxel)",
    "specificity": "Specificity (voxel)",
    "precision": "Precision (voxel)",
    "accuracy": "Accuracy (voxel)",
    "hd95_mm": "HD95 (mm)",
    "assd_mm": "ASSD (mm)",
    "nsd": "Normalised surface Dice",
    "embolus_sensitivity": "Per-embolus sensitivity",
    "false_positives": "False positives per scan",
}


def plot_metric_boxes(
    columns: Mapping[str, Sequence[float]], path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """One box plot per metric (own axis each), with every case drawn as a point.

    Args:
        columns: metric name -> per-case values; NaN values are left out and counted in the panel title.
        path: the PNG to write.
        title: figure title.
    """
    plt = pyplot()
    if not columns:
        raise ValueError("nothing to draw: no metrics")
    names = list(columns)
    per_row = min(4, len(names))
    rows = math.ceil(len(names) / per_row)
    figure, axes = plt.subplots(rows, per_row, figsize=(2.6 * per_row, 3.2 * rows), squeeze=False)
    rng = np.random.default_rng(0)  # fixed jitter: the same data give the same picture
    for axis in axes.ravel():
        axis.axis("off")
    for axis, name in zip(axes.ravel(), names, strict=False):
        axis.axis("on")
        values = np.asarray(columns[name], dtype=np.float64)
        finite = values[np.isfinite(values)]
        label = METRIC_TITLES.get(name, name)
        undefined = values.size - finite.size
        axis.set_title(label + (f"\n({undefined} undefined)" if undefined else ""), fontsize=9)
        if finite.size:
            axis.boxplot(finite, widths=0.5, showfliers=False, medianprops={"color": "tab:red"})
            axis.scatter(1 + rng.uniform(-0.12, 0.12, finite.size), finite, s=10, alpha=0.6, color="tab:blue")
        else:
            axis.text(0.5, 0.5, "no defined values", ha="center", va="center", transform=axis.transAxes)
        axis.set_xticks([])
        if name in _UNIT_METRICS:
            axis.set_ylim(-0.03, 1.03)
        axis.grid(axis="y", alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_froc(
    fp_per_scan: Sequence[float] | np.ndarray,
    sensitivity: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    fp_rates: Sequence[float] = (),
    sensitivities_at: Sequence[float] | np.ndarray = (),
    operating_point: tuple[float, float] | None = None,
    title: str = "FROC",
) -> Path:
    """The FROC step curve on a log FP axis, with its readings at fixed rates and the mask's operating point.

    Args:
        fp_per_scan: the curve's false positives per scan (non-decreasing).
        sensitivity: per-embolus sensitivity at each point.
        path: the PNG to write.
        fp_rates: FP rates read off the curve (drawn as markers with their values).
        sensitivities_at: the sensitivity read at each rate.
        operating_point: ``(fp_per_scan, sensitivity)`` of the binary prediction, drawn as a star.
        title: figure title.
    """
    plt = pyplot()
    fps = np.asarray(fp_per_scan, dtype=np.float64)
    sens = np.asarray(sensitivity, dtype=np.float64)
    figure, axis = plt.subplots(figsize=(6, 4.5))
    upper = max([8.0, *fps.tolist(), *(list(fp_rates) or [1.0])]) * 1.6
    if fps.size:
        axis.step(
            np.append(np.maximum(fps, _FP_FLOOR), upper),
            np.append(sens, sens[-1]),
            where="post",
            color="tab:blue",
            label="FROC",
        )
    for rate, value in zip(fp_rates, sensitivities_at, strict=True):
        if math.isfinite(value):
            axis.plot([rate], [value], "o", color="tab:blue")
            axis.annotate(
                f"{value:.2f}", (rate, value), textcoords="offset points", xytext=(4, 6), fontsize=8
            )
    if operating_point is not None and all(math.isfinite(v) for v in operating_point):
        axis.plot(
            [max(operating_point[0], _FP_FLOOR)],
            [operating_point[1]],
            "*",
            markersize=12,
            color="tab:red",
            label="binary mask",
        )
    _froc_axes(axis, upper, title)
    figure.tight_layout()
    return save_figure(figure, path)


def _froc_axes(axis: Any, upper: float, title: str) -> None:
    """Log FP axis from :data:`_FP_FLOOR` to ``upper`` with plain-number ticks, sensitivity from 0 to 1, labels,
    grid, legend and title."""
    axis.set_xscale("log")
    axis.set_xlim(_FP_FLOOR, upper)
    ticks = [t for t in (0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128) if t <= upper]
    axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axis.minorticks_off()
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("false positives per scan")
    axis.set_ylabel("per-embolus sensitivity")
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(title, fontsize=10)


def plot_roc(
    fpr: Sequence[float] | np.ndarray,
    tpr: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    auc: float | None = None,
    operating_point: tuple[float, float] | None = None,
    title: str = "Study-level ROC",
) -> Path:
    """The study-level ROC curve (straight lines between operating points) over the chance diagonal.

    Args:
        fpr: false-positive rates (1 - specificity), from 0 up to 1 (every scan called positive).
        tpr: true-positive rates (sensitivity) at each point.
        path: the PNG to write.
        auc: the area, shown in the legend.
        operating_point: ``(1 - specificity, sensitivity)`` of the yes/no calls, drawn as a star.
        title: figure title.
    """
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4.8, 4.5))
    axis.plot([0, 1], [0, 1], "--", color="0.6", linewidth=1, label="chance")
    label = "ROC" if auc is None or not math.isfinite(auc) else f"ROC (AUC {auc:.3f})"
    axis.plot(np.asarray(fpr), np.asarray(tpr), "-o", color="tab:blue", markersize=3, label=label)
    if operating_point is not None and all(math.isfinite(v) for v in operating_point):
        axis.plot(*operating_point, "*", markersize=12, color="tab:red", label="PE present (call)")
    axis.set_xlim(-0.02, 1.02)
    axis.set_ylim(-0.02, 1.02)
    axis.set_aspect("equal")
    axis.set_xlabel("1 - specificity (scans without emboli)")
    axis.set_ylabel("sensitivity (scans with emboli)")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)
