"""Handlers on a stand-in engine: progress output, metrics CSV round trip, curves, early stop."""

from __future__ import annotations

import math

import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image

from pe_segmentation.training.curves import (
    CSV_COLUMNS,
    plot_training_curves,
    read_metrics_csv,
    write_metrics_csv,
)
from pe_segmentation.training.curves import metric_columns as plot_columns
from pe_segmentation.training.handlers import EarlyStop, RunRecord, attach_progress


def _engine() -> Engine:
    return Engine(lambda engine, batch: {"loss": torch.tensor(float(batch))})


def test_progress_bar_on_a_terminal_and_lines_otherwise(caplog):
    bar = _engine()
    attach_progress(bar, None, tty=True)
    bar.run([3, 2, 1], max_epochs=2)
    lines = _engine()
    with caplog.at_level("INFO", logger="pe_segmentation"):
        attach_progress(lines, None, tty=False)
        lines.run(list(range(20)), max_epochs=1)
    messages = [r.getMessage() for r in caplog.records if r.name == "pe_segmentation.training.progress"]
    assert len(messages) == 10  # about ten lines per epoch, not one per iteration
    assert "Iter: 20/20 -- loss: 19.0000" in messages[-1]


def test_metrics_csv_round_trip(tmp_path):
    rows = [
        {"epoch": 1, "iteration": 4, "train_loss": 1.5, "lr": 1e-4, "seconds": 2.0},
        {"epoch": 2, "iteration": 8, "train_loss": 1.2, "lr": 1e-3, "val_dice": 0.5, "val_iou": 1 / 3},
    ]
    path = write_metrics_csv(tmp_path / "metrics.csv", rows)
    assert path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    back = read_metrics_csv(path)
    assert back[0]["val_dice"] is None
    assert back[1]["epoch"] == 2
    assert math.isclose(back[1]["val_iou"], 1 / 3, rel_tol=1e-5)
    assert read_metrics_csv(tmp_path / "missing.csv") == []
    # the plots read the same parser's output as columns: empty cells are NaN there
    columns = plot_columns(path)
    assert list(columns) == list(CSV_COLUMNS)
    np.testing.assert_allclose(columns["train_loss"], [1.5, 1.2])
    assert math.isnan(columns["val_dice"][0])
    assert columns["val_dice"][1] == 0.5

    png = plot_training_curves(path, tmp_path / "curves.png")
    with Image.open(png) as image:
        assert image.format == "PNG"


def test_early_stop_counts_validations_without_improvement():
    record = RunRecord(best_dice=0.6, best_epoch=1, stale_validations=2, validated_epoch=3)
    engine = _engine()
    EarlyStop(record, patience=2).attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: None)
    engine.run([1], max_epochs=5)
    assert record.stopped_early
    assert engine.state.epoch == 3  # the epoch whose validation hit the patience
