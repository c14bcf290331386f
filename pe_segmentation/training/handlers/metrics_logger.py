"""Per-epoch output of a run's numbers: the metrics CSV, the curves PNG, TensorBoard scalars and a log line.

MONAI's ``TensorBoardStatsHandler`` flushes the event file on every iteration and has no learning rate; MONAI has
no CSV-per-epoch or plot writer.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, cast

import torch
from ignite.engine import Engine, Events

from pe_segmentation.training.curves import format_cell, plot_training_curves, write_metrics_csv
from pe_segmentation.training.handlers.run_state import RunRecord
from pe_segmentation.training.metrics import METRIC_NAMES, VAL_METRICS

log = logging.getLogger("pe_segmentation.training")


class MetricsLogger:
    """Per epoch: a metrics CSV row, TensorBoard scalars and a log line; the curves PNG after each validation.

    Every rank keeps the rows (they are identical); only the writer (rank 0) writes files.

    Args:
        record: the run's :class:`RunRecord` (its ``rows`` may hold the epochs before a resume).
        run_dir: the run folder (``metrics.csv``, ``curves.png``).
        writer: a TensorBoard ``SummaryWriter``, or ``None``.
        write: whether this process writes (rank 0).
    """

    def __init__(
        self, record: RunRecord, run_dir: str | os.PathLike[str], writer: Any = None, write: bool = True
    ):
        self.record = record
        self.run_dir = Path(run_dir)
        self.writer = writer
        self.write = write

    @property
    def csv_path(self) -> Path:
        return self.run_dir / "metrics.csv"

    @property
    def png_path(self) -> Path:
        return self.run_dir / "curves.png"

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def iteration_completed(self, engine: Engine) -> None:
        if self.writer is not None and self.write:
            step = engine.state.iteration
            output = cast("dict[str, torch.Tensor]", engine.state.output)  # ignite types it as int | None
            self.writer.add_scalar("train/loss", float(output["loss"].detach()), step)
            self.writer.add_scalar("train/lr", self.record.lr, step)

    def epoch_completed(self, engine: Engine) -> None:
        record, epoch = self.record, engine.state.epoch
        validated = record.validated(epoch)
        row: dict[str, Any] = {
            "epoch": epoch,
            "iteration": engine.state.iteration,
            "train_loss": record.train_loss,
            "lr": record.lr,
            "seconds": round(time.time() - record.epoch_started, 3),
        }
        row.update({k: (record.metrics.get(k) if validated else None) for k in VAL_METRICS})
        record.rows = [r for r in record.rows if r["epoch"] < epoch] + [row]
        message = f"epoch {epoch}/{engine.state.max_epochs}: loss {format_cell(record.train_loss) or '-'}, lr {record.lr:.3g}"
        if validated:
            metrics = ", ".join(
                f"{n} {record.metrics.get(k, math.nan):.4f}"
                for n, k in zip(METRIC_NAMES, VAL_METRICS, strict=True)
            )
            best = (
                f"{record.best_dice:.4f} at epoch {record.best_epoch}"
                if record.best_dice is not None
                else "-"
            )
            message += f"; validation {metrics} (best dice {best})"
        log.info("%s [%.1f s]", message, row["seconds"])
        if not self.write:
            return
        write_metrics_csv(self.csv_path, record.rows)
        if validated:
            plot_training_curves(self.csv_path, self.png_path)  # one plotter: also `pe-seg evaluate --run`
        if self.writer is not None:
            step = engine.state.iteration
            if record.train_loss is not None:
                self.writer.add_scalar("train/epoch_loss", record.train_loss, step)
            if validated:
                for key in VAL_METRICS:
                    if key in record.metrics:
                        self.writer.add_scalar(f"val/{key[4:]}", record.metrics[key], step)
            self.writer.flush()
