"""The checkpoint's preprocessing chain run on one CT with little memory: the same transforms, the same result.

Run whole, the chain (:func:`~pe_segmentation.data.transforms.build_inference_transforms`) holds several copies
of the CT at once: a float32 copy of the int16 voxels, its reoriented copy, the body crop (a view that keeps the
reoriented volume alive), and in ``Spacingd`` a float32 sampling grid of three coordinates per output voxel
next to the output. For a 512 x 512 x 400 CTPA that was 1.25 GB on top of the CT (docs/inference.md, "Memory").
:func:`preprocess_volume` runs the same chain in three parts:

1. loading, reorientation and the body crop, with the voxels kept in their stored type (int16 HU, exact);
2. the body crop copied out, so that the reoriented volume is freed;
3. ``Spacingd`` and the voxel-wise steps after it (HU window, dtype) over slabs of :data:`SLAB_PLANES` output
   planes along the first axis, each slab resampled by the chain's own ``SpatialResample`` from the input
   planes it reads, into one preallocated float32 image. The output grid (affine and shape) is the one the
   whole ``Spacingd`` gives (asked for lazily, without resampling).

Slab and whole run agree to float32 rounding (``tests/inference/test_preprocessing.py``). A chain that step 3
cannot split (a resampling that mixes the first axis with others, or a step after it that is not voxel-wise)
runs whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureTyped, ScaleIntensityRanged, Spacingd
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
#: Matrix entries below this count as zero when checking that the first axis maps onto itself alone.
AXIS_TOLERANCE = 1e-6
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
    plan = _slab_plan(spacing, data[IMAGE_KEY]) if all(isinstance(s, VOXELWISE_STEPS) for s in rest) else None
    if plan is None:
        whole = after(data)[IMAGE_KEY]
        return whole.as_tensor(), convert_to_numpy(whole.affine, dtype=np.float64)
    source = data.pop(IMAGE_KEY)
    out_affine, out_shape, xform = plan
    resample = spacing.spacing_transform.sp_resample
    options = {
        "mode": spacing.mode[0],
        "padding_mode": spacing.padding_mode[0],
        "align_corners": spacing.align_corners[0],
        "dtype": spacing.dtype[0],
    }
    out = torch.empty((source.shape[0], *out_shape), dtype=torch.float32, device=source.device)
    finish = Compose(rest)
    for start in range(0, out_shape[0], SLAB_PLANES):
        stop = min(start + SLAB_PLANES, out_shape[0])
        low, high = _input_planes(xform, start, stop, int(source.shape[1]))
        piece = MetaTensor(
            source.as_tensor()[:, low:high], affine=torch.as_tensor(_shifted(source.affine, low))
        )
        slab = resample(
            piece,
            dst_affine=torch.as_tensor(_shifted(out_affine, start)),
            spatial_size=(stop - start, *out_shape[1:]),
            lazy=False,
            **options,
        )
        slab = finish({IMAGE_KEY: slab})[IMAGE_KEY]
        out[:, start:stop] = torch.as_tensor(slab)
    return out, out_affine


def _slab_plan(spacing: Spacingd, image: MetaTensor) -> tuple[np.ndarray, tuple[int, ...], np.ndarray] | None:
    """The output grid of ``spacing`` on ``image`` (asked lazily) and the map from output to input voxels,
    when the first output axis reads only the first input axis; else ``None``."""
    if list(spacing.keys) != [IMAGE_KEY] or image.ndim != 4:
        return None
    lazy: Any = spacing({IMAGE_KEY: image}, lazy=True)[IMAGE_KEY]  # the grid only: shares the voxels
    out_affine = convert_to_numpy(lazy.peek_pending_affine(), dtype=np.float64)
    out_shape = tuple(int(s) for s in lazy.peek_pending_shape())
    in_affine = convert_to_numpy(image.affine, dtype=np.float64)
    xform = np.linalg.solve(in_affine, out_affine)
    scale = np.abs(xform[:3, :3]).max()
    if abs(xform[0, 1]) > AXIS_TOLERANCE * scale or abs(xform[0, 2]) > AXIS_TOLERANCE * scale:
        return None
    return out_affine, out_shape, xform


def _input_planes(xform: np.ndarray, start: int, stop: int, size: int) -> tuple[int, int]:
    """Input planes along the first axis that output planes ``[start, stop)`` interpolate from (one spare
    plane each side), clipped to the input."""
    ends = [xform[0, 0] * plane + xform[0, 3] for plane in (start, stop - 1)]
    low = max(math.floor(min(ends)) - 1, 0)
    high = min(math.floor(max(ends)) + 3, size)
    if high <= low:  # the slab lies beyond the input: border padding reads its edge plane
        low, high = (size - 1, size) if low >= size else (0, 1)
    return low, high


def _shifted(affine: Any, planes: int) -> np.ndarray:
    """``affine`` of a grid that starts ``planes`` voxels further along its first axis."""
    matrix = convert_to_numpy(affine, dtype=np.float64).copy()
    matrix[:3, 3] += matrix[:3, 0] * planes
    return matrix
