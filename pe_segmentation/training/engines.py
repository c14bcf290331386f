"""The engines of a run: MONAI's ``SupervisedTrainer`` (:func:`build_trainer`) and ``SupervisedEvaluator``
(:func:`build_evaluator`), built from a :class:`~pe_segmentation.config.Config` and reusable on their own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import LrScheduleHandler
from monai.inferers import SimpleInferer

from pe_segmentation.config import Config
from pe_segmentation.runtime.inferer import AutocastInferer, build_inferer
from pe_segmentation.runtime.precision import Precision
from pe_segmentation.training.builders import memory_format_of
from pe_segmentation.training.data import PatchBatches
from pe_segmentation.training.handlers import EpochSeeding, GradientClipping
from pe_segmentation.training.metrics import metric_handlers, validation_postprocessing


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
        inferer=AutocastInferer(SimpleInferer(), precision, memory_format_of(config)),
        amp=precision.needs_grad_scaler,  # MONAI's fp16 path: CUDA autocast + GradScaler
        amp_kwargs={"dtype": torch.float16} if precision.needs_grad_scaler else None,
        decollate=False,  # training needs no per-sample outputs: skip the per-iteration decollation cost
        optim_set_to_none=True,
    )
    if precision.needs_grad_scaler:
        # MONAI still builds (and annotates) the deprecated torch.cuda.amp one, a subclass of this one
        trainer.scaler = torch.amp.GradScaler("cuda")  # type: ignore[assignment]
    if hasattr(train_data, "set_epoch"):
        EpochSeeding(train_data).attach(trainer)
    if config.training.grad_clip > 0:
        GradientClipping(config.training.grad_clip).attach(trainer)
    if scheduler is not None:
        # MONAI annotates torch's pre-2.0 _LRScheduler; it steps any LRScheduler
        LrScheduleHandler(scheduler, print_lr=False, epoch_level=False).attach(trainer)  # type: ignore[arg-type]
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
        inferer=AutocastInferer(build_inferer(config), precision, memory_format_of(config)),
        postprocessing=validation_postprocessing(out_channels, config.inference.threshold),
        key_val_metric=key_metric,
        additional_metrics=extra_metrics,
        amp=False,  # autocast comes from the inferer, on CPUs too
    )
    for handler in handlers:
        handler.attach(evaluator)
    return evaluator
