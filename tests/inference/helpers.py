"""Small CTs, tiny networks and checkpoints for the inference tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn as nn

from pe_segmentation.config import Config
from pe_segmentation.io.volume import Volume
from pe_segmentation.networks import build_network
from pe_segmentation.runtime.checkpoint import save_checkpoint

#: The CT of most tests: 40 x 36 x 30 voxels.
SHAPE = (40, 36, 30)


def tiny_config(spacing: Any = (1.5, 1.5, 2.5), crop: bool = True, **sections: dict[str, Any]) -> Config:
    """A 2-level UNet of width 4 on 16^3 windows, at ``spacing`` (``None``: a config no predictor takes)."""
    data: dict[str, Any] = {
        "preprocessing": {"spacing": None if spacing is None else list(spacing), "crop_foreground": crop},
        "patch": {"patch_size": [16, 16, 16]},
        "model": {"name": "unet", "base_channels": 4, "depth": 2},
        "inference": {"threshold": 0.5, "overlap": 0.25, "sw_batch_size": 2},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Config.from_dict(data)


def own_spacing(volume: Volume) -> tuple[float, float, float]:
    """``volume``'s voxel size along R, A, S: a predictor at this spacing keeps its grid (up to the axis order)."""
    axes = nib.orientations.io_orientation(volume.affine)[:, 0].astype(int)
    spacing = [0.0, 0.0, 0.0]
    for voxel_axis, axis in enumerate(axes):
        spacing[axis] = float(volume.spacing[voxel_axis])
    x, y, z = spacing
    return (x, y, z)


def tiny_network(config: Config, seed: int = 0) -> nn.Module:
    """The config's network with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return build_network(config.model.name, **config.model.params).eval()


def make_ct(affine: np.ndarray, shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> Volume:
    """A body of noisy soft tissue (-100 to 500 HU) in air (-1000 HU), the air being cropped away."""
    rng = np.random.default_rng(seed)
    array = np.full(shape, -1000, dtype=np.int16)
    body = tuple(slice(s // 6, s - s // 8) for s in shape)
    array[body] = rng.normal(200, 250, [b.stop - b.start for b in body]).astype(np.int16)
    return Volume(array, affine, {"source": "synthetic", "format": "synthetic"})


class IntensityNet(nn.Module):
    """A 2-class "network" whose embolus log-odds is ``gain * (x - centre)`` voxel by voxel.

    With an identity preprocessing grid its mask is ``windowed intensity >= centre`` exactly (for threshold
    0.5), so tests can plant clots of known voxels.
    """

    def __init__(self, gain: float = 40.0, centre: float = 0.5) -> None:
        super().__init__()
        self.gain, self.centre = gain, centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margin = self.gain * (x - self.centre)
        return torch.cat([torch.zeros_like(margin), margin], dim=1)


def write_checkpoint(path: Path, config: Config, seed: int = 0) -> Path:
    """A pe-seg checkpoint of the config's network with seeded random weights."""
    network = tiny_network(config, seed)
    return save_checkpoint(
        path,
        {
            "kind": "best",
            "model": network.state_dict(),
            "config": config.to_dict(),
            "trainer": {"epoch": 3},
            "metrics": {"val_dice": 0.5},
        },
    )
