"""Random augmentation of training patches: spatial (image and labels together), then intensity (image only).

Configured by :class:`~pe_segmentation.data.settings.AugmentationSettings`; appended to the patch sampling by
:func:`~pe_segmentation.data.transforms.build_train_transforms`. In 2D mode patches are axial slices and the
augmentation works in the axial plane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.transforms import (
    MapTransform,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from pe_segmentation.data.settings import AugmentationSettings
from pe_segmentation.errors import ConfigError


def build_augmentation(
    aug: AugmentationSettings,
    spatial_dims: int,
    patch_size: Sequence[int],
    image_key: str = "image",
    label_keys: Sequence[str] = ("label",),
) -> list[MapTransform]:
    """Random augmentation of patches: spatial (image and labels together), then intensity (image only).

    One dictionary transform per operation over all keys, so image and labels receive the same random flip,
    rotation and zoom and stay aligned; labels are resampled nearest-neighbour.

    Args:
        aug: augmentation settings.
        spatial_dims: 2 (axial slices) or 3.
        patch_size: spatial size of the patches (lets the random affine cache its sampling grid).
        image_key: the image key (intensity augmentation applies to it only).
        label_keys: label keys.
    """
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims: expected 2 or 3, got {spatial_dims!r}")
    if len(patch_size) != spatial_dims:
        raise ConfigError(f"patch size {list(patch_size)} does not match spatial_dims={spatial_dims}")
    keys = (image_key, *label_keys)
    steps: list[MapTransform] = []
    if aug.flip:
        steps += [RandFlipd(keys, prob=aug.flip_prob, spatial_axis=axis) for axis in range(spatial_dims)]
    if aug.rotate90:
        # Quarter turns in the axial plane only: axes 0 and 1 are R and A after RAS reorientation.
        steps.append(RandRotate90d(keys, prob=aug.prob, max_k=3, spatial_axes=(0, 1)))
    if aug.has_affine:
        angle = math.radians(aug.rotate_range_deg)
        steps.append(
            RandAffined(
                keys,
                spatial_size=tuple(patch_size),
                prob=aug.prob,
                rotate_range=(angle,) * (1 if spatial_dims == 2 else 3),
                scale_range=(aug.scale_range,) * spatial_dims,
                mode=["bilinear"] + ["nearest"] * len(label_keys),
                padding_mode="zeros",
                cache_grid=True,
            )
        )
    if aug.scale_intensity > 0:
        steps.append(RandScaleIntensityd(image_key, factors=aug.scale_intensity, prob=aug.prob))
    if aug.shift_intensity > 0:
        steps.append(RandShiftIntensityd(image_key, offsets=aug.shift_intensity, prob=aug.prob))
    if aug.noise_std > 0:
        steps.append(RandGaussianNoised(image_key, prob=aug.prob, mean=0.0, std=aug.noise_std))
    return steps
