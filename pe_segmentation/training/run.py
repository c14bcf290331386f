"""One process of a pe-seg training run (the whole run without DDP): :func:`train_in_process`, a short sequence
of named steps. :func:`~pe_segmentation.training.launch.run_training` is the whole job (what ``pe-seg train``
calls); the engines come from :mod:`pe_segmentation.training.engines`, reusable on their own.

Run folder (``output.run_dir``; with ``resume``, the folder of the checkpoint)::

    config.yaml                 the resolved config of the run (its spacing fixed: see run_spacing)
    split.json                  the train/validation split (reused when the run is resumed or repeated)
    metrics.csv                 one row per epoch: epoch, iteration, train_loss, lr, val_dice, val_iou,
                                val_sensitivity, val_specificity, val_precision, seconds (validation columns
                                empty in epochs without validation)
    curves.png                  loss, learning rate and validation metrics per epoch (after each validation)
    tensorboard/                events: train/loss and train/lr per iteration, train/epoch_loss and val/* per
                                epoch (step = iteration), val/image_label_prediction (one axial slice)
    checkpoints/best.pt         best validation Dice so far
    checkpoints/last.pt         end of the latest epoch (what ``resume`` continues from)
    checkpoints/epoch_0005.pt   every ``output.checkpoint_every`` epochs
    train.log                   the run's log lines (appended to on resume)
    cache/                      disk cache (``data.cache: disk``) and converted FUMPE masks

The loop, per iteration: patches to the device (channels-last when ``training.channels_last``), forward pass
under autocast (:mod:`pe_segmentation.runtime.precision`), loss in float32, backward (fp16: scaled), optional
gradient-norm clipping, optimizer step, learning-rate step (:mod:`pe_segmentation.training.schedule`). Per
epoch: validation every ``validation.every`` epochs and after the last epoch (sliding-window inference on whole
volumes; ``SliceInferer`` for 2D networks), metrics CSV / curves / TensorBoard, checkpoints, early stop.

Reproducibility: with the same seed, data and settings, a CPU run gives the same weights: the network is
initialised after seeding with ``training.seed``, each epoch's case order and random patches depend only on
``(seed, epoch, rank)`` (:mod:`pe_segmentation.training.data`), and the training RNGs start from
``seed + rank``. Resuming restores model, optimizer, scheduler, scaler, counters and every rank's RNG states
from ``last.pt``, so 1 epoch + resume + 1 epoch gives the weights of 2 epochs. On CUDA, cuDNN may pick
non-deterministic kernels, so GPU runs are close but not bitwise repeatable.

Distributed (DDP): see :mod:`pe_segmentation.runtime.distributed`. Each of N processes trains on its share
of the training volumes per epoch with ``training.batch_size`` patches per iteration (an effective batch of
N x batch_size), gradients are averaged over processes, validation cases are shared out and the metrics
gathered over all of them. Only rank 0 writes files. With a loss that is a mean over patches (Dice with
``batch: false``, cross-entropy) and per-sample normalisation (instance/group norm), N processes with batch B
follow the same trajectory as one process with batch N x B over the same patches, up to floating-point
summation order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from ignite.engine import Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import ValidationHandler

from pe_segmentation.config import Config, config_to_yaml
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.runtime.checkpoint import load_checkpoint, load_model_weights, unwrap_model
from pe_segmentation.runtime.distributed import DistributedContext
from pe_segmentation.runtime.memory_format import to_memory_format
from pe_segmentation.runtime.precision import Precision, resolve_precision
from pe_segmentation.training.builders import (
    build_loss_function,
    build_model,
    build_optimizer,
    memory_format_of,
    seed_everything,
)
from pe_segmentation.training.engines import build_evaluator, build_trainer
from pe_segmentation.training.handlers import (
    CheckpointWriter,
    EarlyStop,
    MetricsLogger,
    RunRecord,
    TrainStats,
    ValidationImages,
    ValidationTracker,
    attach_progress,
)
from pe_segmentation.training.resume import (
    ResumePoint,
    load_resume_point,
    restore_training_state,
    warn_on_changed_config,
)
from pe_segmentation.training.run_data import RunData, load_run_data
from pe_segmentation.training.run_folder import ensure_new_run_folder
from pe_segmentation.training.run_logging import RunLogging, summary_writer
from pe_segmentation.training.schedule import WarmupDecayLR, build_scheduler

log = logging.getLogger("pe_segmentation.training")


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced.

    Attributes:
        run_dir: the run folder.
        best_dice: best validation Dice (embolus class), ``None`` without validation.
        best_epoch: its epoch.
        epochs_run: the last epoch completed (epochs before a resume included).
        iterations: the trainer's iteration counter at the end.
        best_checkpoint: ``checkpoints/best.pt``, if written.
        last_checkpoint: ``checkpoints/last.pt``.
        metrics_csv: ``metrics.csv``.
        stopped_early: whether early stop ended the run.
    """

    run_dir: Path
    best_dice: float | None
    best_epoch: int | None
    epochs_run: int
    iterations: int
    best_checkpoint: Path | None
    last_checkpoint: Path
    metrics_csv: Path
    stopped_early: bool = False


@dataclass(frozen=True)
class _Run:
    """What stays fixed through one process's run: its config, place in the process group, device, precision
    and run folder."""

    config: Config
    context: DistributedContext
    device: torch.device
    precision: Precision
    run_dir: Path

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.context.is_main


@dataclass(frozen=True)
class _TrainingParts:
    """The network and what trains it.

    Attributes:
        model: the plain network (checkpoints, validation).
        network: what the trainer runs: ``model``, DDP-wrapped under DDP.
        loss_function: ``loss(pred, label)``, on the device.
        optimizer: the optimizer of ``model``'s parameters.
        scheduler: its per-iteration learning-rate schedule.
    """

    model: nn.Module
    network: nn.Module
    loss_function: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: WarmupDecayLR


def train_in_process(
    config: Config,
    context: DistributedContext,
    device: torch.device,
    resume: str | os.PathLike[str] | None,
    init_weights: str | os.PathLike[str] | None,
    progress: bool,
    extra_handlers: Sequence[Any],
) -> TrainingResult:
    """This process's part of the run (see the module docstring); the process group is already set up.

    Args:
        config: the run config.
        context: this process's place in the process group (one process: rank 0 of 1).
        device: the training device of this process.
        resume: a run folder or checkpoint to continue from, or ``None`` for a new run.
        init_weights: a checkpoint whose network weights start a new run (fine-tuning), or ``None``.
        progress: show per-iteration progress (rank 0).
        extra_handlers: handlers with ``attach(trainer)``, attached after pe-seg's own.

    Returns:
        The run's :class:`TrainingResult`.
    """
    point = None if resume is None else load_resume_point(resume)
    run_dir = _run_folder(config, point)
    with RunLogging(run_dir, context.is_main):
        run = _begin(config, context, device, run_dir)
        resumed = None if point is None else point.checkpoint
        data = load_run_data(config, run_dir, context, device.type == "cuda", resumed)
        run = _record_config(replace(run, config=data.config), point)
        parts = _build_parts(run, len(data.train_data), init_weights, point)
        record = RunRecord()
        purge_step = None if point is None else point.next_iteration
        with summary_writer(run_dir, config.output.tensorboard and run.main, purge_step) as writer:
            trainer, evaluator = _build_engines(run, data, parts, record, writer)
            _attach_outputs(run, data, trainer, evaluator, parts, record, writer, progress, extra_handlers)
            _continue_or_start(run, trainer, parts, record, point, len(data.train_data))
        return _result(run_dir, record, trainer.state.epoch, trainer.state.iteration)


def _run_folder(config: Config, point: ResumePoint | None) -> Path:
    """The run folder: the resumed checkpoint's, or ``output.run_dir`` for a new run, which must not already
    hold a run (its checkpoints would be overwritten)."""
    if point is not None:
        return point.run_dir
    run_dir = Path(config.output.run_dir).expanduser().resolve()
    ensure_new_run_folder(run_dir)
    return run_dir


def _begin(config: Config, context: DistributedContext, device: torch.device, run_dir: Path) -> _Run:
    """Resolve the precision, log what is trained where, and (rank 0) create the run folder."""
    precision = resolve_precision(config.training.precision, device)
    log.info(
        "training %s in %s on %s (%s%s)",
        config.model.name,
        run_dir,
        device,
        precision.name,
        f", {context.world_size} processes over {context.backend}" if context.distributed else "",
    )
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    return _Run(config, context, device, precision, run_dir)


def _record_config(run: _Run, point: ResumePoint | None) -> _Run:
    """(rank 0) Write the run's resolved config (its spacing fixed) as ``config.yaml``, warning about keys a
    resume changed: the folder then tells how it was made."""
    if run.main:
        if point is not None:
            warn_on_changed_config(point, run.config)
        atomic_write_text(run.run_dir / "config.yaml", config_to_yaml(run.config))
    return run


def _build_parts(
    run: _Run,
    iterations_per_epoch: int,
    init_weights: str | os.PathLike[str] | None,
    point: ResumePoint | None,
) -> _TrainingParts:
    """Build the network (seeded, so every rank and every repeat starts from the same weights), move it to the
    device and memory format, wrap it for DDP, and build the loss, optimizer and LR schedule."""
    config, device = run.config, run.device
    seed_everything(config.training.seed)  # the same initial weights on every rank and in every repeat
    model = _initial_model(config, init_weights, point).to(device)
    model = to_memory_format(model, memory_format_of(config))
    network: nn.Module = model
    if run.context.distributed:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    loss_function = build_loss_function(config).to(device)
    optimizer = build_optimizer(config, model.parameters())
    scheduler = build_scheduler(optimizer, config.schedule, config.training.epochs, iterations_per_epoch)
    return _TrainingParts(model, network, loss_function, optimizer, scheduler)


def _initial_model(
    config: Config, init_weights: str | os.PathLike[str] | None, point: ResumePoint | None
) -> nn.Module:
    """The network of ``config.model`` with the weights it starts from: random, ``init_weights``' (fine-tuning)
    or the resumed checkpoint's; a checkpoint of another architecture is refused."""
    model = build_model(config)
    if init_weights is not None:
        source = load_checkpoint(init_weights)
        load_model_weights(model, source, config.model.to_dict(), str(init_weights))
        log.info("initial weights from %s", init_weights)
    if point is not None:
        load_model_weights(model, point.checkpoint, config.model.to_dict(), str(point.path))
    return model


def _build_engines(
    run: _Run, data: RunData, parts: _TrainingParts, record: RunRecord, writer: Any
) -> tuple[SupervisedTrainer, SupervisedEvaluator | None]:
    """Build the evaluator (with validation cases) and the trainer, and have the trainer validate every
    ``validation.every`` epochs and after the last, tracking the best Dice (and a TensorBoard picture)."""
    config = run.config
    evaluator = None
    if data.val_loader is not None:
        evaluator = build_evaluator(config, parts.model, data.val_loader, run.device, run.precision)
    trainer = build_trainer(
        config,
        parts.network,
        parts.optimizer,
        parts.loss_function,
        data.train_data,
        run.device,
        run.precision,
        scheduler=parts.scheduler,
        handlers=[TrainStats(record, parts.optimizer)],
    )
    if evaluator is not None:
        ValidationTracker(record, trainer).attach(evaluator)
        if writer is not None:
            ValidationImages(writer, trainer).attach(evaluator)
        every, last = config.validation.every, config.training.epochs
        trainer.add_event_handler(
            Events.EPOCH_COMPLETED(event_filter=lambda _, epoch: epoch % every == 0 or epoch == last),
            ValidationHandler(interval=every, validator=evaluator),
        )
    return trainer, evaluator


def _attach_outputs(
    run: _Run,
    data: RunData,
    trainer: SupervisedTrainer,
    evaluator: SupervisedEvaluator | None,
    parts: _TrainingParts,
    record: RunRecord,
    writer: Any,
    progress: bool,
    extra_handlers: Sequence[Any],
) -> None:
    """Attach, after validation and in this order, what each epoch ends with: metrics CSV / curves /
    TensorBoard, checkpoints, early stop (which so sees the epoch's checkpoints written); then progress output
    and the caller's handlers."""
    config = run.config
    MetricsLogger(record, run.run_dir, writer, write=run.main).attach(trainer)
    state = _checkpoint_state(config, data.spacing, parts, trainer)
    CheckpointWriter(run.run_dir, record, state, config.output.checkpoint_every, write=run.main).attach(
        trainer
    )
    if config.training.early_stop_patience > 0 and evaluator is not None:
        EarlyStop(record, config.training.early_stop_patience).attach(trainer)
    if progress and run.main:
        attach_progress(trainer, evaluator)
    for handler in extra_handlers:
        handler.attach(trainer)


def _checkpoint_state(
    config: Config, spacing: dict[str, Any], parts: _TrainingParts, trainer: SupervisedTrainer
) -> Callable[[Any], dict[str, Any]]:
    """What each checkpoint holds besides the counters and records the checkpoint writer adds: weights,
    optimizer, scheduler and scaler states, the config and the seed (all a resume needs), and how the
    config's spacing was chosen (:data:`~pe_segmentation.training.run_spacing.SPACING_KEY`)."""
    seed = config.training.seed

    def training_state(_: Any) -> dict[str, Any]:
        return {
            "model": unwrap_model(parts.model).state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
            "config": config.to_dict(),
            "spacing": spacing,
            "seed": seed,
        }

    return training_state


def _continue_or_start(
    run: _Run,
    trainer: SupervisedTrainer,
    parts: _TrainingParts,
    record: RunRecord,
    point: ResumePoint | None,
    epoch_length: int,
) -> None:
    """Train: a resumed run first gets its training state back (and has nothing to do when already at
    ``training.epochs``); a new run seeds its training RNGs with ``seed + rank``, so ranks draw differently."""
    if point is not None:
        restore_training_state(
            point.checkpoint,
            trainer,
            parts.optimizer,
            parts.scheduler,
            record,
            run.context,
            run.run_dir,
            epoch_length,
        )
        if trainer.state.epoch >= run.config.training.epochs:
            log.info(
                "nothing to do: the checkpoint is at epoch %d of %d (raise training.epochs to train longer)",
                trainer.state.epoch,
                run.config.training.epochs,
            )
            return
    else:
        seed_everything(run.config.training.seed + run.context.rank)
    trainer.run()


def _result(run_dir: Path, record: RunRecord, epochs: int, iterations: int) -> TrainingResult:
    """The :class:`TrainingResult` of the run as ``record`` and the trainer's counters leave it."""
    best = run_dir / "checkpoints" / "best.pt"
    return TrainingResult(
        run_dir=run_dir,
        best_dice=record.best_dice,
        best_epoch=record.best_epoch,
        epochs_run=epochs,
        iterations=iterations,
        best_checkpoint=best if best.is_file() else None,
        last_checkpoint=run_dir / "checkpoints" / "last.pt",
        metrics_csv=run_dir / "metrics.csv",
        stopped_early=record.stopped_early,
    )
