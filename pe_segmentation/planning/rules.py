"""The plan rules: a training recipe's numbers from a fingerprint and the hardware it trains on.

nnU-Net v2's rules (``ExperimentPlanner``, ``ResEncUNetPlanner``), with pe-seg's network and memory estimate;
docs/planning.md sets them side by side:

* **target spacing**: :func:`~pe_segmentation.data.target_spacing.target_spacing`, the rule training itself
  applies to a recipe without a spacing (per-axis median; the 10th percentile along a thick-slice axis);
* **normalisation**: ``ct_foreground`` from the labelled voxels' 0.5th and 99.5th percentiles, mean and SD;
  the fixed HU window when no case holds a label;
* **patch**: a cube in mm of :data:`GPU_PATCH_VOXELS` voxels at the target spacing (nnU-Net's 256^3), no
  larger than the median body box, each axis a multiple of the network's total stride. While the training
  step of a batch of :data:`MIN_BATCH` does not fit in the GPU's memory (:attr:`Hardware.budget_bytes`,
  against the traced activations of :mod:`~pe_segmentation.planning.memory`), the axis that is the
  largest share of the median image loses one stride, as nnU-Net shrinks it;
* **network**: MONAI's DynUNet with residual blocks and deep supervision, 32 channels doubling per level up
  to 320; its depth halves the patch while every axis keeps at least :data:`MIN_EDGE` voxels, at most
  :data:`MAX_DEPTH` times;
* **batch**: as many patches as the memory left holds, at least 2, and no more than 5% of the set's voxels
  (nnU-Net's cap);
* **CPU**: the bound is time, not memory: a cube of :data:`CPU_PATCH_VOXELS` (the 96^3 of pe-seg's CPU
  recipes) and 16 channels, batch 2.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pe_segmentation.errors import ConfigError
from pe_segmentation.planning.memory import NetworkMemory, network_memory

#: The network every plan trains: MONAI's DynUNet (nnU-Net's architecture) with residual blocks.
NETWORK = "monai_dynunet"
#: nnU-Net v2's starting patch: 256^3 voxels, shaped as a cube in mm.
GPU_PATCH_VOXELS = 256**3
#: The CPU's starting patch: 96^3 voxels, the patch of pe-seg's CPU recipes (configs/unet.yaml).
CPU_PATCH_VOXELS = 96**3
#: Channels of the first level on a GPU (nnU-Net's 32) and on the CPU.
GPU_WIDTH = 32
CPU_WIDTH = 16
#: Channels are capped here (nnU-Net's 3D cap).
MAX_CHANNELS = 320
#: The deepest feature map keeps at least this many voxels per axis (nnU-Net's ``featuremap_min_edge_length``).
MIN_EDGE = 4
#: At most this many halvings (six resolution levels, nnU-Net's usual 3D full-resolution network).
MAX_DEPTH = 5
#: At least two halvings: deep supervision needs a level below the output's.
MIN_DEPTH = 2
#: nnU-Net's smallest batch.
MIN_BATCH = 2
#: A batch holds no more than this share of the whole set's voxels (nnU-Net's ``max_dataset_covered``).
MAX_DATASET_COVERED = 0.05
#: Of a GPU's memory, the share a run may plan for, and what it leaves for the CUDA context, cuDNN's
#: workspace and the allocator's slack.
USABLE_SHARE = 0.8
RESERVED_GIB = 1.0
GIB = 2**30

MemoryOf = Callable[[int, int], NetworkMemory]


@dataclass(frozen=True)
class Hardware:
    """What a recipe trains on: a GPU with ``memory_gb`` GB, or the CPU (``memory_gb`` ``None``)."""

    memory_gb: float | None = None

    def __post_init__(self) -> None:
        if self.memory_gb is not None and not (math.isfinite(self.memory_gb) and self.memory_gb > 0):
            raise ConfigError(f"--gpu-memory: expected a positive number of GB, got {self.memory_gb!r}")

    @property
    def is_cpu(self) -> bool:
        return self.memory_gb is None

    @property
    def width(self) -> int:
        return CPU_WIDTH if self.is_cpu else GPU_WIDTH

    @property
    def patch_voxels(self) -> int:
        return CPU_PATCH_VOXELS if self.is_cpu else GPU_PATCH_VOXELS

    @property
    def budget_bytes(self) -> float | None:
        """Bytes a training step may take (``None`` on the CPU)."""
        if self.memory_gb is None:
            return None
        return self.memory_gb * GIB * USABLE_SHARE - RESERVED_GIB * GIB

    def describe(self) -> str:
        return "the CPU" if self.memory_gb is None else f"a {self.memory_gb:g} GB GPU"


def network_params(depth: int, width: int) -> dict[str, Any]:
    """The ``model`` parameters of a plan's network (without its name, :data:`NETWORK`)."""
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "base_channels": int(width),
        "depth": int(depth),
        "max_channels": MAX_CHANNELS,
        "norm": "instance",
        "res_block": True,
        "deep_supervision": True,
    }


@functools.lru_cache(maxsize=32)
def traced_memory(depth: int, width: int) -> NetworkMemory:
    """The memory figures of the plan's network at ``depth`` and ``width`` (traced, see planning.memory)."""
    return network_memory(NETWORK, network_params(depth, width), 2**depth)


def depth_for(patch: Sequence[int]) -> int:
    """Halvings of the network for ``patch``: while every axis keeps :data:`MIN_EDGE` voxels, within
    [:data:`MIN_DEPTH`, :data:`MAX_DEPTH`]."""
    depth = 0
    while depth < MAX_DEPTH and min(patch) >= MIN_EDGE * 2 ** (depth + 1):
        depth += 1
    return max(depth, MIN_DEPTH)


def round_up(patch: Sequence[int], depth: int) -> tuple[int, int, int]:
    """Each axis up to a multiple of the total stride ``2**depth``."""
    step = 2**depth
    x, y, z = (max(step, math.ceil(p / step) * step) for p in patch)
    return (x, y, z)


def initial_patch(median_shape: Sequence[int], spacing: Sequence[float], voxels: int) -> tuple[int, int, int]:
    """A cube in mm of ``voxels`` voxels at ``spacing``, no larger than ``median_shape`` (nnU-Net v2's)."""
    inverse = 1.0 / np.asarray(spacing, dtype=np.float64)
    cube = inverse * (voxels / float(np.prod(inverse))) ** (1.0 / 3.0)
    x, y, z = (int(v) for v in np.minimum(np.round(cube), np.asarray(median_shape)))
    return (x, y, z)


@dataclass(frozen=True)
class PatchPlan:
    """Patch, batch and network depth, and the memory they were checked against.

    Attributes:
        patch: voxels along R, A, S.
        batch_size: patches per step.
        depth: the network's halvings.
        width: channels of its first level.
        start: the patch before any shrinking (rounded to the stride).
        shrunk: how many times an axis lost a stride to fit the memory.
        step_bytes: the estimated bytes of a training step at ``batch_size`` (activations under mixed
            precision on a GPU, float32 on the CPU, plus weights, gradients and optimizer state).
        budget_bytes: what the GPU allows (``None`` on the CPU).
        parameters: the network's weights.
    """

    patch: tuple[int, int, int]
    batch_size: int
    depth: int
    width: int
    start: tuple[int, int, int]
    shrunk: int
    step_bytes: float
    budget_bytes: float | None
    parameters: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "patch": list(self.patch),
            "batch_size": self.batch_size,
            "depth": self.depth,
            "base_channels": self.width,
            "start_patch": list(self.start),
            "shrink_steps": self.shrunk,
            "step_gib": round(self.step_bytes / GIB, 2),
            "budget_gib": None if self.budget_bytes is None else round(self.budget_bytes / GIB, 2),
            "parameters": self.parameters,
        }


def _step_bytes(memory: NetworkMemory, patch: Sequence[int], batch: int, hardware: Hardware) -> float:
    return memory.activations(patch, batch, mixed_precision=not hardware.is_cpu) + memory.parameter_bytes


def _axis_to_shrink(
    patch: Sequence[int], median_shape: np.ndarray, spacing: np.ndarray, smallest: int
) -> int | None:
    """Of the axes above ``smallest``, the one that is the largest share of the median image (nnU-Net's),
    ties to the longest in mm; ``None`` when none is above it."""
    axes = [a for a in range(3) if patch[a] > smallest]
    if not axes:
        return None
    share = {a: patch[a] / max(float(median_shape[a]), 1.0) for a in axes}
    top = max(share.values())
    return max((a for a in axes if math.isclose(share[a], top)), key=lambda a: (patch[a] * spacing[a], a))


def plan_patch(
    median_shape: Sequence[int],
    spacing: Sequence[float],
    hardware: Hardware,
    cases: int,
    memory_of: MemoryOf = traced_memory,
) -> PatchPlan:
    """The patch, batch and depth for images of ``median_shape`` voxels at ``spacing`` (see the module).

    Args:
        median_shape: the median body box in voxels at the target spacing, along R, A, S.
        spacing: the target spacing.
        hardware: a GPU's memory, or the CPU.
        cases: cases in the set (the batch holds no more than 5% of their voxels).
        memory_of: the memory figures of the network at a depth and width (traced by default).

    Raises:
        ConfigError: the GPU is too small for a batch of two of the smallest patch.
    """
    median = np.asarray(median_shape, dtype=np.float64)
    mm = np.asarray(spacing, dtype=np.float64)
    patch = initial_patch(median_shape, spacing, hardware.patch_voxels)
    depth = depth_for(patch)
    patch = round_up(patch, depth)
    start, shrunk = patch, 0
    smallest = MIN_EDGE * 2**MIN_DEPTH
    budget = hardware.budget_bytes
    memory = memory_of(depth, hardware.width)
    while budget is not None and _step_bytes(memory, patch, MIN_BATCH, hardware) > budget:
        axis = _axis_to_shrink(patch, median, mm, smallest)
        if axis is None:
            raise ConfigError(
                f"--gpu-memory {hardware.memory_gb:g}: too small for a batch of {MIN_BATCH} patches of "
                f"{smallest}^3 voxels ({_step_bytes(memory, patch, MIN_BATCH, hardware) / GIB:.1f} GiB needed)"
            )
        changed = list(patch)
        changed[axis] = max(patch[axis] - 2**depth, smallest)
        depth = depth_for(changed)
        patch = round_up(changed, depth)
        memory = memory_of(depth, hardware.width)
        shrunk += 1
    batch = MIN_BATCH
    if budget is not None:
        per_patch = memory.activations(patch, 1, mixed_precision=True)
        fits = int((budget - memory.parameter_bytes) // per_patch)
        covered = round(MAX_DATASET_COVERED * cases * float(np.prod(median)) / math.prod(patch))
        batch = max(MIN_BATCH, min(fits, covered))
    return PatchPlan(
        patch,
        batch,
        depth,
        hardware.width,
        start,
        shrunk,
        _step_bytes(memory, patch, batch, hardware),
        budget,
        memory.parameters,
    )
