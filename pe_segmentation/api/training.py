"""``train``: a training run from a recipe, what ``pe-seg train`` and the bundle's trainer run; and a run's
curves redrawn (``pe-seg evaluate --run``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pe_segmentation.config import Config, apply_overrides, load_config
from pe_segmentation.errors import InputDataError
from pe_segmentation.training import TrainingResult, removed_if_refused, resume_config, run_training
from pe_segmentation.training.curves import metric_columns, plot_training_curves

log = logging.getLogger(__name__)

#: A run folder's metrics table and the curves drawn from it.
RUN_METRICS = "metrics.csv"
RUN_CURVES = "curves.png"


def dataset_overrides(path: str | os.PathLike[str]) -> list[str]:
    """The config overrides that point a run at a data set: its path, and its layout guessed from what it is (a
    datalist ``.json``, a ``pe-seg synth`` folder, else an ``images/`` + ``labels/`` folder); ``data.dataset``
    can still be set after these."""
    candidate = Path(path)
    if candidate.suffix.lower() == ".json":
        kind = "datalist"
    elif (candidate / "datalist.json").is_file():
        kind = "synthetic"
    else:
        kind = "folder"
    return [f"data.path={path}", f"data.dataset={kind}"]


def training_config(
    recipe: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    resume: str | os.PathLike[str] | None = None,
) -> Config:
    """A run's config: the recipe YAML (defaults when ``None``; for ``resume`` without a recipe, the run's own
    saved config), then ``overrides`` (``SECTION.KEY=VALUE``, last wins).

    Raises:
        ConfigError: an unreadable recipe, an unknown key or a bad value (named with its key path).
    """
    if recipe is None and resume is not None:
        return Config.from_dict(apply_overrides(resume_config(resume).to_dict(), list(overrides)))
    return load_config(recipe, list(overrides))


def train(
    config: Config | str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    resume: str | os.PathLike[str] | None = None,
    init_weights: str | os.PathLike[str] | None = None,
    progress: bool = False,
    handlers: Sequence[Any] = (),
) -> TrainingResult:
    """Train a network: MONAI's SupervisedTrainer with validation, warmup LR, TensorBoard, atomic checkpoints,
    resume and DDP, into the run folder ``output.run_dir``.

    A new run refused for its data, config or checkpoint before its first checkpoint leaves no run folder behind.

    Args:
        config: a :class:`~pe_segmentation.config.Config`, or a recipe YAML (``configs/unet.yaml``); ``None``:
            the defaults, or with ``resume`` the run's own config.
        overrides: ``SECTION.KEY=VALUE`` overrides applied on top (as ``pe-seg train --set``).
        resume: continue a run: its folder or one of its checkpoints.
        init_weights: start from these weights only (fine-tuning).
        progress: a progress bar per epoch (log lines otherwise).
        handlers: further ignite handlers (``attach(engine)``) for the trainer.

    Returns:
        The run's result (``run_dir``, best Dice and epoch, checkpoints), on every rank of a distributed run.

    Raises:
        ConfigError, CheckpointError, InputDataError: the one-line reason the run cannot go on.
    """
    if isinstance(config, Config):
        if overrides:
            config = Config.from_dict(apply_overrides(config.to_dict(), list(overrides)))
    else:
        config = training_config(config, overrides, resume)
    new_folder = None if resume is not None else Path(config.output.run_dir).expanduser()
    with removed_if_refused(new_folder):
        result = run_training(
            config, resume=resume, init_weights=init_weights, progress=progress, handlers=list(handlers)
        )
    log.info("run folder: %s", result.run_dir)
    if result.best_dice is not None:
        log.info("best validation Dice %.4f at epoch %d", result.best_dice, result.best_epoch)
    return result


def plot_training_run(run_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Redraw ``curves.png`` of a training run from its ``metrics.csv`` (into ``output`` when given) and log its
    best validation Dice.

    Raises:
        InputDataError: no such run folder, or no ``metrics.csv`` in it.
    """
    run_dir = Path(run_dir)
    csv_path = run_dir / RUN_METRICS
    if not run_dir.is_dir():
        raise InputDataError(f"{run_dir}: training run folder not found")
    if not csv_path.is_file():
        raise InputDataError(f"{run_dir}: no {RUN_METRICS} (is this a training run folder?)")
    png = plot_training_curves(csv_path, Path(output or run_dir) / RUN_CURVES)
    columns = metric_columns(csv_path)
    dice = columns.get("val_dice")
    if dice is not None and np.isfinite(dice).any():
        best = int(np.nanargmax(dice))
        epoch = columns.get("epoch")
        where = (
            f"epoch {int(epoch[best])}"
            if epoch is not None and np.isfinite(epoch[best])
            else f"row {best + 1}"
        )
        log.info("best validation Dice %.4f at %s", dice[best], where)
    log.info("wrote %s", png)
    return png
