"""How much memory a prediction takes, and the window batch and stitching that keep its peak under a budget.

A prediction's host memory (resident set) is what the process holds when a case starts (the libraries, the
weights and the CT as read), plus, at the peak of each stage:

* **preprocessing**: the reoriented CT and its body crop (in the CT's own integer type), the network-grid image
  (float32) and the resampling of one slab (:mod:`pe_segmentation.inference.resample`);
* **network**: the network-grid image, the territory, the output map (float32, or float16 under a tight budget),
  the stitcher's open slab (:func:`~pe_segmentation.runtime.stitching.open_slab_bytes`), one batch of windows,
  and the network's activations for that batch (:class:`~pe_segmentation.runtime.window_memory.
  WindowActivation`, measured once per network);
* **post-processing**: the output map, its connected-component labels and masks, and the mask on the CT's grid.

:func:`network_stage_bytes` and :func:`postprocess_stage_bytes` take only the grid, the window, the stitched
channels and a per-window activation figure, so a model of another kind (several output channels, another
network) plugs in with its own figures. :func:`plan_memory` tries the window batches from the largest down, in
float32 stitching first and float16 after, and takes the first that fits; when none does it raises
:class:`~pe_segmentation.errors.MemoryBudgetError`, whose message says what the case needs.

The default budget (:func:`default_budget_bytes`) is what the process holds now plus what the machine has
available (``MemAvailable``, or the cgroup's limit when lower), less :data:`MARGIN_SHARE` of it (at least
:data:`MARGIN_MIN_BYTES`) for everything else.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pe_segmentation.errors import ConfigError, MemoryBudgetError
from pe_segmentation.runtime.stitching import open_slab_bytes
from pe_segmentation.runtime.window_memory import WindowActivation

GIB = 2**30
#: The default budget leaves this share of the available memory to the rest of the machine ...
MARGIN_SHARE = 0.1
#: ... and at least this much.
MARGIN_MIN_BYTES = GIB // 2
#: What the allocator adds to the buffers counted here (docs/inference.md, "Memory").
OVERHEAD_SHARE = 0.1
#: Output-map dtypes in the order :func:`plan_memory` tries them: exact first.
OUTPUT_DTYPES = (torch.float32, torch.float16)


# ------------------------------------------------------------------------------------------------ the machine


def process_rss_bytes() -> int:
    """This process's resident memory now (``VmRSS``), 0 where it cannot be read."""
    return _status_kib("VmRSS") * 1024


def _status_kib(field_name: str) -> int:
    try:
        text = Path("/proc/self/status").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def available_memory_bytes() -> int:
    """Memory the machine can still give this process: ``MemAvailable``, capped by a cgroup v2 limit."""
    available = _meminfo_bytes("MemAvailable")
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            available = 0
    limit = _cgroup_room()
    return min(available, limit) if limit is not None else available


def _meminfo_bytes(name: str) -> int | None:
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_room() -> int | None:
    """``memory.max - memory.current`` of this process's cgroup (v2), ``None`` when unlimited or unknown."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        current = int((base / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if limit == "max" or not limit.isdigit():
        return None
    return max(int(limit) - current, 0)


def default_budget_bytes() -> int:
    """What this process may grow to: what it holds now plus the machine's available memory, less a margin."""
    available = available_memory_bytes()
    margin = max(int(MARGIN_SHARE * available), MARGIN_MIN_BYTES)
    return process_rss_bytes() + max(available - margin, 0)


def budget_bytes(gigabytes: float | None) -> int:
    """``--memory-budget`` in bytes (1 GB = 2^30 bytes); ``None`` gives :func:`default_budget_bytes`.

    Raises:
        ConfigError: a budget that is not a positive number.
    """
    if gigabytes is None:
        return default_budget_bytes()
    try:
        value = float(gigabytes)
    except (TypeError, ValueError):
        raise ConfigError(f"--memory-budget must be a number of GB, got {gigabytes!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--memory-budget must be > 0 GB, got {gigabytes}")
    return int(value * GIB)


def gib(size: float) -> str:
    """``size`` bytes as ``"1.23 GB"`` (GiB, as ``--memory-budget`` takes them)."""
    return f"{size / GIB:.2f} GB"


# ------------------------------------------------------------------------------------------------ estimates


@dataclass(frozen=True)
class MemoryEstimate:
    """What a stage adds to the memory held when it starts, part by part (bytes).

    Attributes:
        stage: ``preprocess``, ``network`` or ``postprocess``.
        parts: the tensors it holds at its peak, by name.
    """

    stage: str
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """The stage's peak on top of what is held, with :data:`OVERHEAD_SHARE` for the allocator (the
        activations carry their own factor, :data:`~pe_segmentation.runtime.window_memory.ACTIVATION_RSS_KEPT`)."""
        buffers = sum(size for name, size in self.parts.items() if name != "activations")
        return int(sum(self.parts.values()) + OVERHEAD_SHARE * buffers)

    def largest(self) -> str:
        """The biggest part, as ``name (1.23 GB)``."""
        name, size = max(self.parts.items(), key=lambda item: item[1])
        return f"{name} {gib(size)}"


def preprocess_stage_bytes(
    image_voxels: int, image_itemsize: int, grid_voxels: int, slab_voxels: int
) -> MemoryEstimate:
    """Preprocessing (:func:`~pe_segmentation.inference.preprocessing.preprocess_volume`) beyond the CT as read.

    Args:
        image_voxels: the CT's voxels.
        image_itemsize: bytes per CT voxel (2 for int16).
        grid_voxels: the network grid's voxels (an upper bound is fine: the whole CT resampled).
        slab_voxels: output voxels resampled at a time.
    """
    ct = image_voxels * image_itemsize
    # one after the other: the CT in MONAI's layout and reoriented; the reoriented CT and its body masks; it
    # and its body crop (copied out); the crop, the float32 network-grid image and one slab (its sampling
    # grid of 3 float32 coordinates, its float32 input and output). The largest of these is the peak.
    phases = [
        {"CT in MONAI's layout": ct, "reoriented CT": ct},
        {"reoriented CT": ct, "body masks": 2 * image_voxels},
        {"reoriented CT": ct, "body crop": ct},
        {"body crop": ct, "network-grid image": 4 * grid_voxels, "resampling slab": slab_voxels * 24},
    ]
    return MemoryEstimate("preprocess", max(phases, key=lambda parts: sum(parts.values())))


def network_stage_bytes(
    grid_shape: Sequence[int],
    roi_size: Sequence[int],
    channels: int,
    activation: WindowActivation | None,
    sw_batch_size: int,
    output_dtype: torch.dtype = torch.float32,
    in_channels: int = 1,
) -> MemoryEstimate:
    """The sliding window's memory beyond the network-grid image: output map, open slab, windows, activations.

    Args:
        grid_shape: the network grid.
        roi_size: the window.
        channels: channels stitched per voxel (1 for the embolus log-odds).
        activation: the network's cost per call; ``None`` when it runs elsewhere (a GPU).
        sw_batch_size: windows per call.
        output_dtype: the output map's dtype.
        in_channels: the image's channels.
    """
    grid = math.prod(grid_shape)
    window = math.prod(roi_size) * sw_batch_size
    itemsize = torch.tensor([], dtype=output_dtype).element_size()
    parts = {
        "territory": grid,
        "output map": channels * grid * itemsize,
        "open slab": open_slab_bytes(grid_shape, roi_size, channels),
        "window batch": 4 * window * (in_channels + 2 * channels + 1),
    }
    if activation is not None:
        parts["activations"] = activation.for_batch(sw_batch_size, roi_size)
    return MemoryEstimate("network", parts)


def postprocess_stage_bytes(
    grid_shape: Sequence[int], image_shape: Sequence[int], channels: int, output_dtype: torch.dtype
) -> MemoryEstimate:
    """Post-processing (:mod:`pe_segmentation.inference.postprocess`) and the report beyond what is held when
    the network starts: the output map with the candidate clots' labels on the network grid; then the mask on
    the CT's grid with its probabilities (at most the whole body: a bound, since clots are usually small) and
    one resampled slab; then the mask, its probabilities and the report's clot labels."""
    grid = math.prod(grid_shape)
    voxels = math.prod(image_shape)
    itemsize = torch.tensor([], dtype=output_dtype).element_size()
    output = channels * grid * itemsize
    slab = min(32 * voxels // max(min(int(s) for s in image_shape), 1), voxels)
    phases = [
        {"output map": output, "clot labels": 5 * grid},
        {
            "output map": output,
            "mask": voxels,
            "mask probabilities": 4 * voxels,
            "resampling slab": 16 * slab,
        },
        {"mask": voxels, "mask probabilities": 4 * voxels, "report's clot labels": 4 * voxels},
    ]
    return MemoryEstimate("postprocess", max(phases, key=lambda parts: sum(parts.values())))


@dataclass(frozen=True)
class MemoryPlan:
    """The window batch and stitching chosen for a case, and the peak they are expected to reach.

    Attributes:
        sw_batch_size: windows per network call.
        output_dtype: dtype of the stitched output map.
        peak_bytes: the expected peak resident memory of the process.
        budget_bytes: the budget it was planned for.
        stages: the estimate of each stage.
    """

    sw_batch_size: int
    output_dtype: torch.dtype
    peak_bytes: int
    budget_bytes: int
    stages: tuple[MemoryEstimate, ...] = ()

    def summary(self) -> dict[str, Any]:
        """What the report says about the plan: the choices, not the machine's state (the same for every run
        of a scan under one budget)."""
        return {
            "sw_batch_size": self.sw_batch_size,
            "stitch_dtype": str(self.output_dtype).replace("torch.", ""),
        }

    def describe(self) -> str:
        """The plan in one line, for the log."""
        summary = self.summary()
        return (
            f"window batch {summary['sw_batch_size']}, {summary['stitch_dtype']} stitching: expected peak "
            f"{gib(self.peak_bytes)} of a {gib(self.budget_bytes)} memory budget"
        )


def plan_memory(
    held_bytes: int,
    budget: int,
    max_batch: int,
    stages: Callable[[int, torch.dtype], Sequence[MemoryEstimate]],
    what: str = "this case",
) -> MemoryPlan:
    """The largest window batch (up to ``max_batch``), float32 stitching before float16, whose peak fits.

    Args:
        held_bytes: what the process holds when the stages start.
        budget: the peak allowed, in bytes.
        max_batch: the window batch wanted (the config's or ``--sw-batch-size``).
        stages: the stage estimates for a window batch and an output dtype.
        what: names the case in the refusal.

    Raises:
        MemoryBudgetError: not even one window at a time with float16 stitching fits.
    """
    smallest: tuple[int, Sequence[MemoryEstimate]] | None = None
    for dtype in OUTPUT_DTYPES:
        for batch in range(max(int(max_batch), 1), 0, -1):
            estimates = stages(batch, dtype)
            peak = held_bytes + max(e.total for e in estimates)
            if peak <= budget:
                return MemoryPlan(batch, dtype, peak, budget, tuple(estimates))
            if smallest is None or peak < smallest[0]:
                smallest = (peak, estimates)
    assert smallest is not None
    peak, estimates = smallest
    worst = max(estimates, key=lambda e: e.total)
    raise MemoryBudgetError(
        f"memory budget {gib(budget)} is too small for {what}: it needs about {gib(peak)} "
        f"({gib(held_bytes)} held, {worst.stage} {gib(worst.total)}, largest part: {worst.largest()}) even "
        "with one window at a time and float16 stitching; raise --memory-budget or free memory"
    )
