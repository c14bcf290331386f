"""nnU-Net v2's preprocessing of one CT, and the map from its network grid back to the CT's grid.

What nnU-Net's ``DefaultPreprocessor.run_case_npy`` does, in its order, on the voxels as SimpleITK reads them
(a :class:`~pe_segmentation.io.volume.Volume`'s axes reversed):

1. **transpose** the axes by the plans' ``transpose_forward`` (the spacing too);
2. **crop to non-zero**: the box of the voxels that are not exactly 0 (nnU-Net fills the mask's holes first,
   which cannot change its box);
3. **CT normalisation**: clip to the foreground's 0.5th and 99.5th percentiles, subtract its mean, divide by
   its SD (float32, before resampling, as nnU-Net does);
4. **resample** to the plan's spacing (``new = round(old_spacing / new_spacing * shape)``): a cubic spline
   (scikit-image's ``resize``: SciPy's ``zoom`` with ``grid_mode``, edge mode, then clipped to the input's range)
   over the whole volume, or, where the spacing is anisotropic (largest / smallest > 3), slice by slice in the
   plane and nearest along the low-resolution axis (:mod:`~pe_segmentation.inference.nnunet.resampling`
   computes it one axis at a time: 5 s instead of SciPy's 24 s for a 512 x 512 x 300 CT, in half the memory).

Back on the CT's grid nnU-Net resamples the logits linearly (nearest along a low-resolution axis), then
applies the softmax. :func:`nnunet_mapping` gives that map as a
:class:`~pe_segmentation.inference.postprocess.GridMapping`, so pe-seg's post-processing resamples only around
clots; with two classes the embolus log-odds is linear in the logits, so resampling it and then taking the
sigmoid is nnU-Net's softmax of the resampled logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pe_segmentation.errors import CheckpointError
from pe_segmentation.inference.nnunet.resampling import new_shape, resample_data, separate_axis
from pe_segmentation.inference.postprocess import Box, GridMapping, as_box, bounding_box
from pe_segmentation.io.volume import Volume


@dataclass(frozen=True)
class NnUNetPlan:
    """What preprocessing needs from the plans (spacing and shapes in the plans' transposed axis order).

    Attributes:
        transpose_forward: the plans' axis order, of SimpleITK's axes.
        spacing: the target spacing.
        intensity: the foreground intensity properties of the CT channel (``mean``, ``std``, percentiles).
        data_resampling: ``resampling_fn_data_kwargs`` (order, order_z, force_separate_z).
        logit_resampling: ``resampling_fn_probabilities_kwargs``.
    """

    transpose_forward: tuple[int, int, int]
    spacing: tuple[float, float, float]
    intensity: Mapping[str, float]
    data_resampling: Mapping[str, Any]
    logit_resampling: Mapping[str, Any]

    @classmethod
    def from_plans(cls, plans: Mapping[str, Any], configuration: Mapping[str, Any]) -> NnUNetPlan:
        """Read from ``plans.json`` and its 3d_fullres configuration.

        Raises:
            CheckpointError: resampling nnU-Net's way that pe-seg does not reproduce.
        """
        a, b, c = (int(v) for v in plans.get("transpose_forward", (0, 1, 2)))
        x, y, z = (float(v) for v in configuration["spacing"])
        data = dict(configuration.get("resampling_fn_data_kwargs") or {"order": 3, "order_z": 0})
        logits = dict(configuration.get("resampling_fn_probabilities_kwargs") or {"order": 1, "order_z": 0})
        if (
            int(data.get("order", 3)) != 3
            or int(data.get("order_z", 0)) != 0
            or int(logits.get("order_z", 0)) != 0
            or int(logits.get("order", 1)) != 1
        ):
            raise CheckpointError(
                "plans.json: pe-seg reproduces nnU-Net's default resampling (cubic data, linear logits, "
                f"nearest along a low-resolution axis), not data {data}, probabilities {logits}"
            )
        intensity = plans["foreground_intensity_properties_per_channel"]["0"]
        return cls((a, b, c), (x, y, z), dict(intensity), data, logits)

    def volume_axes(self) -> tuple[int, int, int]:
        """For each network axis, the :class:`Volume` axis it runs along (SimpleITK's axes are reversed)."""
        a, b, c = (2 - t for t in self.transpose_forward)
        return (a, b, c)


@dataclass
class NnUNetInput:
    """A CT on nnU-Net's network grid.

    Attributes:
        tensor: ``(1, *grid)`` float32, normalised and resampled.
        crop: the non-zero box, in the volume's axes.
        mapping: the network grid in the volume's grid (nnU-Net's resampling of the logits back).
        network_affine: voxel -> RAS of the network grid.
        separate_axis: the network axis resampled by nearest neighbour (anisotropic spacing), or ``None``.
    """

    tensor: torch.Tensor
    crop: Box
    mapping: GridMapping
    network_affine: np.ndarray
    separate_axis: int | None


def ct_normalize(data: np.ndarray, intensity: Mapping[str, float]) -> np.ndarray:
    """nnU-Net's ``CTNormalization`` in place on float32: clip to the percentiles, minus mean, over SD."""
    np.clip(data, intensity["percentile_00_5"], intensity["percentile_99_5"], out=data)
    data -= intensity["mean"]
    data /= max(float(intensity["std"]), 1e-8)
    return data


def preprocess_nnunet(volume: Volume, plan: NnUNetPlan) -> NnUNetInput:
    """nnU-Net's preprocessing of ``volume`` (HU), with the map back to its grid (see the module docstring)."""
    axes = plan.volume_axes()
    spacing = [float(volume.spacing[a]) for a in axes]
    view = volume.array.transpose(axes)
    box = bounding_box(view != 0) or as_box(slice(0, n) for n in view.shape)
    data = np.array(view[box], dtype=np.float32)
    target = new_shape(data.shape, spacing, plan.spacing)
    ct_normalize(data, plan.intensity)
    forward = separate_axis(plan.data_resampling.get("force_separate_z"), spacing, plan.spacing)
    grid = resample_data(data, target, forward, int(plan.data_resampling.get("order", 3)))
    del data
    crop = [slice(0, 0)] * 3
    for n, a in enumerate(axes):
        crop[a] = box[n]
    back = separate_axis(plan.logit_resampling.get("force_separate_z"), plan.spacing, spacing)
    cropped = tuple(s.stop - s.start for s in box)
    mapping, affine = nnunet_mapping(volume, axes, as_box(crop), cropped, target, back)
    tensor = torch.from_numpy(np.ascontiguousarray(grid))[None]
    return NnUNetInput(tensor, as_box(crop), mapping, affine, forward)


def nnunet_mapping(
    volume: Volume,
    axes: Sequence[int],
    crop: Box,
    cropped: Sequence[int],
    grid: Sequence[int],
    back_axis: int | None,
) -> tuple[GridMapping, np.ndarray]:
    """The network grid in the volume's grid as nnU-Net's resampling of the logits sees it, and the network
    grid's affine.

    Network axis ``n`` runs along volume axis ``axes[n]``; network coordinate of volume voxel ``v`` along it:
    ``scale * (v - crop.start + 0.5) - 0.5`` with ``scale = grid[n] / cropped[n]`` (SciPy's ``zoom`` with
    ``grid_mode``); nearest neighbour along ``back_axis``; 0 probability outside the crop.
    """
    to_network = [0, 0, 0]
    scale = [1.0, 1.0, 1.0]
    offset = [0.0, 0.0, 0.0]
    nearest = [False, False, False]
    voxel_of_network = np.eye(4)
    for n, a in enumerate(axes):
        to_network[a] = n
        ratio = 1.0 if grid[n] == cropped[n] else float(grid[n]) / float(cropped[n])
        start = crop[a].start
        scale[a] = ratio
        offset[a] = (0.5 - start) * ratio - 0.5
        nearest[a] = back_axis == n and grid[n] != cropped[n]
        voxel_of_network[:, n] = 0.0
        voxel_of_network[a, n] = 1.0 / ratio
        voxel_of_network[a, 3] = (0.5 / ratio) - 0.5 + start
    mapping = GridMapping(
        original_shape=volume.shape,
        network_shape=(int(grid[0]), int(grid[1]), int(grid[2])),
        axes=(to_network[0], to_network[1], to_network[2]),
        scale=(scale[0], scale[1], scale[2]),
        offset=(offset[0], offset[1], offset[2]),
        body_box=crop,
        nearest=(nearest[0], nearest[1], nearest[2]),
    )
    return mapping, volume.affine @ voxel_of_network
