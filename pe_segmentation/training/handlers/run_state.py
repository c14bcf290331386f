"""The state a run's handlers share: :class:`RunRecord`, the best validation (:class:`ValidationTracker`) and
early stop (:class:`EarlyStop`).

MONAI's ``EarlyStopHandler`` keeps its counter inside ignite's ``EarlyStopping``, outside any checkpoint; here the
counter lives in the :class:`RunRecord`, which checkpoints save and resumes restore.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ignite.engine import Engine, Events

from pe_segmentation.training.metrics import KEY_METRIC, VAL_METRICS

log = logging.getLogger("pe_segmentation.training")


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
