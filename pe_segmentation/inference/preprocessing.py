"""The checkpoint's preprocessing chain run on one CT with little memory: the same transforms, the same result.

Run whole, the chain (:func:`~pe_segmentation.data.transforms.build_inference_transforms`) holds several copies
of the CT at once: a float32 copy of the int16 voxels, its reoriented copy, the body crop (a view that keeps the
reoriented volume alive), and in ``Spacingd`` a float32 sampling grid of three coordinates per output voxel
next to the output. For a 512 x 512 x 400 CTPA that took 1.6 GB of resident memory above what the process held
with the CT read; this module takes 0.65-0.69 GB (docs/inference.md, "Where the memory goes").
:func:`preprocess_volume` runs the same chain in three parts:

1. loading, reorientation and the body crop, with the voxels kept in their stored type (int16 HU, exact);
2. the body crop copied out, so that the reoriented volume is freed;
3. ``Spacingd`` and the voxel-wise steps after it (HU window, dtype) over slabs of :data:`SLAB_PLANES` output
   planes along the first axis, each slab resampled by the chain's own ``SpatialResample`` from the input
   planes it reads, into one preallocated float32 image. The output grid (affine and shape) is the one the
   whole ``Spacingd`` gives (asked for lazily, without resampling).

Slab and whole run give the same image bit for bit (``tests/inference/test_preprocessing.py``). A chain that
step 3 cannot split runs whole: another interpolation than bilinear, a step after ``Spacingd`` that is not
voxel-wise, an image on a GPU, or MONAI's compiled resampler (:func:`_slab_resampling`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import USE_COMPILED
from monai.data import MetaTensor
from monai.data.utils import AFFINE_TOL, to_affine_nd
from monai.networks.utils import to_norm_affine
from monai.transforms import Compose, EnsureTyped, ScaleIntensityRanged, Spacingd
from monai.transforms.utils import resolves_modes
from monai.utils import convert_to_numpy

from pe_segmentation.data.settings import PreprocessingSettings
from pe_segmentation.data.transforms import build_inference_transforms
from pe_segmentation.inference.preloaded import PreloadedReader
from pe_segmentation.io.volume import Volume
from pe_segmentation.runtime.devices import stitch_device

#: Output planes resampled at a time: the slab's sampling grid is 12 bytes per voxel (a 335 x 245 x 400 grid:
#: 38 MB per slab of 32 planes, instead of 394 MB for the whole volume).
SLAB_PLANES = 32
#: Steps after ``Spacingd`` that act on each voxel alone, so that they may run slab by slab.
VOXELWISE_STEPS = (ScaleIntensityRanged, EnsureTyped)
IMAGE_KEY = "image"


@dataclass
class PreparedImage:
    """A CT on the network grid, and the grids it passed through.

    Attributes:
        tensor: the preprocessed image, ``(1, *spatial)`` float32.
        network_affine: its affine.
        cropped_affine: the affine of the grid after the body crop, before resampling.
        cropped_shape: that grid's shape.
    """

    tensor: torch.Tensor
    network_affine: np.ndarray
    cropped_affine: np.ndarray
    cropped_shape: tuple[int, ...]


def split_at_resampling(chain: Compose) -> tuple[Compose, Compose]:
    """The chain before its first ``Spacingd`` and from it on (the grid before resampling fixes the body box)."""
    steps = list(chain.transforms)
    index = next((i for i, step in enumerate(steps) if isinstance(step, Spacingd)), len(steps))
    return Compose(steps[:index]), Compose(steps[index:])


def preprocess_volume(
    settings: PreprocessingSettings, volume: Volume, device: torch.device | None = None
) -> PreparedImage:
    """Preprocess ``volume`` for the network with the chain of ``settings``, holding few copies of it.

    Args:
        settings: the checkpoint's preprocessing.
        volume: the CT as read.
        device: the network's device: resampling and windowing run there when it is a GPU with room for the
            body crop and the network-grid image (:func:`~pe_segmentation.runtime.devices.stitch_device`),
            which takes them off the CPU.
    """
    chain = build_inference_transforms(settings, reader=PreloadedReader(volume, dtype=None), load_dtype=None)
    before, after = split_at_resampling(chain)
    data = before({IMAGE_KEY: str(volume.metadata.get("source", "volume"))})
    image = data[IMAGE_KEY]
    if not image.is_contiguous():  # the body crop is a view of the reoriented CT: copy it out, free that
        image = image.clone(memory_format=torch.contiguous_format)
    if device is not None:  # onto a GPU when the image and the network-grid image fit there
        image = image.to(stitch_device(device, 2 * math.prod(image.shape[1:])))
    data[IMAGE_KEY] = image
    cropped_affine = convert_to_numpy(image.affine, dtype=np.float64)
    cropped_shape = tuple(int(s) for s in image.shape[1:])
    del image
    tensor, network_affine = _resample_in_slabs(after, data)
    return PreparedImage(tensor, network_affine, cropped_affine, cropped_shape)


def _resample_in_slabs(after: Compose, data: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
    """Run ``after`` (``Spacingd`` and voxel-wise steps) over output slabs; the image and its affine."""
    steps = list(after.transforms)
    if not steps:
        image = data[IMAGE_KEY]
        return torch.as_tensor(image, dtype=torch.float32), convert_to_numpy(image.affine, dtype=np.float64)
    spacing, rest = steps[0], steps[1:]
    resampling = _slab_resampling(spacing, rest, data[IMAGE_KEY])
    if resampling is None:
        whole = after(data)[IMAGE_KEY]
        return whole.as_tensor(), convert_to_numpy(whole.affine, dtype=np.float64)
    theta, out_affine, out_shape = resampling
    # what MONAI's SpatialResample hands to grid_sample: the whole input in float32, with a batch axis
    source = data.pop(IMAGE_KEY).as_tensor().to(torch.float32)[None]
    out = torch.empty((source.shape[1], *out_shape), dtype=torch.float32)
    finish = Compose(rest)
    _, mode, padding_mode, _ = resolves_modes(spacing.mode[0], spacing.padding_mode[0])
    options = {"mode": mode, "padding_mode": padding_mode, "align_corners": bool(spacing.align_corners[0])}
    lines = [_base_line(n, options["align_corners"]) for n in out_shape]
    for start in range(0, out_shape[0], SLAB_PLANES):
        stop = min(start + SLAB_PLANES, out_shape[0])
        grid = _grid_rows(theta, lines, start, stop)
        slab = F.grid_sample(source, grid, **options)[0]
        out[:, start:stop] = torch.as_tensor(finish({IMAGE_KEY: slab})[IMAGE_KEY])
    return out, out_affine


def _slab_resampling(
    spacing: Any, rest: list[Any], image: MetaTensor
) -> tuple[torch.Tensor, np.ndarray, tuple[int, ...]] | None:
    """What ``spacing`` (``Spacingd``) hands to ``affine_grid`` for ``image``: the normalized ``theta``, with
    the output affine and shape; ``None`` where a slab run could not give MONAI's numbers exactly (another
    interpolation, a step after it that is not voxel-wise, a GPU, MONAI's compiled resampler, or a grid it
    leaves as it is)."""
    simple = (
        isinstance(spacing, Spacingd)
        and list(spacing.keys) == [IMAGE_KEY]
        and all(isinstance(step, VOXELWISE_STEPS) for step in rest)
        and isinstance(image, MetaTensor)
        and image.ndim == 4
        and image.device.type == "cpu"
        and spacing.mode[0] == "bilinear"
        and np.dtype(spacing.dtype[0]) == np.float32
        and not USE_COMPILED
    )
    if not simple:
        return None
    lazy: Any = spacing({IMAGE_KEY: image}, lazy=True)[IMAGE_KEY]  # the grid only: shares the voxels
    dst_affine = torch.as_tensor(lazy.peek_pending_affine(), dtype=torch.float64)
    out_shape = tuple(int(n) for n in lazy.peek_pending_shape())
    in_shape = tuple(int(n) for n in image.shape[1:])
    # as monai.transforms.spatial.functional.spatial_resample and AffineTransform compute it
    src_affine = to_affine_nd(3, image.peek_pending_affine()).to(torch.float64)
    xform = np.linalg.solve(convert_to_numpy(src_affine), convert_to_numpy(dst_affine))
    if out_shape == in_shape and np.allclose(xform, np.eye(4), atol=AFFINE_TOL):
        return None  # MONAI keeps such a grid without resampling
    theta = torch.as_tensor(to_affine_nd(3, xform), dtype=torch.float64).to(torch.float32)[None].clone()
    theta = to_norm_affine(theta, in_shape, out_shape, bool(spacing.align_corners[0]), zero_centered=False)
    reverse = [2, 1, 0]
    theta[:, :3] = theta[:, reverse]
    theta[:, :, :3] = theta[:, :, reverse]
    return theta[:, :3], convert_to_numpy(dst_affine, dtype=np.float64), out_shape


def _base_line(size: int, align_corners: bool) -> torch.Tensor:
    """Normalized coordinates of ``size`` voxels, as ``torch.nn.functional.affine_grid`` makes them."""
    if size <= 1:
        return torch.zeros(max(size, 1), dtype=torch.float32)
    line = torch.linspace(-1, 1, size, dtype=torch.float32)
    return line if align_corners else line * (size - 1) / size


def _grid_rows(theta: torch.Tensor, lines: list[torch.Tensor], start: int, stop: int) -> torch.Tensor:
    """Rows ``[start, stop)`` of ``affine_grid(theta, size)`` along the first axis, with the same numbers as the
    whole grid (the same base coordinates, the same matrix product per voxel)."""
    first, second, third = lines
    base = torch.empty((1, stop - start, len(second), len(third), 4), dtype=torch.float32)
    base[..., 0].copy_(third)
    base[..., 1].copy_(second.unsqueeze(-1))
    base[..., 2].copy_(first[start:stop].unsqueeze(-1).unsqueeze(-1))
    base[..., 3].fill_(1)
    rows = base.view(1, -1, 4).bmm(theta.transpose(1, 2))
    return rows.view(1, stop - start, len(second), len(third), 3)
