"""Resuming a run: its saved config (:func:`resume_config`), the ``last.pt`` to continue from
(:func:`load_resume_point`), and the training state put back into the new engines (:func:`restore_training_state`).

A resumed run continues exactly where it stopped: the model, optimizer, scheduler and scaler states, the epoch
and iteration counters, the best validation so far and every rank's RNG states come from ``last.pt``, so
1 epoch + resume + 1 epoch gives the weights of 2 epochs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.engines import SupervisedTrainer

from pe_segmentation.config import Config
from pe_segmentation.errors import CheckpointError
from pe_segmentation.runtime.checkpoint import (
    find_resume_checkpoint,
    load_checkpoint,
    run_dir_of_checkpoint,
    saved_config,
    set_rng_state,
)
from pe_segmentation.runtime.distributed import DistributedContext
from pe_segmentation.training.builders import seed_everything
from pe_segmentation.training.curves import read_metrics_csv
from pe_segmentation.training.handlers import RunRecord

log = logging.getLogger("pe_segmentation.training")


def resume_config(run_dir_or_checkpoint: str | os.PathLike[str]) -> Config:
    """The config a run was started with (from its resume checkpoint), e.g. to resume without a config file."""
    path = find_resume_checkpoint(run_dir_or_checkpoint)
    return saved_config(load_checkpoint(path), path, "a run resumes with the config it was started with")


def _config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a resumed run continues from.

    Attributes:
        path: the checkpoint file (``last.pt``, or the one given).
        checkpoint: its content, a full training state.
    """

    path: Path
    checkpoint: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        """The run folder the checkpoint belongs to: the resumed run continues there."""
        return run_dir_of_checkpoint(self.path)

    @property
    def next_iteration(self) -> int:
        """The first iteration the resumed run trains (TensorBoard drops the interrupted run's later events)."""
        return self.checkpoint["trainer"]["iteration"] + 1


def load_resume_point(resume: str | os.PathLike[str]) -> ResumePoint:
    """The checkpoint to resume from: ``resume``'s ``last.pt`` (a run folder) or ``resume`` itself.

    Raises:
        CheckpointError: no checkpoint there, an unreadable one, or one that holds weights only.
    """
    path = find_resume_checkpoint(resume)
    checkpoint = load_checkpoint(path)
    if "optimizer" not in checkpoint or "trainer" not in checkpoint:
        raise CheckpointError(f"{path}: holds weights only, not a training state to resume")
    return ResumePoint(path, checkpoint)


def warn_on_changed_config(resume: ResumePoint, config: Config) -> None:
    """Log the config keys that differ from those the resumed run was started with (resuming is allowed)."""
    saved = resume.checkpoint.get("config")
    if isinstance(saved, Mapping):
        changed = _config_differences(saved, config.to_dict())
        if changed:
            log.warning("resuming with a changed config: %s", ", ".join(changed))


def restore_training_state(
    checkpoint: Mapping[str, Any],
    trainer: SupervisedTrainer,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    record: RunRecord,
    context: DistributedContext,
    run_dir: Path,
    epoch_length: int,
) -> None:
    """Put the training state of a ``last.pt`` back (weights were loaded with the model)."""
    state = checkpoint["trainer"]
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if trainer.scaler is not None and checkpoint.get("scaler"):
            trainer.scaler.load_state_dict(checkpoint["scaler"])
        epoch, iteration = int(state["epoch"]), int(state["iteration"])
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"cannot restore the training state from the checkpoint ({err})") from None
    if state.get("epoch_length") and int(state["epoch_length"]) != epoch_length:
        log.warning(
            "epochs now have %d iterations, %d when the checkpoint was written (data or batch size changed)",
            epoch_length,
            state["epoch_length"],
        )
    trainer.state.epoch = epoch
    trainer.state.iteration = epoch * epoch_length  # ignite resumes at an epoch boundary
    record.load_state_dict(state)
    record.rows = [
        r for r in read_metrics_csv(run_dir / "metrics.csv") if r.get("epoch") and r["epoch"] <= epoch
    ]
    ranks = (checkpoint.get("rng") or {}).get("ranks") or []
    if len(ranks) == context.world_size:
        set_rng_state(ranks[context.rank])
    else:
        log.warning(
            "checkpoint written by %d process(es), resumed by %d: RNG states re-seeded",
            len(ranks),
            context.world_size,
        )
        seed_everything(int(checkpoint.get("seed", 0)) + epoch * 1000 + context.rank)
    log.info("resumed at epoch %d, iteration %d", epoch, iteration)
