"""nnU-Net v2's sliding window: its tile positions, its Gaussian, and the average of the folds.

pe-seg's slab stitcher (:class:`~pe_segmentation.runtime.stitching.SlabSlidingWindowInferer`) runs these
windows with these weights, so nnU-Net models get pe-seg's memory budget, precision and window skipping.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter


def nnunet_steps(
    image_size: Sequence[int], tile_size: Sequence[int], tile_step_size: float
) -> list[list[int]]:
    """nnU-Net's ``compute_steps_for_sliding_window``: per axis, the window starts, evenly spread so that the
    windows lie at most ``tile_step_size`` of a window apart and the last one ends at the image's edge."""
    if not 0 < tile_step_size <= 1:
        raise ValueError(f"tile step must be in (0, 1], got {tile_step_size}")
    target = [i * tile_step_size for i in tile_size]
    counts = [int(np.ceil((i - k) / j)) + 1 for i, j, k in zip(image_size, target, tile_size, strict=True)]
    steps = []
    for dim in range(len(tile_size)):
        largest = image_size[dim] - tile_size[dim]
        actual = largest / (counts[dim] - 1) if counts[dim] > 1 else 99999999999
        steps.append([int(np.round(actual * i)) for i in range(counts[dim])])
    return steps


def nnunet_tiling(
    tile_size: Sequence[int], tile_step_size: float
) -> functools.partial[list[tuple[slice, ...]]]:
    """The windows of a padded volume shape (first axis slowest), as nnU-Net's predictor cuts them."""
    return functools.partial(_windows, tuple(int(t) for t in tile_size), float(tile_step_size))


def _windows(tile: tuple[int, ...], step: float, shape: Sequence[int]) -> list[tuple[slice, ...]]:
    starts = nnunet_steps([int(s) for s in shape], tile, step)
    return [
        tuple(slice(s, s + t) for s, t in zip(combo, tile, strict=True))
        for combo in itertools.product(*starts)
    ]


def nnunet_gaussian(
    tile_size: Sequence[int], sigma_scale: float = 1.0 / 8, value_scaling_factor: float = 10.0
) -> torch.Tensor:
    """nnU-Net's ``compute_gaussian`` as its predictor uses it (float16 values, zeros raised to the smallest
    value), returned as float32 for pe-seg's float32 sums."""
    tmp = np.zeros(tuple(int(t) for t in tile_size))
    tmp[tuple(int(t) // 2 for t in tile_size)] = 1
    gaussian = gaussian_filter(tmp, [t * sigma_scale for t in tile_size], 0, mode="constant", cval=0)
    gaussian /= np.max(gaussian) / value_scaling_factor
    half = torch.from_numpy(gaussian).to(torch.float16)
    zero = half == 0
    if zero.any():
        half[zero] = torch.min(half[~zero])
    return half.to(torch.float32)


class FoldEnsemble(nn.Module):
    """The folds of a model as one network: the mean of their logits (nnU-Net averages its folds' logits;
    every later step up to the softmax is linear, so averaging per window gives the same)."""

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__()
        if not networks:
            raise ValueError("no fold to run")
        self.folds = nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for network in self.folds:
            out = network(x)
            if isinstance(out, (list, tuple)):
                out = out[0]
            out = out.float()
            total = out if total is None else total + out
        assert total is not None
        return total if len(self.folds) == 1 else total / len(self.folds)
