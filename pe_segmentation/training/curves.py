"""A training run's metrics table and curves: ``metrics.csv`` written and read back (resume, ``pe-seg evaluate
--run``) with one parser, and ``curves.png`` drawn from it."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.training.metrics import VAL_METRICS
from pe_segmentation.visualization import pyplot, save_figure

#: The columns of ``metrics.csv``, one row per epoch.
CSV_COLUMNS = ("epoch", "iteration", "train_loss", "lr", *VAL_METRICS, "seconds")
#: Columns read as integers; the others as floats when they parse, else kept as text.
INTEGER_COLUMNS = ("epoch", "iteration")


def _cell(column: str, value: str | None) -> Any:
    if value is None or value == "":
        return None
    try:
        return int(float(value)) if column in INTEGER_COLUMNS else float(value)
    except ValueError:
        return value


def read_csv_table(path: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The column names and the rows of a CSV file, cells as numbers where they parse (``None`` when empty).

    Raises:
        InputDataError: the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            raw_rows = list(reader)
            columns = [name.strip() for name in reader.fieldnames or [] if name and name.strip()]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputDataError(f"{path}: cannot read ({err})") from err
    rows = [
        {
            key.strip(): _cell(key.strip(), value)
            for key, value in raw.items()
            if key is not None and key.strip()
        }
        for raw in raw_rows
    ]
    return columns, rows


def format_cell(value: Any) -> str:
    """A metrics cell as text: numbers to 6 significant digits, empty for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_metrics_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write the metrics rows (columns :data:`CSV_COLUMNS`) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([format_cell(row.get(column)) for column in CSV_COLUMNS])
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def read_metrics_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a metrics CSV as dicts of numbers (``None`` for empty cells); ``[]`` if there is no file."""
    return read_csv_table(path)[1] if Path(path).is_file() else []


def metric_columns(csv_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
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
    plt = pyplot()
    columns = metric_columns(csv_path)
    x, x_label = _x_axis(columns)
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
        _draw_panel(axis, title, names, log_scale, x, columns)
    figure.suptitle(f"training curves: {Path(csv_path).parent.name or Path(csv_path).name}", fontsize=11)
    figure.tight_layout()
    return save_figure(figure, png_path)


def _x_axis(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """The x values of the curves and their label: the epoch, or the iteration when several rows share an
    epoch, or the row number."""
    n_rows = max((len(v) for v in columns.values()), default=0)
    x, x_label = np.arange(1, n_rows + 1, dtype=np.float64), "row"
    epoch, iteration = columns.get("epoch"), columns.get("iteration")
    if epoch is not None and np.isfinite(epoch).all() and len(np.unique(epoch)) == n_rows:
        x, x_label = epoch, "epoch"
    elif iteration is not None and np.isfinite(iteration).all() and n_rows:
        x, x_label = iteration, "iteration"
    return x, x_label


def _draw_panel(
    axis: Any, title: str, names: list[str], log_scale: bool, x: np.ndarray, columns: dict[str, np.ndarray]
) -> None:
    """Draw the columns ``names`` (their finite values) in one panel, the best ``val_dice`` annotated; a panel
    without any says "no data yet"."""
    drawn = False
    for name in names:
        values = columns.get(name)
        if values is None:
            continue
        keep = np.isfinite(values)
        if not keep.any():
            continue
        axis.plot(x[keep], values[keep], marker="o" if keep.sum() < 30 else None, markersize=3, label=name)
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
        return
    if log_scale and np.nanmin(np.concatenate([columns[n] for n in names if n in columns])) > 0:
        axis.set_yscale("log")
    if title == "validation":
        axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    if len(names) > 1 or title == "validation":
        axis.legend(fontsize=7)
