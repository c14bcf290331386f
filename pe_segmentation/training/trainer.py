"""Training of a pe-seg run: MONAI ``SupervisedTrainer`` + ``SupervisedEvaluator`` built from a :class:`Config`.

:func:`run_training` is the whole job (what ``pe-seg train`` calls); :func:`build_trainer` and
:func:`build_evaluator` are its engine builders, reusable on their own.

Run folder (``output.run_dir``; with ``resume``, the folder of the checkpoint)::

    config.yaml                 the resolved config of the run
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

import contextlib
import logging
import os
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from ignite.engine import Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import LrScheduleHandler, ValidationHandler
from monai.inferers import SimpleInferer

from pe_segmentation.config import Config, config_to_yaml
from pe_segmentation.data.splits import Split, get_or_create_split, load_split
from pe_segmentation.errors import CheckpointError, ConfigError
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.losses import DeepSupervisionLoss, build_loss
from pe_segmentation.networks import build_network
from pe_segmentation.runtime import distributed as ddp
from pe_segmentation.runtime.allocator import keep_freed_memory
from pe_segmentation.runtime.checkpoint import (
    find_resume_checkpoint,
    load_checkpoint,
    load_model_weights,
    run_dir_of_checkpoint,
    set_rng_state,
    unwrap_model,
)
from pe_segmentation.runtime.inferer import AutocastInferer, build_inferer
from pe_segmentation.runtime.precision import Precision, resolve_precision, select_device
from pe_segmentation.training.curves import read_metrics_csv
from pe_segmentation.training.data import PatchBatches, build_train_batches, build_val_loader, load_cases
from pe_segmentation.training.handlers import (
    CheckpointWriter,
    EarlyStop,
    EpochSeeding,
    GradientClipping,
    MetricsLogger,
    RunRecord,
    TrainStats,
    ValidationImages,
    ValidationTracker,
    attach_progress,
)
from pe_segmentation.training.metrics import metric_handlers, validation_postprocessing
from pe_segmentation.training.schedule import build_scheduler

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


# ----------------------------------------------------------------------------------------------- components


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA).

    Not MONAI's ``set_determinism``: it also forces ``cudnn.deterministic`` and turns off cuDNN's autotuner,
    which slows 3D convolutions on GPUs; the CPU repeatability pe-seg promises needs only the seeds.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(config: Config) -> nn.Module:
    """The network of ``config.model`` (random weights)."""
    return build_network(config.model.name, **dict(config.model.params))


def build_loss_function(config: Config) -> nn.Module:
    """The loss of ``config.loss``, wrapped for deep supervision when the loss or the network asks for it."""
    loss = build_loss(config.loss.name, **dict(config.loss.params))
    if config.loss.deep_supervision or config.model.params.get("deep_supervision"):
        return DeepSupervisionLoss(loss)
    return loss


def build_optimizer(config: Config, parameters: Any) -> torch.optim.Optimizer:
    """Adam (betas from the config, 0.9/0.999 by default, as the original project), AdamW, or SGD with
    Nesterov momentum (``optimizer.momentum``, 0.99 by default as nnU-Net)."""
    opt = config.optimizer
    if opt.name == "adam":
        return torch.optim.Adam(parameters, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
    if opt.name == "adamw":
        return torch.optim.AdamW(parameters, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
    return torch.optim.SGD(
        parameters, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, nesterov=opt.momentum > 0
    )


def _memory_format(config: Config) -> torch.memory_format | None:
    if not config.training.channels_last:
        return None
    return torch.channels_last_3d if config.patch.spatial_dims == 3 else torch.channels_last


def build_trainer(
    config: Config,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_function: nn.Module,
    train_data: PatchBatches | Any,
    device: torch.device,
    precision: Precision,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    handlers: Sequence[Any] = (),
) -> SupervisedTrainer:
    """A MONAI ``SupervisedTrainer`` for ``config.training.epochs`` epochs over ``train_data``.

    Attaches, in this order: per-epoch data seeding (when ``train_data`` has ``set_epoch``), gradient clipping
    (``training.grad_clip``), the per-iteration LR scheduler step, then ``handlers``.

    Args:
        config: the run config.
        network: the network (DDP-wrapped under DDP), on ``device``.
        optimizer: its optimizer.
        loss_function: ``loss(pred, label)``.
        train_data: iterable of ``{"image", "label"}`` batches with a length.
        device: the training device.
        precision: from :func:`~pe_segmentation.runtime.precision.resolve_precision`.
        scheduler: stepped after every iteration.
        handlers: further handlers with ``attach(engine)``.
    """
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=config.training.epochs,
        train_data_loader=train_data,
        network=network,
        optimizer=optimizer,
        loss_function=loss_function,
        epoch_length=len(train_data),
        non_blocking=device.type == "cuda",
        inferer=AutocastInferer(SimpleInferer(), precision, _memory_format(config)),
        amp=precision.needs_grad_scaler,  # MONAI's fp16 path: CUDA autocast + GradScaler
        amp_kwargs={"dtype": torch.float16} if precision.needs_grad_scaler else None,
        decollate=False,  # training needs no per-sample outputs: skip the per-iteration decollation cost
        optim_set_to_none=True,
    )
    if precision.needs_grad_scaler:
        trainer.scaler = torch.amp.GradScaler("cuda")  # MONAI still builds the deprecated torch.cuda.amp one
    if hasattr(train_data, "set_epoch"):
        EpochSeeding(train_data).attach(trainer)
    if config.training.grad_clip > 0:
        GradientClipping(config.training.grad_clip).attach(trainer)
    if scheduler is not None:
        LrScheduleHandler(scheduler, print_lr=False, epoch_level=False).attach(trainer)
    for handler in handlers:
        handler.attach(trainer)
    return trainer


def build_evaluator(
    config: Config,
    network: nn.Module,
    val_loader: Any,
    device: torch.device,
    precision: Precision,
    handlers: Sequence[Any] = (),
) -> SupervisedEvaluator:
    """A MONAI ``SupervisedEvaluator``: sliding-window inference on whole validation volumes (slice by slice
    for 2D networks), arg-max / threshold post-processing and the foreground metrics of
    :mod:`pe_segmentation.training.metrics` (``evaluator.state.metrics["val_dice"]`` ...).

    Args:
        network: the (unwrapped) network.
        val_loader: whole-volume batches of ``{"image", "label"}``.
        handlers: further handlers with ``attach(engine)``.
    """
    out_channels = int(config.model.params.get("out_channels", 2))
    key_metric, extra_metrics = metric_handlers(out_channels)
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=val_loader,
        network=network,
        non_blocking=device.type == "cuda",
        inferer=AutocastInferer(build_inferer(config), precision, _memory_format(config)),
        postprocessing=validation_postprocessing(out_channels, config.inference.threshold),
        key_val_metric=key_metric,
        additional_metrics=extra_metrics,
        amp=False,  # autocast comes from the inferer, on CPUs too
    )
    for handler in handlers:
        handler.attach(evaluator)
    return evaluator


# ----------------------------------------------------------------------------------------------- run helpers


def resume_config(run_dir_or_checkpoint: str | os.PathLike[str]) -> Config:
    """The config a run was started with (from its resume checkpoint), e.g. to resume without a config file."""
    path = find_resume_checkpoint(run_dir_or_checkpoint)
    data = load_checkpoint(path).get("config")
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: holds no run config")
    try:
        return Config.from_dict(data)
    except ConfigError as err:
        raise CheckpointError(f"{path}: its config is not valid with this pe-seg version ({err})") from None


def _config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


class _LoggingSetup(contextlib.AbstractContextManager):
    """During a run: ``train.log`` in the run folder (rank 0) at INFO whatever the console shows; a console
    handler when the application configured none; other ranks quiet down to warnings."""

    def __init__(self, run_dir: Path | None, main: bool) -> None:
        self.run_dir = run_dir
        self.main = main
        self.logger = logging.getLogger("pe_segmentation")
        self._added: list[logging.Handler] = []
        self._levels: list[tuple[logging.Handler, int]] = []
        self._level = self.logger.level

    def __enter__(self) -> _LoggingSetup:
        logger = self.logger
        if not self.main:
            logger.setLevel(logging.WARNING)
            return self
        effective = logger.getEffectiveLevel()
        if not logger.hasHandlers():
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(logging.Formatter("%(message)s"))
            console.setLevel(logging.INFO)
            self._add(console)
        elif effective > logging.INFO:
            for handler in logger.handlers:  # keep the console as quiet as it was while the file gets INFO
                if handler.level == logging.NOTSET:
                    self._levels.append((handler, handler.level))
                    handler.setLevel(effective)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            file = logging.FileHandler(self.run_dir / "train.log", encoding="utf-8")
            file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            file.setLevel(logging.INFO)
            self._add(file)
        if effective > logging.INFO:
            logger.setLevel(logging.INFO)
        return self

    def _add(self, handler: logging.Handler) -> None:
        self.logger.addHandler(handler)
        self._added.append(handler)

    def __exit__(self, *exc: object) -> None:
        for handler in self._added:
            self.logger.removeHandler(handler)
            handler.close()
        for handler, level in self._levels:
            handler.setLevel(level)
        self.logger.setLevel(self._level)


def _split(
    config: Config, items: list[dict[str, str]], run_dir: Path, context: ddp.DistributedContext
) -> Split | None:
    if config.data.val_fraction == 0:
        log.warning(
            "data.val_fraction is 0: training on all %d cases without validation (no best.pt)", len(items)
        )
        return None
    path = Path(config.data.split_file).expanduser() if config.data.split_file else run_dir / "split.json"
    if context.is_main:
        split = get_or_create_split(path, items, config.data.val_fraction, config.training.seed)
    ddp.barrier()
    if not context.is_main:
        split = load_split(path)
    if context.is_main and path != run_dir / "split.json":
        atomic_write_text(run_dir / "split.json", path.read_text(encoding="utf-8"))
    return split


def _result(run_dir: Path, record: RunRecord, epochs: int, iterations: int) -> TrainingResult:
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


@contextlib.contextmanager
def _summary_writer(run_dir: Path, enabled: bool, purge_step: int | None) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from torch.utils.tensorboard import SummaryWriter

    # purge_step: a resumed run drops events logged after its checkpoint by the interrupted one
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)
    try:
        yield writer
    finally:
        writer.close()


# ----------------------------------------------------------------------------------------------- the run


def run_training(
    config: Config,
    *,
    resume: str | os.PathLike[str] | None = None,
    init_weights: str | os.PathLike[str] | None = None,
    progress: bool = True,
    handlers: Sequence[Any] = (),
) -> TrainingResult:
    """Train a network as ``config`` describes and write the run folder (see the module docstring).

    With ``training.distributed: true`` outside a launcher, one process per visible GPU is started
    (:func:`train_distributed`); under ``torchrun`` each process runs this function.

    Args:
        config: the run config.
        resume: a run folder or checkpoint to continue exactly where it stopped (same epoch and iteration
            counters, same LR curve, optimizer and RNG states); the run continues in that checkpoint's folder.
            ``training.epochs`` may be raised to train longer (the LR curve then follows the new length).
        init_weights: a checkpoint whose network weights start this run (fine-tuning): optimizer, schedule and
            counters start afresh.
        progress: show per-iteration progress (a bar on a terminal, log lines otherwise); epoch summaries are
            logged either way.
        handlers: extra handlers (``attach(trainer)``), attached after pe-seg's own (not passed to processes
            started for ``training.distributed``).

    Returns:
        The :class:`TrainingResult` (on every rank).

    Raises:
        ConfigError: invalid settings (device, precision, no data path, a run folder that already holds a run).
        CheckpointError: an unreadable checkpoint, or one of another architecture.
        InputDataError: unreadable cases.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a pe_segmentation Config, got {type(config).__name__}")
    if resume is not None and init_weights is not None:
        raise ConfigError(
            "resume and init weights (--checkpoint) exclude each other: resume already restores weights"
        )
    if config.training.distributed and not ddp.under_launcher():
        count = torch.cuda.device_count()
        if count > 1:
            if handlers:
                log.warning("extra handlers are not passed to the %d training processes", count)
            return train_distributed(
                config, count, resume=resume, init_weights=init_weights, progress=progress
            )
        log.warning("training.distributed: %d GPU visible, training in one process", count)

    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if ddp.under_launcher() else None
    device = select_device(config.training.device, local_rank)
    context = ddp.init_distributed(use_cuda=device.type == "cuda")
    if device.type == "cpu":
        keep_freed_memory()
    if context.distributed and device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # processes sharing the CPU: split its cores (as torchrun's OMP_NUM_THREADS=1 default does, less bluntly)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", context.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))
    try:
        return _run(config, context, device, resume, init_weights, progress, handlers)
    finally:
        ddp.cleanup_distributed(context)


def _run(
    config: Config,
    context: ddp.DistributedContext,
    device: torch.device,
    resume: str | os.PathLike[str] | None,
    init_weights: str | os.PathLike[str] | None,
    progress: bool,
    extra_handlers: Sequence[Any],
) -> TrainingResult:
    checkpoint: dict[str, Any] | None = None
    if resume is not None:
        checkpoint_path = find_resume_checkpoint(resume)
        resume = checkpoint_path
        checkpoint = load_checkpoint(checkpoint_path)
        if "optimizer" not in checkpoint or "trainer" not in checkpoint:
            raise CheckpointError(f"{checkpoint_path}: holds weights only, not a training state to resume")
        run_dir = run_dir_of_checkpoint(checkpoint_path)
    else:
        run_dir = Path(config.output.run_dir).expanduser().resolve()
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise ConfigError(
                f"output.run_dir {run_dir} already holds a run (checkpoints/last.pt): resume it with "
                f"--resume {run_dir}, or choose another output.run_dir"
            )
    main = context.is_main
    with _LoggingSetup(run_dir, main):
        precision = resolve_precision(config.training.precision, device)
        log.info(
            "training %s in %s on %s (%s%s)",
            config.model.name,
            run_dir,
            device,
            precision.name,
            f", {context.world_size} processes over {context.backend}" if context.distributed else "",
        )
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if checkpoint is not None and isinstance(checkpoint.get("config"), Mapping):
                changed = _config_differences(checkpoint["config"], config.to_dict())
                if changed:
                    log.warning("resuming with a changed config: %s", ", ".join(changed))
            atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))

        # data
        cache_dir = run_dir / "cache"
        items = load_cases(config.data, cache_dir)
        split = _split(config, items, run_dir, context)
        train_items, val_items = split.select(items) if split is not None else (items, [])
        if not train_items:
            raise ConfigError("no training cases left after the train/validation split")
        pin = device.type == "cuda"
        train_data = build_train_batches(
            config, train_items, cache_dir, context.rank, context.world_size, pin
        )
        val_loader = (
            build_val_loader(config, val_items, cache_dir, context.rank, context.world_size, pin)
            if val_items
            else None
        )
        log.info(
            "%d training / %d validation cases; %d iterations per epoch of %d patches",
            len(train_items),
            len(val_items),
            len(train_data),
            config.training.batch_size,
        )

        # network, loss, optimizer, schedule
        seed = config.training.seed
        seed_everything(seed)  # the same initial weights on every rank and in every repeat
        model = build_model(config)
        if init_weights is not None:
            source = load_checkpoint(init_weights)
            load_model_weights(model, source, config.model.to_dict(), str(init_weights))
            log.info("initial weights from %s", init_weights)
        if checkpoint is not None:
            load_model_weights(model, checkpoint, config.model.to_dict(), str(resume))
        model = model.to(device)
        memory_format = _memory_format(config)
        if memory_format is not None:
            model = model.to(memory_format=memory_format)
        network: nn.Module = model
        if context.distributed:
            network = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        loss_function = build_loss_function(config).to(device)
        optimizer = build_optimizer(config, model.parameters())
        scheduler = build_scheduler(optimizer, config.schedule, config.training.epochs, len(train_data))

        record = RunRecord()
        with _summary_writer(
            run_dir,
            config.output.tensorboard and main,
            None if checkpoint is None else checkpoint["trainer"]["iteration"] + 1,
        ) as writer:
            evaluator = None
            if val_loader is not None:
                evaluator = build_evaluator(config, model, val_loader, device, precision)
            trainer = build_trainer(
                config,
                network,
                optimizer,
                loss_function,
                train_data,
                device,
                precision,
                scheduler=scheduler,
                handlers=[TrainStats(record, optimizer)],
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
            MetricsLogger(record, run_dir, writer, write=main).attach(trainer)

            def training_state(_: Any) -> dict[str, Any]:
                return {
                    "model": unwrap_model(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
                    "config": config.to_dict(),
                    "seed": seed,
                }

            checkpoints = CheckpointWriter(
                run_dir, record, training_state, config.output.checkpoint_every, write=main
            )
            checkpoints.attach(trainer)
            if config.training.early_stop_patience > 0 and evaluator is not None:
                EarlyStop(record, config.training.early_stop_patience).attach(trainer)
            if progress and main:
                attach_progress(trainer, evaluator)
            for handler in extra_handlers:
                handler.attach(trainer)

            if checkpoint is not None:
                _restore(checkpoint, trainer, optimizer, scheduler, record, context, run_dir, len(train_data))
                if trainer.state.epoch >= config.training.epochs:
                    log.info(
                        "nothing to do: the checkpoint is at epoch %d of %d (raise training.epochs to train longer)",
                        trainer.state.epoch,
                        config.training.epochs,
                    )
                    return _result(run_dir, record, trainer.state.epoch, trainer.state.iteration)
            else:
                seed_everything(seed + context.rank)
            trainer.run()
        return _result(run_dir, record, trainer.state.epoch, trainer.state.iteration)


def _restore(
    checkpoint: Mapping[str, Any],
    trainer: SupervisedTrainer,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    record: RunRecord,
    context: ddp.DistributedContext,
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


def _distributed_worker(
    config_data: dict[str, Any], resume: Any, init_weights: Any, progress: bool
) -> TrainingResult:
    return run_training(
        Config.from_dict(config_data), resume=resume, init_weights=init_weights, progress=progress
    )


def train_distributed(
    config: Config,
    nprocs: int,
    *,
    resume: str | os.PathLike[str] | None = None,
    init_weights: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> TrainingResult:
    """Start ``nprocs`` training processes (DDP) on this machine and return rank 0's result.

    One process per GPU on CUDA (NCCL); on a CPU-only machine the processes share the CPU (gloo), which is how
    DDP is tested without GPUs. This is what ``--parallel`` does.
    """
    if nprocs > 1 and torch.cuda.is_available() and nprocs > torch.cuda.device_count():
        raise ConfigError(
            f"{nprocs} processes asked for, but only {torch.cuda.device_count()} GPU(s) are visible"
        )
    if torch.cuda.is_available() is False and config.training.device.startswith("cuda"):
        raise ConfigError(f"training.device {config.training.device}: no CUDA GPU visible")
    log.info("starting %d training processes", nprocs)
    return ddp.launch(
        _distributed_worker,
        nprocs,
        config.to_dict(),
        None if resume is None else str(resume),
        None if init_weights is None else str(init_weights),
        progress,
    )
