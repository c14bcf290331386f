"""Handlers of the training loop itself: per-epoch data seeding (:class:`EpochSeeding`), gradient-norm clipping
(:class:`GradientClipping`), and the learning rate and mean loss of each epoch (:class:`TrainStats`)."""

from __future__ import annotations

import time
from typing import Any, cast

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents

from pe_segmentation.training.handlers.run_state import RunRecord


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
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: SupervisedTrainer) -> None:
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None:
            scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)


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
        output = cast("dict[str, torch.Tensor]", engine.state.output)  # ignite types it as int | None
        loss = output["loss"].detach().float()
        self._sum = loss if self._sum is None else self._sum + loss
        self._count += 1

    def epoch_completed(self, engine: Engine) -> None:
        # MONAI's workflows add `device` to ignite's State, whose class does not declare it
        state: Any = engine.state
        device = state.device
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        if self._sum is not None:
            totals[0] = self._sum.to(device=device, dtype=torch.float64)
            totals[1] = self._count
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        self.record.train_loss = float(totals[0] / totals[1]) if totals[1] > 0 else None
