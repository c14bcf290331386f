"""The sliding window of a prediction: the embolus probability on the network grid, written into one map.

A 3D network's windows are stitched slab by slab
(:class:`~pe_segmentation.runtime.stitching.SlabSlidingWindowInferer`): the whole-volume memory is the output
map alone, float32 or, under a tight memory budget, float16 (the plan of
:class:`~pe_segmentation.inference.memory.MemoryGuard`), and the sigmoid is applied slab by slab as they close,
so no whole-volume log-odds exist either. A 2D network runs MONAI's ``SliceInferer``
(:func:`~pe_segmentation.runtime.inferer.build_inferer`).

With a territory, the windows tile only its bounding box and those holding none of it are not run; the map is 0
elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pe_segmentation.config import Config
from pe_segmentation.inference.postprocess import bounding_box
from pe_segmentation.inference.window_network import SKIPPED_LOG_ODDS, EmbolusLogit
from pe_segmentation.runtime.devices import stitch_device
from pe_segmentation.runtime.inferer import AutocastInferer, build_inferer, count_windows, window_size
from pe_segmentation.runtime.memory_budget import MemoryPlan
from pe_segmentation.runtime.precision import Precision
from pe_segmentation.runtime.stitching import SlabSlidingWindowInferer


@dataclass(frozen=True)
class WindowRun:
    """How the windows run: the network, its config and window overlap, its device, precision and memory
    format, and whether a progress bar shows.

    Another kind of model (nnU-Net) gives its own ``tiling`` (the windows of a padded shape) and
    ``importance`` (a window's weights), and ``log_odds=True`` to keep the blended log-odds instead of the
    probability (nnU-Net resamples its logits before the softmax); the map is then
    :data:`~pe_segmentation.inference.window_network.SKIPPED_LOG_ODDS` where no window ran.
    """

    network: EmbolusLogit
    config: Config
    overlap: float
    device: torch.device
    precision: Precision
    memory_format: torch.memory_format | None
    progress: bool = False
    tiling: Callable[[Sequence[int]], list[tuple[slice, ...]]] | None = None
    importance: torch.Tensor | None = None
    log_odds: bool = False

    def count_windows(self, shape: Sequence[int]) -> int:
        """Windows that tile a volume of ``shape`` (padded to at least one window)."""
        if self.tiling is None:
            return count_windows(self.config, shape, self.overlap)
        roi = window_size(self.config)
        return len(self.tiling(tuple(max(int(s), r) for s, r in zip(shape, roi, strict=True))))


def network_probability(
    run: WindowRun, image: torch.Tensor, territory: np.ndarray | None, plan: MemoryPlan
) -> tuple[np.ndarray, torch.device]:
    """Sliding-window embolus probability of a preprocessed ``(1, *spatial)`` image on its own grid, and the
    device the sums lived on.

    With a ``territory`` (uint8, the image's grid), the windows tile only the territory's bounding box, and
    those holding none of it are not run; the probability is 0 elsewhere. The window counts of the run
    (:attr:`EmbolusLogit.windows_run`, ``windows_skipped``) are then relative to tiling the whole grid.
    """
    shape = tuple(int(s) for s in image.shape[1:])
    stitch = stitch_device(run.device, int(np.prod(shape)))
    run.network.reset_counts()
    dtype = np.float16 if plan.output_dtype == torch.float16 else np.float32
    probability = np.full(shape, SKIPPED_LOG_ODDS if run.log_odds else 0.0, dtype=dtype)
    if territory is None:
        _sliding_window(run, image, None, stitch, plan.sw_batch_size, probability)
        return probability, stitch
    every = run.count_windows(shape)
    box = bounding_box(territory)
    if box is not None:
        cropped = image[(slice(None), box[0], box[1], box[2])]
        _sliding_window(run, cropped, territory[box], stitch, plan.sw_batch_size, probability[box])
    run.network.windows_skipped = max(every - run.network.windows_run, 0)
    return probability, stitch


def _sliding_window(
    run: WindowRun,
    image: torch.Tensor,
    territory: np.ndarray | None,
    stitch: torch.device,
    sw_batch_size: int,
    out: np.ndarray,
) -> None:
    """Write the embolus probability of ``image`` (``(1, *spatial)``) into ``out``, skipping windows without
    ``territory``."""
    batch = image.unsqueeze(0).to(stitch)
    kwargs = {}
    if territory is not None:
        kwargs["condition"] = torch.from_numpy(np.ascontiguousarray(territory))[None, None].to(stitch)
    if run.config.patch.spatial_dims == 3:
        inferer = SlabSlidingWindowInferer(
            window_size(run.config),
            sw_batch_size,
            run.overlap,
            sw_device=run.device,
            device=stitch,
            activation=None if run.log_odds else torch.sigmoid,
            progress=run.progress,
            tiling=run.tiling,
            importance=run.importance,
        )
        wrapped = AutocastInferer(inferer, run.precision, run.memory_format)
        wrapped(batch, run.network, out=torch.from_numpy(out)[None, None], **kwargs)
        return
    slices = build_inferer(
        run.config, run.overlap, sw_batch_size, sw_device=run.device, device=stitch, progress=run.progress
    )
    log_odds = AutocastInferer(slices, run.precision, run.memory_format)(batch, run.network, **kwargs)
    if isinstance(log_odds, (list, tuple)):
        log_odds = log_odds[0]
    out[...] = torch.sigmoid(torch.as_tensor(log_odds)[0, 0].float()).cpu().numpy()
