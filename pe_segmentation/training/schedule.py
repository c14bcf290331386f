"""Learning-rate schedule: linear warmup, then cosine, polynomial or constant decay, stepped per iteration.

With base rate ``lr``, ``W`` warmup iterations and ``T`` iterations in all, the rate used by the optimizer step
of (0-based) iteration ``i`` is::

    i <  W:  lr * (f + (1 - f) * i / W)                         f = schedule.warmup_start_factor (0.1: lr/10)
    i >= W:  p = (i - W) / (T - W)
             cosine:   min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2
             poly:     min_lr + (lr - min_lr) * (1 - p) ** poly_power
             constant: lr

:func:`lr_at` is that formula; :class:`WarmupDecayLR` applies it as a ``torch.optim.lr_scheduler.LRScheduler``,
whose ``state_dict`` (iteration counter and base rates: plain numbers) restores the exact curve on resume.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from pe_segmentation.config import DECAYS, ScheduleConfig
from pe_segmentation.errors import ConfigError


def lr_at(
    iteration: int,
    *,
    base_lr: float,
    total_iterations: int,
    warmup_iterations: int = 0,
    warmup_start_factor: float = 0.1,
    decay: str = "cosine",
    min_lr: float = 0.0,
    poly_power: float = 0.9,
) -> float:
    """The learning rate of 0-based ``iteration`` (see the module docstring).

    Iterations past ``total_iterations`` keep the final rate.
    """
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {', '.join(DECAYS)}, got {decay!r}")
    iteration = max(0, int(iteration))
    if iteration < warmup_iterations:
        factor = warmup_start_factor + (1.0 - warmup_start_factor) * iteration / warmup_iterations
        return base_lr * factor
    if decay == "constant":
        return base_lr
    span = max(1, total_iterations - warmup_iterations)
    progress = min(1.0, (iteration - warmup_iterations) / span)
    if decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = (1.0 - progress) ** poly_power
    return min_lr + (base_lr - min_lr) * shape


def warmup_iterations(warmup_epochs: float, iterations_per_epoch: int, total_iterations: int) -> int:
    """Warmup length in iterations: ``warmup_epochs`` (may be fractional) worth, at most the whole run."""
    return min(total_iterations, round(warmup_epochs * iterations_per_epoch))


class WarmupDecayLR(LRScheduler):
    """Per-iteration warmup + decay scheduler (call :meth:`step` after every optimizer step).

    Every parameter group follows the curve scaled to its own initial rate.

    Args:
        optimizer: the optimizer whose groups' ``lr`` it sets.
        total_iterations: iterations of the whole run (epochs x iterations per epoch).
        warmup_iterations: linear-warmup iterations.
        warmup_start_factor: the first iteration's rate as a fraction of the base rate.
        decay: ``cosine``, ``poly`` or ``constant``.
        min_lr: the rate reached at the end of a cosine or polynomial decay.
        poly_power: exponent of the polynomial decay.
        last_epoch: index of the last iteration done (``-1``: a fresh start); ``LRScheduler`` calls it epoch.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_iterations: int,
        warmup_iterations: int = 0,
        warmup_start_factor: float = 0.1,
        decay: str = "cosine",
        min_lr: float = 0.0,
        poly_power: float = 0.9,
        last_epoch: int = -1,
    ) -> None:
        if (
            isinstance(total_iterations, bool)
            or not isinstance(total_iterations, int)
            or total_iterations < 1
        ):
            raise ValueError(f"total_iterations must be an integer >= 1, got {total_iterations!r}")
        if not 0 <= warmup_iterations <= total_iterations:
            raise ValueError(
                f"warmup_iterations must be within [0, {total_iterations}], got {warmup_iterations!r}"
            )
        if not 0.0 <= warmup_start_factor <= 1.0:
            raise ValueError(f"warmup_start_factor must be within [0, 1], got {warmup_start_factor!r}")
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {', '.join(DECAYS)}, got {decay!r}")
        if min_lr < 0 or poly_power <= 0:
            raise ValueError(f"min_lr must be >= 0 and poly_power > 0, got {min_lr!r}, {poly_power!r}")
        self.total_iterations = int(total_iterations)
        self.warmup_iterations = int(warmup_iterations)
        self.warmup_start_factor = float(warmup_start_factor)
        self.decay = decay
        self.min_lr = float(min_lr)
        self.poly_power = float(poly_power)
        super().__init__(optimizer, last_epoch)

    def lr_for(self, iteration: int, base_lr: float) -> float:
        """:func:`lr_at` with this scheduler's settings."""
        return lr_at(
            iteration,
            base_lr=base_lr,
            total_iterations=self.total_iterations,
            warmup_iterations=self.warmup_iterations,
            warmup_start_factor=self.warmup_start_factor,
            decay=self.decay,
            min_lr=self.min_lr,
            poly_power=self.poly_power,
        )

    def get_lr(
        self,
    ) -> list[float | torch.Tensor]:  # closed form of the iteration counter: no drift, exact on resume
        return [self.lr_for(self.last_epoch, float(base)) for base in self.base_lrs]

    #: Settings of the curve, which come from the run's config rather than from a saved state.
    CURVE_KEYS = (
        "total_iterations",
        "warmup_iterations",
        "warmup_start_factor",
        "decay",
        "min_lr",
        "poly_power",
    )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the iteration counter and base rates; keep this scheduler's curve settings.

        With an unchanged config the curve is the saved one and the rates continue exactly; a resumed run whose
        ``training.epochs`` was raised follows the longer curve from the saved iteration on.
        """
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in self.CURVE_KEYS})
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: ScheduleConfig, epochs: int, iterations_per_epoch: int
) -> WarmupDecayLR:
    """The scheduler of a run from its ``schedule`` section.

    Raises:
        ConfigError: ``schedule.min_lr`` above a group's base rate (the "decay" would raise the rate).
    """
    if iterations_per_epoch < 1 or epochs < 1:
        raise ValueError(f"need epochs and iterations_per_epoch >= 1, got {epochs}, {iterations_per_epoch}")
    base = min(float(group["lr"]) for group in optimizer.param_groups)
    if schedule.decay != "constant" and schedule.min_lr > base:
        raise ConfigError(f"schedule.min_lr ({schedule.min_lr:g}) must not exceed optimizer.lr ({base:g})")
    total = epochs * iterations_per_epoch
    return WarmupDecayLR(
        optimizer,
        total_iterations=total,
        warmup_iterations=warmup_iterations(schedule.warmup_epochs, iterations_per_epoch, total),
        warmup_start_factor=schedule.warmup_start_factor,
        decay=schedule.decay,
        min_lr=schedule.min_lr,
        poly_power=schedule.poly_power,
    )
