"""Event handlers of the pe-seg trainer and evaluator (ignite handlers with MONAI's ``attach`` convention).

MONAI provides the engines, ``ValidationHandler``, ``LrScheduleHandler``, ``StatsHandler`` and the metric
handlers; the handlers here cover what MONAI's do not do the way a pe-seg run needs:

* :class:`TrainStats`: the learning rate of each iteration and the epoch's mean loss, averaged over DDP ranks.
* :class:`ValidationTracker`: best Dice, its epoch and validations without improvement (for early stop and the
  best checkpoint), kept in a :class:`RunRecord` that checkpoints save and resumes restore. (MONAI's
  ``EarlyStopHandler`` keeps its counter inside ignite's ``EarlyStopping``, outside any checkpoint.)
* :class:`MetricsLogger`: the per-epoch metrics CSV, the curves PNG (after every validation), TensorBoard
  scalars and one summary line per epoch. (MONAI's ``TensorBoardStatsHandler`` flushes the event file on every
  iteration and has no learning rate; MONAI has no CSV-per-epoch or plot writer.)
* :class:`ValidationImages`: TensorBoard picture of one axial slice of image, label and prediction. (MONAI's
  ``TensorBoardImageHandler`` writes a 3D volume as an animated GIF of every slice.)
* :class:`CheckpointWriter`: best / last / every-N checkpoints, atomic and ``weights_only``-loadable (see
  :mod:`pe_segmentation.runtime.checkpoint` for why not MONAI's ``CheckpointSaver``).
* :class:`EarlyStop`, :class:`GradientClipping`, :class:`EpochSeeding`, and :func:`attach_progress` (a progress
  bar on a terminal, MONAI ``StatsHandler`` lines otherwise).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from pe_segmentation.io.atomic import remove_partial_outputs
from pe_segmentation.runtime.checkpoint import (
    BEST_NAME,
    CHECKPOINT_DIR,
    LAST_NAME,
    get_rng_state,
    package_versions,
    save_checkpoint,
)
from pe_segmentation.runtime.distributed import all_gather_objects
from pe_segmentation.training.curves import format_cell, plot_training_curves, write_metrics_csv
from pe_segmentation.training.metrics import KEY_METRIC, METRIC_NAMES, VAL_METRICS

log = logging.getLogger("pe_segmentation.training")

#: Columns of ``metrics.csv``; validation columns are empty in epochs without validation.


@dataclass
class RunRecord:
    """What the handlers of one run share: latest values, the best validation, the metrics history.

    Attributes:
        train_loss: mean training loss of the last epoch (over all ranks).
        lr: learning rate used by the last iteration.
        metrics: the latest validation metrics (``val_dice`` ...).
        validated_epoch: the epoch those metrics belong to.
        improved: whether that validation beat the best Dice.
        best_dice / best_epoch: the best validation Dice so far and its epoch.
        stale_validations: validations since the best one (early stop counts these).
        stopped_early: set when early stop ended the run.
        rows: the metrics CSV rows so far.
        epoch_started: wall time at which the current epoch started.
    """

    train_loss: float | None = None
    lr: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    validated_epoch: int | None = None
    improved: bool = False
    best_dice: float | None = None
    best_epoch: int | None = None
    stale_validations: int = 0
    stopped_early: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    epoch_started: float = 0.0

    def validated(self, epoch: int) -> bool:
        return self.validated_epoch == epoch

    def state_dict(self) -> dict[str, Any]:
        """The resumable part (plain numbers)."""
        return {
            "best_dice": self.best_dice,
            "best_epoch": self.best_epoch,
            "stale_validations": self.stale_validations,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_dice = state.get("best_dice")
        self.best_epoch = state.get("best_epoch")
        self.stale_validations = int(state.get("stale_validations") or 0)


# -------------------------------------------------------------------------------------------- training loop


class EpochSeeding:
    """Calls ``data.set_epoch(epoch)`` when each epoch starts (case order and random patches of the epoch).

    Ignite creates an epoch's data iterator after ``EPOCH_STARTED``, so the new seeds take effect for it.
    """

    def __init__(self, data: Any) -> None:
        if not hasattr(data, "set_epoch"):
            raise TypeError(f"data must have set_epoch(epoch), got {type(data).__name__}")
        self.data = data

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.data.set_epoch(engine.state.epoch)


class GradientClipping:
    """Clip the gradient norm after the backward pass, before the optimizer step.

    With fp16 gradient scaling the gradients are unscaled first (``GradScaler.step`` then knows not to
    unscale again), so the threshold applies to true gradient values.
    """

    def __init__(self, max_norm: float) -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
        self.max_norm = float(max_norm)

    def attach(self, engine: Engine) -> None:
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None:
            scaler.unscale_(engine.optimizer)  # type: ignore[attr-defined]
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)  # type: ignore[attr-defined]


class TrainStats:
    """Learning rate of each iteration and the epoch's mean training loss (averaged over DDP ranks).

    The loss is accumulated as a tensor on the device (no host sync per iteration) and reduced once per epoch.
    """

    def __init__(self, record: RunRecord, optimizer: torch.optim.Optimizer) -> None:
        self.record = record
        self.optimizer = optimizer
        self._sum: torch.Tensor | None = None
        self._count = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        self._sum, self._count = None, 0
        self.record.epoch_started = time.time()

    def iteration_started(self, engine: Engine) -> None:
        self.record.lr = float(self.optimizer.param_groups[0]["lr"])  # before the scheduler steps

    def iteration_completed(self, engine: Engine) -> None:
        loss = engine.state.output["loss"].detach().float()
        self._sum = loss if self._sum is None else self._sum + loss
        self._count += 1

    def epoch_completed(self, engine: Engine) -> None:
        device = engine.state.device
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        if self._sum is not None:
            totals[0] = self._sum.to(device=device, dtype=torch.float64)
            totals[1] = self._count
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        self.record.train_loss = float(totals[0] / totals[1]) if totals[1] > 0 else None


# ---------------------------------------------------------------------------------------------- validation


class ValidationTracker:
    """On the evaluator: keep the validation metrics, the best Dice and the validations without improvement.

    Args:
        record: the run's :class:`RunRecord`.
        trainer: the trainer (its epoch names the validation).
        min_delta: improvement over the best Dice needed to count as better.
    """

    def __init__(self, record: RunRecord, trainer: Engine, min_delta: float = 0.0) -> None:
        self.record = record
        self.trainer = trainer
        self.min_delta = float(min_delta)

    def attach(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, evaluator: Engine) -> None:
        record = self.record
        epoch = self.trainer.state.epoch
        record.metrics = {k: float(v) for k, v in evaluator.state.metrics.items() if k in VAL_METRICS}
        record.validated_epoch = epoch
        dice = record.metrics.get(KEY_METRIC, math.nan)
        better = not math.isnan(dice) and (
            record.best_dice is None or dice > record.best_dice + self.min_delta
        )
        record.improved = better
        if better:
            record.best_dice, record.best_epoch, record.stale_validations = dice, epoch, 0
        else:
            record.stale_validations += 1


class EarlyStop:
    """End training after ``patience`` validations without a better Dice (checked after the epoch's
    checkpoints are written, so ``last.pt`` holds the final epoch)."""

    def __init__(self, record: RunRecord, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience!r}")
        self.record = record
        self.patience = int(patience)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        record = self.record
        if record.validated(engine.state.epoch) and record.stale_validations >= self.patience:
            log.info(
                "early stop: no better validation Dice in %d validation(s) (best %.4f at epoch %s)",
                record.stale_validations,
                record.best_dice if record.best_dice is not None else math.nan,
                record.best_epoch,
            )
            record.stopped_early = True
            engine.terminate()


# ------------------------------------------------------------------------------------------ metrics output


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
            self.writer.add_scalar("train/loss", float(engine.state.output["loss"].detach()), step)
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


def _slice_panel(
    image: np.ndarray, mask: np.ndarray | None, colour: tuple[float, float, float]
) -> np.ndarray:
    """RGB (3, rows, cols) of an axial slice ``[x, y]``, radiological view, ``mask`` blended in ``colour``."""
    grey = np.clip(np.flip(image.T, axis=(0, 1)), 0.0, 1.0)
    rgb = np.stack([grey] * 3)
    if mask is not None:
        shown = np.flip(mask.T, axis=(0, 1)) > 0
        for channel, weight in enumerate(colour):
            rgb[channel][shown] = 0.5 * rgb[channel][shown] + 0.5 * weight
    return rgb


class ValidationImages:
    """TensorBoard picture of the first validation case: one axial slice of the image, the label (green)
    and the prediction (red), side by side, on the slice with most label voxels."""

    def __init__(self, writer: Any, trainer: Engine, tag: str = "val/image_label_prediction") -> None:
        self.writer = writer
        self.trainer = trainer
        self.tag = tag

    def attach(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, evaluator: Engine) -> None:
        if evaluator.state.iteration != 1:
            return
        output = evaluator.state.output
        item = output[0] if isinstance(output, (list, tuple)) else output
        if not isinstance(item, Mapping) or "image" not in item or "pred" not in item:
            return
        image = torch.as_tensor(item["image"]).detach().float().cpu().numpy()[0]
        label = _foreground(item.get("label"))
        pred = _foreground(item["pred"])
        if image.ndim == 2:  # a 2D case: one slice already
            image, label, pred = image[..., None], _add_z(label), _add_z(pred)
        if label is not None and label.any():
            z = int(np.argmax(label.reshape(-1, label.shape[-1]).sum(axis=0)))
        else:
            z = image.shape[-1] // 2
        panels = [
            _slice_panel(image[..., z], None, (0, 0, 0)),
            _slice_panel(image[..., z], None if label is None else label[..., z], (0.0, 1.0, 0.0)),
            _slice_panel(image[..., z], pred[..., z], (1.0, 0.0, 0.0)),
        ]
        picture = np.concatenate(panels, axis=2).astype(np.float32)
        self.writer.add_image(self.tag, picture, self.trainer.state.iteration, dataformats="CHW")


def _foreground(value: Any) -> np.ndarray | None:
    """The embolus mask ``[x, y, (z)]`` of a one-hot (C >= 2) or single-channel prediction/label."""
    if value is None:
        return None
    array = torch.as_tensor(value).detach().float().cpu().numpy()
    return array[1] if array.shape[0] >= 2 else array[0]


def _add_z(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else array[..., None]


# -------------------------------------------------------------------------------------------------- checkpoints


class CheckpointWriter:
    """Write ``best.pt`` (when a validation improves the Dice), ``last.pt`` (every epoch) and
    ``epoch_NNNN.pt`` (every ``every`` epochs) under ``<run_dir>/checkpoints``.

    Every rank calls it (each contributes its RNG state); only the writer (rank 0) writes.

    Args:
        run_dir: the run folder.
        record: the run's :class:`RunRecord`.
        state: callable returning the rest of the payload (model, optimizer, scheduler, scaler, config ...).
        every: keep a checkpoint every N epochs (0: never).
        write: whether this process writes (rank 0).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        record: RunRecord,
        state: Callable[[Engine], dict[str, Any]],
        every: int = 0,
        write: bool = True,
    ) -> None:
        self.directory = Path(run_dir) / CHECKPOINT_DIR
        self.record = record
        self.state = state
        self.every = int(every)
        self.write = write
        self.saved: dict[str, Path] = {}

    @property
    def best_path(self) -> Path:
        return self.directory / BEST_NAME

    @property
    def last_path(self) -> Path:
        return self.directory / LAST_NAME

    def attach(self, engine: Engine) -> None:
        if self.write:  # a run killed while writing a checkpoint left its temporary file (tens of MB) behind
            removed = remove_partial_outputs(self.directory)
            if removed:
                log.warning(
                    "removed %d partial checkpoint file(s) of an interrupted write: %s",
                    len(removed),
                    ", ".join(p.name for p in removed),
                )
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def payload(self, engine: Engine, kind: str) -> dict[str, Any]:
        record = self.record
        ranks = all_gather_objects(get_rng_state())
        payload = dict(self.state(engine))
        payload.update(
            kind=kind,
            trainer={
                "epoch": int(engine.state.epoch),
                "iteration": int(engine.state.iteration),
                "epoch_length": int(engine.state.epoch_length or 0),
                "max_epochs": int(engine.state.max_epochs or 0),
                **record.state_dict(),
            },
            metrics=dict(record.metrics) if record.validated(engine.state.epoch) else {},
            rng={"world_size": len(ranks), "ranks": ranks},
            versions=package_versions(),
        )
        return payload

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        payload = self.payload(engine, "last")  # collective: every rank takes part
        if not self.write:
            return
        save_checkpoint(self.last_path, payload)
        self.saved["last"] = self.last_path
        if self.record.validated(epoch) and self.record.improved:
            save_checkpoint(self.best_path, {**payload, "kind": "best"})
            self.saved["best"] = self.best_path
            log.info("best validation dice %.4f: saved %s", self.record.best_dice, self.best_path)
        if self.every and epoch % self.every == 0:
            path = self.directory / f"epoch_{epoch:04d}.pt"
            save_checkpoint(path, {**payload, "kind": "periodic"})
            self.saved[f"epoch_{epoch:04d}"] = path


# ----------------------------------------------------------------------------------------------------- progress


def attach_progress(
    trainer: Engine,
    evaluator: Engine | None,
    *,
    tty: bool | None = None,
    logger_name: str = "pe_segmentation.training",
) -> None:
    """Progress output: ignite's ``ProgressBar`` on a terminal, else MONAI ``StatsHandler`` lines (about ten
    per epoch) through the ``logger_name`` logger.

    Args:
        trainer: the training engine (its output holds ``loss``).
        evaluator: the validation engine, if any (a bar on a terminal; the epoch summary line covers it
            otherwise).
        tty: force the terminal (``True``) or plain-line (``False``) mode; ``None``: whether stderr is a
            terminal.
    """
    if tty is None:
        tty = sys.stderr.isatty()
    if tty:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False, desc="train").attach(
            trainer, output_transform=lambda out: {"loss": float(out["loss"])}
        )
        if evaluator is not None:
            ProgressBar(persist=False, desc="validate").attach(evaluator)
        return
    from monai.handlers import StatsHandler

    def every_tenth(engine: Engine, iteration: int) -> bool:
        length = engine.state.epoch_length or 1
        step = max(1, length // 10)
        within = (iteration - 1) % length + 1
        return within % step == 0 or within == length

    name = f"{logger_name}.progress"
    stats = StatsHandler(
        iteration_log=every_tenth,
        epoch_log=False,
        output_transform=lambda out: out["loss"].detach(),
        name=name,
        tag_name="loss",
    )
    # MONAI's get_logger gives a new named logger its own stdout handler and stops propagation; undo that
    # so that the lines go where pe-seg's other log lines go (console handler and train.log)
    stats.logger.handlers.clear()
    stats.logger.propagate = True
    stats.logger.setLevel(logging.NOTSET)
    stats.attach(trainer)
