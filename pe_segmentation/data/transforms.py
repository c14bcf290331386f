"""MONAI transform chains of pe-seg: one preprocessing for training, validation, inference and the bundle.

Preprocessing (:func:`build_preprocessing`), in this order:

1. ``LoadImaged`` with pe-seg's reader (DICOM folders, NIfTI, NRRD, MHA; RAS affines matching SimpleITK),
   ``EnsureChannelFirstd``; labels must be integer masks (:class:`CheckLabelValuesd`) and are binarised
   (``> 0``) when configured.
2. ``Orientationd`` to RAS.
3. ``CropForegroundd`` to the body: voxels above ``body_threshold_hu``, **in HU, before windowing**. After the
   default [-100, 500] HU window, air (-1000 HU) and the -500 HU body threshold both map to 0, so the body
   cannot be told from air any more; thresholding first keeps the threshold meaningful whatever the window.
   Cropping also comes **before resampling**, so the (costly) resampling only runs on the body box.
4. ``Spacingd`` to the configured spacing (bilinear for the image, nearest for labels).
5. ``ScaleIntensityRanged``: HU window to [0, 1], clipped.
6. ``EnsureTyped`` to float32 ``MetaTensor``.

Every step is invertible (or leaves geometry alone), so ``Invertd`` maps a prediction made on the preprocessed
image back onto the original grid (:func:`build_inverse`).

Training adds ``SpatialPadd`` (volumes smaller than a patch), the label's foreground indices (cached with the
volume) and :class:`~pe_segmentation.data.sampling.RandOffsetPosNegCropd` (positive and negative patches, the
sampled voxel anywhere in the patch), both from :mod:`pe_segmentation.data.sampling`, then augmentation
(:mod:`pe_segmentation.data.augmentation`), in :func:`build_train_transforms`. With HU-space domain
randomisation on (``AugmentationSettings.has_hu``: contrast timing, HU offset, thick slices, noise, kernels),
step 5 moves: the volume is cached and cut into patches in HU (padding with air), each patch is randomised in
HU, then windowed, then augmented as usual; with it off (the default) the chain is the one above. In 2D mode
(``PatchSettings.spatial_dims == 2``) the crop is ``(H, W, 1)`` — one axial slice, as the original 2D UNets
were trained — and the last axis is squeezed so networks see ``(C, H, W)``; augmentation then works in the
axial plane.

Validation and inference always see whole volumes ``(C, X, Y, Z)``, in 2D mode too. A 2D network is evaluated
on a volume slice by slice: ``monai.inferers.SliceInferer(roi_size=(H, W), spatial_dim=2)`` runs a 2D
sliding window over each axial slice and stacks the results back into a volume, so validation metrics and
inference outputs are volumetric in both modes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import ImageReader
from monai.transforms import (
    AsDiscreted,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    Invertd,
    LoadImaged,
    MapTransform,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
    SqueezeDimd,
)

from pe_segmentation.data.augmentation import build_augmentation, build_hu_augmentation
from pe_segmentation.data.label_values import CheckLabelValuesd
from pe_segmentation.data.sampling import FG_INDICES_POSTFIX, ForegroundIndicesd, RandOffsetPosNegCropd
from pe_segmentation.data.settings import AugmentationSettings, PatchSettings, PreprocessingSettings
from pe_segmentation.errors import ConfigError
from pe_segmentation.io.monai_reader import PESegReader

#: Attribute set on every ``Compose`` built here: a stable text naming the settings of its deterministic
#: prefix (the part a dataset cache stores). ``build_dataset(cache="disk")`` hashes it, so that changing the
#: preprocessing invalidates the disk cache while changing augmentation does not.
FINGERPRINT_ATTR = "pe_seg_fingerprint"

#: Attribute set (true) on a chain whose random part never writes to the cached data it starts from, so that a
#: memory cache may hand over its items without the deep copy MONAI makes by default (``copy_cache``): a copy of
#: the whole volume on every draw, 26 MB for a 160x160x128 phantom with its label.
CACHE_READ_ONLY_ATTR = "pe_seg_cache_read_only"

#: HU of air: the padding of patches that are windowed after HU-space augmentation.
AIR_HU = -1024.0


def default_reader() -> ImageReader:
    """The image reader of every ``LoadImaged`` in pe-seg: :class:`PESegReader` (DICOM folders via SimpleITK,
    NIfTI/NRRD/MHA; RAS affines equal to SimpleITK's geometry)."""
    return PESegReader()


class BodyMask:
    """``select_fn`` of the body crop: voxels above a HU threshold.

    Hand-written because MONAI's ``CropForegroundd`` crops to an empty box when nothing is selected (e.g. an
    image that is not in HU); this mask then selects every voxel, so such an image is kept whole. A class
    rather than a lambda so that the transform chain pickles (DataLoader workers, disk cache).
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, image: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        mask = image > self._bound(image.dtype)
        if mask.any():
            return mask
        return torch.ones_like(mask) if isinstance(mask, torch.Tensor) else np.ones_like(mask)

    def _bound(self, dtype: torch.dtype | np.dtype) -> float | int:
        """The threshold to compare with: for integer voxels its floor as an integer (``x > t`` is ``x >
        floor(t)`` for integers), so that the comparison runs in the voxels' own type instead of a float32 copy
        of the CT (0.4 GB for a 512 x 512 x 400 int16 CT)."""
        if isinstance(dtype, torch.dtype):
            if dtype.is_floating_point or dtype == torch.bool:
                return self.threshold
            info: Any = torch.iinfo(dtype)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
        else:
            return self.threshold
        bound = math.floor(self.threshold)
        return bound if int(info.min) <= bound <= int(info.max) else self.threshold

    def __repr__(self) -> str:
        return f"BodyMask(threshold={self.threshold:g})"


def _check_keys(keys: Sequence[str]) -> tuple[str, ...]:
    if isinstance(keys, str):
        keys = (keys,)
    keys = tuple(keys)
    if not keys or not all(isinstance(k, str) and k for k in keys) or len(set(keys)) != len(keys):
        raise ConfigError(f"transform keys must be distinct non-empty names, image first; got {list(keys)}")
    return keys


def transform_fingerprint(**parts: Any) -> str:
    """A stable text (sorted JSON) describing how a chain was built; see :data:`FINGERPRINT_ATTR`."""
    return json.dumps(parts, sort_keys=True, default=str)


def _compose(transforms: Sequence[Any], fingerprint: str) -> Compose:
    compose = Compose(list(transforms))
    setattr(compose, FINGERPRINT_ATTR, fingerprint)
    return compose


def _preprocessing_list(
    settings: PreprocessingSettings,
    keys: tuple[str, ...],
    reader: ImageReader | str | None,
    window: bool = True,
    load_dtype: type | None = np.float32,
) -> list[MapTransform]:
    """The preprocessing steps as a flat list (so that dataset caching sees every deterministic step).

    ``window=False`` leaves the image in HU (training with HU-space augmentation windows its patches later);
    ``load_dtype=None`` keeps the voxels in their stored type until resampling makes them float32."""
    image_key, label_keys = keys[0], keys[1:]
    steps: list[MapTransform] = [
        LoadImaged(keys, reader=reader, image_only=True, dtype=load_dtype),  # type: ignore[arg-type]  # MONAI annotates classes only
        EnsureChannelFirstd(keys, channel_dim="no_channel"),
    ]
    if label_keys:
        steps.append(CheckLabelValuesd(label_keys))
    if label_keys and settings.binarize_label:
        steps.append(AsDiscreted(label_keys, threshold=0.5))  # integer values checked: the same as > 0
    # Labels given explicitly: our readers' affines are RAS by contract (MONAI's default would follow the
    # MetaTensor's "space" entry instead, and warns about the change).
    steps.append(Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))))
    if settings.crop_foreground:
        steps.append(
            CropForegroundd(
                keys,
                source_key=image_key,
                select_fn=BodyMask(settings.body_threshold_hu),
                margin=settings.margin,
                allow_smaller=True,
            )
        )
    if settings.monai_pixdim is not None:
        modes = ["bilinear"] + ["nearest"] * len(label_keys)
        # float32 resampling: 1.8x faster than MONAI's float64 default on a 512x512x300 CT (max difference
        # 2e-5 in windowed units); nearest-neighbour ties at exact half-voxel positions may break either way.
        steps.append(Spacingd(keys, pixdim=settings.monai_pixdim, mode=modes, dtype=np.float32))
    if window:
        steps.append(_window(settings, image_key))
    steps.append(EnsureTyped(keys, dtype=torch.float32))
    return steps


def _window(settings: PreprocessingSettings, image_key: str) -> MapTransform:
    """The HU window to [0, 1], clipped."""
    low, high = settings.hu_window
    return ScaleIntensityRanged(image_key, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)


def build_preprocessing(
    settings: PreprocessingSettings | None = None,
    keys: Sequence[str] = ("image", "label"),
    reader: ImageReader | str | None = None,
    load_dtype: type | None = np.float32,
) -> Compose:
    """The deterministic preprocessing chain (see the module docstring for the order and why).

    Args:
        settings: preprocessing settings; ``None`` takes the defaults.
        keys: data keys to load; the first is the CT image (windowed, source of the body crop), the others are
            labels (nearest-neighbour resampling, binarised when ``settings.binarize_label``).
        reader: image reader for ``LoadImaged``; ``None`` takes :func:`default_reader`.
        load_dtype: the dtype ``LoadImaged`` gives the voxels; ``None`` keeps the reader's.

    Returns:
        A ``Compose`` turning ``{"image": path, "label": path, ...}`` into float32 ``MetaTensor`` s of shape
        ``(1, X, Y, Z)`` in RAS, image values in [0, 1].
    """
    settings = settings if settings is not None else PreprocessingSettings()
    if not isinstance(settings, PreprocessingSettings):
        raise TypeError(f"settings must be PreprocessingSettings, got {type(settings).__name__}")
    keys = _check_keys(keys)
    reader = default_reader() if reader is None else reader
    # a load dtype other than the default changes what a cache would hold (left out otherwise: same hashes)
    dtype = {} if load_dtype is np.float32 else {"load_dtype": str(load_dtype)}
    fingerprint = transform_fingerprint(
        chain="preprocessing", keys=keys, reader=type(reader).__name__, pre=settings.to_dict(), **dtype
    )
    return _compose(_preprocessing_list(settings, keys, reader, load_dtype=load_dtype), fingerprint)


def _patch_steps(
    keys: tuple[str, ...], patch: PatchSettings, pad_hu: float | None = None
) -> list[MapTransform]:
    """Padding to the patch size, the cached foreground indices and the positive/negative patch sampling."""
    crop = patch.crop_size
    label_key = keys[1]
    # Volumes smaller than a patch (e.g. a thin slab) are padded with 0 (= below the window) so that every
    # patch has the configured size and patches batch together; an image still in HU is padded with air.
    pads: list[MapTransform] = (
        [SpatialPadd(keys, spatial_size=crop, mode="constant", value=0)]
        if pad_hu is None
        else [
            SpatialPadd(keys[0], spatial_size=crop, mode="constant", value=pad_hu),
            SpatialPadd(keys[1:], spatial_size=crop, mode="constant", value=0),
        ]
    )
    steps: list[MapTransform] = [
        *pads,
        ForegroundIndicesd(label_key),  # cached with the volume: sampling needs no pass over the label
        RandOffsetPosNegCropd(
            keys,
            label_key=label_key,
            spatial_size=crop,
            pos=patch.pos_fraction,
            neg=1.0 - patch.pos_fraction,
            num_samples=patch.samples_per_volume,
            fg_indices_key=f"{label_key}{FG_INDICES_POSTFIX}",
        ),
    ]
    if patch.spatial_dims == 2:
        steps.append(SqueezeDimd(keys, dim=-1))  # (C, H, W, 1) -> (C, H, W)
    return steps


def build_train_transforms(
    pre: PreprocessingSettings | None = None,
    patch: PatchSettings | None = None,
    aug: AugmentationSettings | None = None,
    keys: Sequence[str] = ("image", "label"),
    reader: ImageReader | str | None = None,
) -> Compose:
    """Preprocessing, then ``samples_per_volume`` random patches per volume, then augmentation.

    Patches hold a label foreground voxel with probability ``patch.pos_fraction`` and a background voxel
    otherwise, at a random place in the patch (:class:`~pe_segmentation.data.sampling.RandOffsetPosNegCropd`).
    The chain returns a *list* of patch dicts per volume; MONAI's ``DataLoader`` (``list_data_collate``)
    flattens them into one batch. In 2D mode each patch is one axial slice ``(C, H, W)``.

    Args:
        pre: preprocessing settings (``None``: defaults).
        patch: patch settings (``None``: defaults).
        aug: augmentation settings; ``None`` turns augmentation off.
        keys: image key first, then label keys; the first label guides positive/negative sampling.
        reader: image reader (``None``: :func:`default_reader`).
    """
    pre = pre if pre is not None else PreprocessingSettings()
    patch = patch if patch is not None else PatchSettings()
    keys = _check_keys(keys)
    if len(keys) < 2:
        raise ConfigError(f"training needs an image and a label key, got {list(keys)}")
    reader = default_reader() if reader is None else reader
    in_hu = aug is not None and aug.has_hu
    if in_hu and aug is not None:
        # HU-space domain randomisation: the volume is cached and cut into patches in HU; each patch is
        # randomised, then windowed, then augmented as usual. Padding is air (below any window).
        pad_hu = min(AIR_HU, pre.hu_window[0])
        steps = _preprocessing_list(pre, keys, reader, window=False) + _patch_steps(keys, patch, pad_hu)
        steps += build_hu_augmentation(aug, patch.spatial_dims, keys[0])
        steps.append(_window(pre, keys[0]))
    else:
        steps = _preprocessing_list(pre, keys, reader) + _patch_steps(keys, patch)
    if aug is not None:
        steps += build_augmentation(aug, patch.spatial_dims, patch.patch_size or (), keys[0], keys[1:])
        steps.append(EnsureTyped(keys, dtype=torch.float32))
    # Only the deterministic prefix (preprocessing and padding) is cached, so only it enters the fingerprint.
    parts: dict[str, Any] = {"pad_hu": pad_hu, "window": "after_hu_augmentation"} if in_hu else {}
    fingerprint = transform_fingerprint(
        chain="train",
        keys=keys,
        reader=type(reader).__name__,
        pre=pre.to_dict(),
        pad=list(patch.crop_size),
        fg_indices=keys[1],
        **parts,
    )
    compose = _compose(steps, fingerprint)
    # the first random step is RandOffsetPosNegCropd, which only reads the volume and returns copies
    setattr(compose, CACHE_READ_ONLY_ATTR, True)
    return compose


def build_val_transforms(
    pre: PreprocessingSettings | None = None,
    keys: Sequence[str] = ("image", "label"),
    reader: ImageReader | str | None = None,
) -> Compose:
    """Validation: whole preprocessed volumes with their labels (2D models too: see the module docstring)."""
    return build_preprocessing(pre, keys=keys, reader=reader)


def build_inference_transforms(
    pre: PreprocessingSettings | None = None,
    image_key: str = "image",
    reader: ImageReader | str | None = None,
    load_dtype: type | None = np.float32,
) -> Compose:
    """Inference: the preprocessing of the image alone; invert predictions with :func:`build_inverse`.

    ``load_dtype=None`` keeps the CT in its stored type (int16 HU) through reorientation and the body crop, at
    half the memory of float32; resampling makes it float32 with the same values.
    """
    return build_preprocessing(pre, keys=(image_key,), reader=reader, load_dtype=load_dtype)


def build_inverse(
    transform: Compose,
    keys: Sequence[str] = ("pred",),
    orig_key: str = "image",
    nearest_interp: bool = False,
) -> Invertd:
    """``Invertd`` that maps predictions on the preprocessed grid back onto the original image grid.

    It replays, in reverse, the geometric operations recorded on ``data[orig_key]`` (resampling, crop,
    reorientation); intensity steps have no inverse and are skipped.

    Args:
        transform: the chain that produced ``data[orig_key]`` (from :func:`build_inference_transforms`).
        keys: prediction keys to invert; each must be a tensor ``(C, *spatial)`` on the preprocessed grid.
        orig_key: the preprocessed image key whose recorded operations are inverted.
        nearest_interp: resample nearest-neighbour (masks, labels) instead of each step's own mode
            (bilinear for probabilities).
    """
    keys = _check_keys(keys)
    return Invertd(
        keys,
        transform=transform,
        orig_keys=[orig_key] * len(keys),
        nearest_interp=nearest_interp,
        to_tensor=True,
    )


def fingerprint_hash(transform: Any) -> str:
    """SHA-256 of a chain's fingerprint (falls back to its class names for chains not built here)."""
    text = getattr(transform, FINGERPRINT_ATTR, None)
    if text is None:
        flat = transform.flatten().transforms if isinstance(transform, Compose) else [transform]
        text = ",".join(type(t).__name__ for t in flat)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
