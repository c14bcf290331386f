"""PNG figures of an evaluation (per-metric box plots, the FROC curve) and of a training run's curves.

All figures are drawn with matplotlib's Agg backend (no display needed) and written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pe_segmentation.evaluation.tables import read_csv_table
from pe_segmentation.io.atomic import atomic_output

__all__ = ["METRIC_TITLES", "plot_froc", "plot_metric_boxes", "plot_training_curves", "read_metrics_csv"]

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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: str | os.PathLike[str]) -> Path:
    plt = _pyplot()
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            figure.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(figure)
    return path


def plot_metric_boxes(
    columns: Mapping[str, Sequence[float]], path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """One box plot per metric (own axis each), with every case drawn as a point.

    Args:
        columns: metric name -> per-case values; NaN values are left out and counted in the panel title.
        path: the PNG to write.
        title: figure title.
    """
    plt = _pyplot()
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
        if name in (
            "dice",
            "iou",
            "sensitivity",
            "specificity",
            "precision",
            "accuracy",
            "nsd",
            "embolus_sensitivity",
        ):
            axis.set_ylim(-0.03, 1.03)
        axis.grid(axis="y", alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return _save(figure, path)


def plot_froc(
    fp_per_scan: Sequence[float],
    sensitivity: Sequence[float],
    path: str | os.PathLike[str],
    fp_rates: Sequence[float] = (),
    sensitivities_at: Sequence[float] = (),
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
    plt = _pyplot()
    fps = np.asarray(fp_per_scan, dtype=np.float64)
    sens = np.asarray(sensitivity, dtype=np.float64)
    figure, axis = plt.subplots(figsize=(6, 4.5))
    floor = 0.1  # FP rate 0 cannot sit on a log axis: such points are drawn at the left edge
    upper = max([8.0, *fps.tolist(), *(list(fp_rates) or [1.0])]) * 1.6
    shown_fps = np.maximum(fps, floor)
    if fps.size:
        axis.step(
            np.append(shown_fps, upper),
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
            [max(operating_point[0], floor)],
            [operating_point[1]],
            "*",
            markersize=12,
            color="tab:red",
            label="binary mask",
        )
    axis.set_xscale("log")
    axis.set_xlim(floor, upper)
    ticks = [t for t in (0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128) if t <= upper]
    axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axis.minorticks_off()
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("false positives per scan")
    axis.set_ylabel("per-embolus sensitivity")
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def read_metrics_csv(csv_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV as float arrays; empty or non-numeric cells are NaN.

    Raises:
        InputDataError: the file is missing or unreadable.
    """
    columns, rows = read_csv_table(csv_path)

    def number(cell: Any) -> float:
        return float(cell) if isinstance(cell, (int, float)) else math.nan

    return {name: np.array([number(row.get(name)) for row in rows], dtype=np.float64) for name in columns}


def plot_training_curves(csv_path: str | os.PathLike[str], png_path: str | os.PathLike[str]) -> Path:
    """Redraw a training run's curves from its ``metrics.csv``: loss, validation metrics and learning rate.

    Columns used when present: ``epoch``, ``iteration``, ``train_loss``, ``lr`` and every ``val_*`` column
    (``val_dice``, ``val_iou``, ...). Missing columns and empty cells (epochs without validation) are skipped;
    a CSV without rows gives a figure that says so. The x axis is the epoch, or the iteration when several rows
    share an epoch, or the row number.

    Args:
        csv_path: the run's ``metrics.csv``.
        png_path: the PNG to write.

    Raises:
        InputDataError: the CSV is missing or unreadable.
    """
    plt = _pyplot()
    columns = read_metrics_csv(csv_path)
    n_rows = max((len(v) for v in columns.values()), default=0)
    x, x_label = np.arange(1, n_rows + 1, dtype=np.float64), "row"
    epoch, iteration = columns.get("epoch"), columns.get("iteration")
    if epoch is not None and np.isfinite(epoch).all() and len(np.unique(epoch)) == n_rows:
        x, x_label = epoch, "epoch"
    elif iteration is not None and np.isfinite(iteration).all() and n_rows:
        x, x_label = iteration, "iteration"
    val_names = [n for n in columns if n.startswith("val_") and np.isfinite(columns[n]).any()]
    panels = [
        ("training loss", ["train_loss"], False),
        ("validation", val_names, False),
        ("learning rate", ["lr"], True),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for axis, (title, names, log_scale) in zip(axes, panels, strict=True):
        axis.set_title(title, fontsize=10)
        axis.set_xlabel(x_label)
        drawn = False
        for name in names:
            values = columns.get(name)
            if values is None:
                continue
            keep = np.isfinite(values)
            if not keep.any():
                continue
            axis.plot(
                x[keep], values[keep], marker="o" if keep.sum() < 30 else None, markersize=3, label=name
            )
            drawn = True
            if name == "val_dice":
                best = int(np.nanargmax(np.where(keep, values, -np.inf)))
                axis.annotate(
                    f"best {values[best]:.3f}",
                    (x[best], values[best]),
                    textcoords="offset points",
                    xytext=(0, 6),
                    fontsize=8,
                    ha="center",
                )
        if not drawn:
            axis.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axis.transAxes)
            continue
        if log_scale and np.nanmin(np.concatenate([columns[n] for n in names if n in columns])) > 0:
            axis.set_yscale("log")
        if title == "validation":
            axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
        if len(names) > 1 or title == "validation":
            axis.legend(fontsize=7)
    figure.suptitle(f"training curves: {Path(csv_path).parent.name or Path(csv_path).name}", fontsize=11)
    figure.tight_layout()
    return _save(figure, png_path)
