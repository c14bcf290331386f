"""The memory budget of a predictor (``--memory-budget``): a window batch and stitching per case, or a refusal
before the heavy work.

:class:`MemoryGuard` measures once what one window costs the network (in the process's own memory when the
network runs on the CPU; on a GPU that memory is the GPU's), and refuses at once a budget that cannot hold even
one window. Per case it refuses, in one line and with exit code 7 (:class:`~pe_segmentation.errors.
MemoryBudgetError`), a CT whose preprocessing would not fit (checked when the CT is read), and before the
network runs it picks the largest window batch and the most exact stitching whose peak fits
(:func:`~pe_segmentation.runtime.memory_budget.plan_memory`). Each check first hands the memory freed so far back
to the system (:func:`~pe_segmentation.runtime.allocator.release_freed_memory`) and starts from what the
process holds then, so the libraries, the weights and the CT as read are measured, not guessed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pe_segmentation.errors import MemoryBudgetError
from pe_segmentation.inference.preprocessing import SLAB_PLANES
from pe_segmentation.io.volume import Volume
from pe_segmentation.runtime.allocator import release_freed_memory
from pe_segmentation.runtime.memory_budget import (
    MemoryEstimate,
    MemoryPlan,
    budget_bytes,
    gib,
    network_stage_bytes,
    plan_memory,
    postprocess_stage_bytes,
    preprocess_stage_bytes,
    process_rss_bytes,
)
from pe_segmentation.runtime.window_memory import WindowActivation, measure_window_activation

log = logging.getLogger(__name__)


class MemoryGuard:
    """Keeps a predictor's cases under a memory budget.

    Args:
        budget_gb: the budget in GB (2^30 bytes) of the process's peak resident memory; ``None``: what it holds
            plus what the machine has available, less a margin (recomputed per case).
        activation: what one window costs the network in host memory (``None``: the network runs on a GPU).
        roi_size: the sliding window.
        max_batch: the window batch wanted.
        channels: channels stitched per voxel.
        in_channels: the network's input channels.
        slab_stitching: the stitcher keeps one slab of sums (3D); ``False``: MONAI's whole-volume buffers (2D).
    """

    def __init__(
        self,
        budget_gb: float | None,
        activation: WindowActivation | None,
        roi_size: Sequence[int],
        max_batch: int,
        channels: int = 1,
        in_channels: int = 1,
        slab_stitching: bool = True,
    ) -> None:
        budget_bytes(budget_gb)  # a bad value is refused here, before anything runs
        self.budget_gb = budget_gb
        self.activation = activation
        self.roi_size = tuple(int(r) for r in roi_size)
        self.max_batch = int(max_batch)
        self.channels = int(channels)
        self.in_channels = int(in_channels)
        self.slab_stitching = slab_stitching

    @classmethod
    def for_network(
        cls,
        budget_gb: float | None,
        call: Callable[[torch.Tensor], Any],
        device: torch.device,
        roi_size: Sequence[int],
        max_batch: int,
        in_channels: int = 1,
        slab_stitching: bool = True,
    ) -> MemoryGuard:
        """Measure the network's cost per window (``call``: one batch as the inferer runs it) and refuse a budget
        that cannot hold one window.

        Raises:
            MemoryBudgetError: the budget is below what the process holds plus one window.
            ConfigError: a budget that is not a positive number.
        """
        activation = None
        if device.type == "cpu":
            activation = measure_window_activation(call, in_channels, roi_size, device)
        guard = cls(budget_gb, activation, roi_size, max_batch, 1, in_channels, slab_stitching)
        guard.check_network()
        return guard

    def budget(self) -> int:
        """The budget now, in bytes."""
        return budget_bytes(self.budget_gb)

    def _held(self) -> int:
        release_freed_memory()
        return process_rss_bytes()

    def check_network(self) -> None:
        """Refuse a budget that cannot hold what the process holds now plus one window of the network."""
        held, budget = self._held(), self.budget()
        one = network_stage_bytes((1, 1, 1), self.roi_size, self.channels, self.activation, 1)
        one = MemoryEstimate(
            one.stage, {k: v for k, v in one.parts.items() if k in ("activations", "window batch")}
        )
        if held + one.total > budget:
            raise MemoryBudgetError(
                f"memory budget {gib(budget)} is too small for this network: the process holds {gib(held)} and "
                f"one {'x'.join(map(str, self.roi_size))} window takes about {gib(one.total)} more; raise "
                "--memory-budget or free memory"
            )

    def check_preprocess(self, volume: Volume, spacing: Sequence[float]) -> None:
        """Refuse a CT whose preprocessing onto the network grid (``spacing``, mm) would not fit.

        Raises:
            MemoryBudgetError: naming the CT and what it needs.
        """
        self.check_estimate(volume, preprocess_estimate(volume, spacing))

    def check_estimate(self, volume: Volume, estimate: MemoryEstimate) -> None:
        """Refuse a CT whose preprocessing needs ``estimate`` (another kind of model's own figures) on top of
        what the process holds now.

        Raises:
            MemoryBudgetError: naming the CT and what it needs.
        """
        held, budget = self._held(), self.budget()
        if held + estimate.total > budget:
            source = volume.metadata.get("source") or "input"
            raise MemoryBudgetError(
                f"{source}: memory budget {gib(budget)} is too small: preprocessing this "
                f"{'x'.join(map(str, volume.shape))} CT needs about {gib(held + estimate.total)} "
                f"({gib(held)} held, largest part: {estimate.largest()}); raise --memory-budget or free memory"
            )

    def plan(self, grid_shape: Sequence[int], image_shape: Sequence[int], source: str) -> MemoryPlan:
        """The window batch and stitching of a case on ``grid_shape`` (the network grid) whose peak fits.

        Raises:
            MemoryBudgetError: not even one window at a time with float16 stitching fits.
        """
        held, budget = self._held(), self.budget()
        plan = plan_memory(held, budget, self.max_batch, self.stages(grid_shape, image_shape), what=source)
        log.debug("%s: %s", source, plan.describe())
        return plan

    def stages(
        self, grid_shape: Sequence[int], image_shape: Sequence[int]
    ) -> Callable[[int, torch.dtype], list[MemoryEstimate]]:
        """The estimates of the network and post-processing stages of a case, for a window batch and an
        output dtype."""

        def estimate(batch: int, dtype: torch.dtype) -> list[MemoryEstimate]:
            network = network_stage_bytes(
                grid_shape, self.roi_size, self.channels, self.activation, batch, dtype, self.in_channels
            )
            if not self.slab_stitching:  # MONAI's sums and weights of the whole volume, and its quotient
                parts = {k: v for k, v in network.parts.items() if k != "open slab"}
                parts["whole-volume sums"] = 4 * math.prod(grid_shape) * (2 * self.channels + 1)
                network = MemoryEstimate(network.stage, parts)
            return [network, postprocess_stage_bytes(grid_shape, image_shape, self.channels, dtype)]

        return estimate


def preprocess_estimate(volume: Volume, spacing: Sequence[float]) -> MemoryEstimate:
    """Preprocessing's memory for ``volume`` onto a grid of ``spacing`` (mm), with the whole CT resampled as
    the network grid's upper bound (the body crop only makes it smaller)."""
    shape = [max(round(n * s / t), 1) for n, s, t in zip(volume.shape, volume.spacing, spacing, strict=True)]
    grid = math.prod(shape)
    slab = SLAB_PLANES * grid // min(shape)
    return preprocess_stage_bytes(math.prod(volume.shape), volume.array.dtype.itemsize, grid, slab)
