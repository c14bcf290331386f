"""Random augmentation of training patches: spatial (image and labels together), then intensity (image only).

Configured by :class:`~pe_segmentation.data.settings.AugmentationSettings`; appended to the patch sampling by
:func:`~pe_segmentation.data.transforms.build_train_transforms`. In 2D mode patches are axial slices and the
augmentation works in the axial plane.

:func:`build_hu_augmentation` is the domain randomisation that works on patches still in HU, before the
window: contrast timing, calibration offset, slice thickness, noise, then the reconstruction kernel (blur or
sharpen). In HU because the window clips: a vessel at 700 HU is 1.0 after a [-100, 500] window, and scaling
that 1.0 cannot give the 350 HU the same vessel has in a late-phase scan; noise and blur in HU are clipped by
the window afterwards as a real scan's are. The order follows the scanner: enhancement and offset belong to
the object, slice thickness and noise to the acquisition, the kernel filters both.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    MapTransform,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSharpend,
    RandGaussianSmoothd,
    Randomizable,
    RandomizableTransform,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolution,
    RandSimulateLowResolutiond,
)

from pe_segmentation.data.settings import AugmentationSettings
from pe_segmentation.errors import ConfigError

#: HU of unenhanced blood: the pivot of :class:`RandContrastEnhancementd` (values at or below it are kept).
UNENHANCED_BLOOD_HU = 40.0


class RandContrastEnhancementd(RandomizableTransform, MapTransform):
    """Random contrast timing: HU above ``base_hu`` become ``base_hu + (HU - base_hu) * f``, ``f`` uniform in
    ``factors``; values at or below ``base_hu`` (lung, fat, unenhanced clot) are kept.

    Iodine adds attenuation to blood in proportion to its concentration, so an earlier or later bolus, or a
    weaker injection, scales the enhancement over blood's own ~40 HU. MONAI's ``RandScaleIntensityd`` would
    scale about 0 HU and move air and lung too; ``RandAdjustContrastd`` bends the range between each patch's
    own minimum and maximum, which has no fixed meaning in HU.
    """

    def __init__(
        self,
        keys: KeysCollection,
        factors: tuple[float, float],
        prob: float = 0.1,
        base_hu: float = UNENHANCED_BLOOD_HU,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.factors = (float(factors[0]), float(factors[1]))
        self.base_hu = float(base_hu)
        self.factor = 1.0

    def randomize(self, data: Any | None = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.factor = float(self.R.uniform(self.factors[0], self.factors[1]))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            image = image if isinstance(image, torch.Tensor) else torch.as_tensor(np.asarray(image))
            enhanced = self.base_hu + (image - self.base_hu) * self.factor
            d[key] = torch.where(image > self.base_hu, enhanced, image)
        return d


class _RandThickSlices(RandSimulateLowResolution):
    """``RandSimulateLowResolution`` along the last axis (z) only: the in-plane size is kept."""

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        shape = tuple(img.shape[1:])
        low = (*shape[:-1], max(1, round(shape[-1] * self.zoom_factor)))
        data = torch.as_tensor(img).as_subclass(torch.Tensor).unsqueeze(0).to(torch.float32)
        mode = str(self.upsample_mode)
        align = self.align_corners if mode in ("linear", "bilinear", "trilinear") else None
        down = torch.nn.functional.interpolate(data, size=low, mode=str(self.downsample_mode))
        out = torch.nn.functional.interpolate(down, size=shape, mode=mode, align_corners=align).squeeze(0)
        if isinstance(img, MetaTensor):
            result = MetaTensor(out)
            result.copy_meta_from(img)
            return result
        return out


class RandThickSlicesd(RandSimulateLowResolutiond):
    """Random thicker slices: MONAI's ``RandSimulateLowResolutiond`` along z alone, with area averaging down
    (a thick slice is the mean over its thickness) and linear interpolation back up (what the resampling of a
    thick-slice scan to the model's spacing does). ``zoom_range``: the factor on the number of slices."""

    def __init__(
        self, keys: KeysCollection, prob: float = 0.1, zoom_range: tuple[float, float] = (0.5, 1.0)
    ) -> None:
        super().__init__(
            keys, prob=prob, downsample_mode="area", upsample_mode="trilinear", zoom_range=zoom_range
        )
        self.sim_lowres_tfm = _RandThickSlices(
            prob=1.0, downsample_mode="area", upsample_mode="trilinear", zoom_range=zoom_range
        )


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


class EdgeReplicated(Randomizable, MapTransform):
    """Runs a random filter of one key on the patch padded by replicating its edge voxels, then crops back.

    MONAI's Gaussian filters pad with zeros, which in HU is water: a 400 HU vessel at the patch border would
    fade towards 0 HU over the kernel's width, an edge that real scans do not have.
    """

    def __init__(self, transform: MapTransform, key: str, margin: int) -> None:
        MapTransform.__init__(self, key)
        self.transform = transform
        self.key = key
        self.margin = int(margin)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> Randomizable:
        self.transform.set_random_state(seed, state)  # type: ignore[attr-defined]
        return self

    def randomize(self, data: Any) -> None:
        """Randomness is the wrapped transform's own."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.key]
        plain = torch.as_tensor(image).as_subclass(torch.Tensor)
        m = self.margin
        spatial = plain.ndim - 1
        padded = torch.nn.functional.pad(plain.unsqueeze(0), (m, m) * spatial, mode="replicate").squeeze(0)
        out = torch.as_tensor(self.transform({self.key: padded})[self.key]).as_subclass(torch.Tensor)
        out = out[(slice(None),) + (slice(m, -m),) * spatial].contiguous()
        if isinstance(image, MetaTensor):
            result = MetaTensor(out)
            result.copy_meta_from(image)
            d[self.key] = result
        else:
            d[self.key] = out
        return d


def _margin(*sigmas: float) -> int:
    """Voxels a chain of Gaussian kernels reaches (MONAI truncates each at 4 SD), at least 1."""
    return int(sum(math.ceil(4.0 * s) for s in sigmas)) + 1


def build_hu_augmentation(
    aug: AugmentationSettings, spatial_dims: int, image_key: str = "image"
) -> list[MapTransform]:
    """The domain randomisation of patches still in HU (image only; see the module docstring for the order).

    Empty when every probability is 0. In 2D mode (axial slices ``(C, H, W)``) there is no z to thicken, so
    ``thick_slice_prob`` is refused there.
    """
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims: expected 2 or 3, got {spatial_dims!r}")
    if spatial_dims == 2 and aug.thick_slice_prob > 0:
        raise ConfigError("augmentation.thick_slice_prob: 2D patches are single axial slices; set it to 0")
    steps: list[MapTransform] = []
    if aug.contrast_prob > 0:
        steps.append(RandContrastEnhancementd(image_key, factors=aug.contrast_scale, prob=aug.contrast_prob))
    if aug.hu_shift_prob > 0:
        steps.append(RandShiftIntensityd(image_key, offsets=aug.hu_shift, prob=aug.hu_shift_prob))
    if aug.thick_slice_prob > 0:
        steps.append(RandThickSlicesd(image_key, prob=aug.thick_slice_prob, zoom_range=aug.thick_slice_zoom))
    if aug.hu_noise_prob > 0:
        steps.append(RandGaussianNoised(image_key, prob=aug.hu_noise_prob, mean=0.0, std=aug.hu_noise_std))
    if aug.blur_prob > 0:
        # in-plane only (the kernel is a reconstruction filter of each slice; z is thick_slice_* 's)
        sigma = aug.blur_sigma  # sigma_z is dropped for 2D slices
        smooth = RandGaussianSmoothd(
            image_key, sigma_x=sigma, sigma_y=sigma, sigma_z=(0.0, 0.0), prob=aug.blur_prob
        )
        steps.append(EdgeReplicated(smooth, image_key, _margin(sigma[1])))
    if aug.sharpen_prob > 0:
        # MONAI's default kernels: sigma1 0.5-1 voxel, then sigma2 0.5 up to sigma1
        sharpen = RandGaussianSharpend(image_key, alpha=aug.sharpen_alpha, prob=aug.sharpen_prob)
        steps.append(EdgeReplicated(sharpen, image_key, _margin(1.0, 1.0)))
    return steps
