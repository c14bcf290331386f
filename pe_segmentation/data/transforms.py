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
5. ``ScaleIntensityRanged``: HU to network input, clipped (``preprocessing.normalization``): the HU window
   onto [0, 1] (scheme ``window``, the default), or nnU-Net's CT scheme (``ct_foreground``: clip to the
   labelled foreground's 0.5th-99.5th percentiles, subtract its mean, divide by its SD), which is the same
   clipped linear map with other end points (``PreprocessingSettings.intensity_map``).
6. ``EnsureTyped`` to float32 ``MetaTensor``.

Every step is invertible (or leaves geometry alone), so ``Invertd`` maps a prediction made on the preprocessed
image back onto the original grid (:func:`build_inverse`). Steps 1-4 alone are :func:`build_geometry_transforms`
and step 5 alone :func:`build_intensity_transforms`: the preprocessed store keeps the first's output in HU and
applies the second to what it reads, with :func:`build_patch_sampler` and :func:`build_patch_transforms` for
training patches (:mod:`pe_segmentation.data.store_dataset`).

Training adds ``SpatialPadd`` (volumes smaller than a patch), the label's foreground indices (cached with the
volume) and :class:`~pe_segmentation.data.sampling.RandOffsetPosNegCropd` (positive and negative patches, the
sampled voxel anywhere in the patch), both from :mod:`pe_segmentation.data.sampling`, then augmentation
(:mod:`pe_segmentation.data.augmentation`), in :func:`build_train_transforms`. With HU-space domain
randomisation on (``AugmentationSettings.has_hu``: contrast timing, HU offset, thick slices, noise, kernels),
step 5 moves: the volume is cached and cut into patches in HU (padding with air), each patch is randomised in
HU, then normalised, then augmented as usual; with it off (the default) the chain is the one above. In 2D mode
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
from pe_segmentation.data.sampling import (
    FG_INDICES_POSTFIX,
    NEGATIVE_CLASS_INDICES_POSTFIX,
    ForegroundIndicesd,
    RandOffsetPosNegCropd,
)
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

#: HU of air: the padding of patches that are normalised after HU-space augmentation.
AIR_HU = -1024.0

#: The preprocessing settings that only the intensity step reads (:func:`_intensity_list`); the geometry
#: chain's fingerprint leaves them out.
INTENSITY_KEYS = frozenset({"hu_window", "normalization"})


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


def _settings_fingerprint(settings: PreprocessingSettings) -> dict[str, Any]:
    """The preprocessing settings as fingerprints record them. Under the default window scheme the
    ``normalization`` entry is left out, so that caches written before that setting existed stay valid."""
    parts = settings.to_dict()
    if settings.normalization.scheme == "window":
        del parts["normalization"]
    return parts


def _preprocessing_list(
    settings: PreprocessingSettings,
    keys: tuple[str, ...],
    reader: ImageReader | str | None,
    normalise: bool = True,
    load_dtype: type | None = np.float32,
) -> list[MapTransform]:
    """The preprocessing steps as a flat list (so that dataset caching sees every deterministic step).

    ``normalise=False`` leaves the image in HU (training with HU-space augmentation normalises its patches
    later); ``load_dtype=None`` keeps the voxels in their stored type until resampling makes them float32."""
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
    if normalise:
        steps += _intensity_list(settings, image_key)
    steps.append(EnsureTyped(keys, dtype=torch.float32))
    return steps


def _intensity_list(settings: PreprocessingSettings, image_key: str) -> list[MapTransform]:
    """The intensity step of the preprocessing, pointwise and clipped: the HU window onto [0, 1], or nnU-Net's
    CT scheme (clip, subtract the foreground mean, divide by its SD). Both are one clipped linear map
    (``settings.intensity_map``), so one MONAI transform runs either, in one pass over the volume.

    The one place that maps HU to network input: the preprocessing chain, the HU-space training patches and
    the preprocessed store (which keeps HU and applies this to what it reads) all take it from here."""
    a_min, a_max, b_min, b_max = settings.intensity_map
    return [ScaleIntensityRanged(image_key, a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True)]


def air_hu(settings: PreprocessingSettings) -> float:
    """What patches still in HU are padded with: air, and never above the window's (or clip's) low end."""
    return min(AIR_HU, settings.intensity_map[0])


def build_geometry_transforms(
    settings: PreprocessingSettings | None = None,
    keys: Sequence[str] = ("image", "label"),
    reader: ImageReader | str | None = None,
) -> Compose:
    """The preprocessing without its intensity step: loaded, reoriented, body-cropped and resampled volumes
    still in HU (float32). What the preprocessed store keeps; :func:`build_intensity_transforms` after it
    gives :func:`build_preprocessing`'s output.

    Its fingerprint leaves out the intensity settings (``hu_window``, ``normalization``): the store applies them when it reads,
    so changing them does not rebuild it."""
    settings = settings if settings is not None else PreprocessingSettings()
    keys = _check_keys(keys)
    reader = default_reader() if reader is None else reader
    geometry = {k: v for k, v in settings.to_dict().items() if k not in INTENSITY_KEYS}
    fingerprint = transform_fingerprint(
        chain="geometry", keys=keys, reader=type(reader).__name__, pre=geometry
    )
    return _compose(_preprocessing_list(settings, keys, reader, normalise=False), fingerprint)


def build_intensity_transforms(
    settings: PreprocessingSettings | None = None, image_key: str = "image"
) -> Compose:
    """The intensity step of the preprocessing alone (see :func:`build_geometry_transforms`)."""
    settings = settings if settings is not None else PreprocessingSettings()
    return Compose([*_intensity_list(settings, image_key), EnsureTyped(image_key, dtype=torch.float32)])


def build_preprocessing(
    settings: PreprocessingSettings | None = None,
    keys: Sequence[str] = ("image", "label"),
    reader: ImageReader | str | None = None,
    load_dtype: type | None = np.float32,
) -> Compose:
    """The deterministic preprocessing chain (see the module docstring for the order and why).

    Args:
        settings: preprocessing settings; ``None`` takes the defaults.
        keys: data keys to load; the first is the CT image (normalised, source of the body crop), the others are
            labels (nearest-neighbour resampling, binarised when ``settings.binarize_label``).
        reader: image reader for ``LoadImaged``; ``None`` takes :func:`default_reader`.
        load_dtype: the dtype ``LoadImaged`` gives the voxels; ``None`` keeps the reader's.

    Returns:
        A ``Compose`` turning ``{"image": path, "label": path, ...}`` into float32 ``MetaTensor`` s of shape
        ``(1, X, Y, Z)`` in RAS, image values in [0, 1] under the default window (see ``normalization``).
    """
    settings = settings if settings is not None else PreprocessingSettings()
    if not isinstance(settings, PreprocessingSettings):
        raise TypeError(f"settings must be PreprocessingSettings, got {type(settings).__name__}")
    keys = _check_keys(keys)
    reader = default_reader() if reader is None else reader
    # a load dtype other than the default changes what a cache would hold (left out otherwise: same hashes)
    dtype = {} if load_dtype is np.float32 else {"load_dtype": str(load_dtype)}
    fingerprint = transform_fingerprint(
        chain="preprocessing",
        keys=keys,
        reader=type(reader).__name__,
        pre=_settings_fingerprint(settings),
        **dtype,
    )
    return _compose(_preprocessing_list(settings, keys, reader, load_dtype=load_dtype), fingerprint)


def _patch_steps(
    keys: tuple[str, ...], patch: PatchSettings, pad_hu: float | None = None, pad: float = 0.0
) -> list[MapTransform]:
    """Padding to the patch size, the cached foreground indices and the positive/negative patch sampling."""
    crop = patch.crop_size
    label_key = keys[1]
    # Volumes smaller than a patch (e.g. a thin slab) are padded with air so that every patch has the
    # configured size and patches batch together: ``pad`` for a normalised image (the normalised value of air,
    # 0 under the default window), ``pad_hu`` for an image still in HU. Labels are padded with 0.
    image_pad = pad if pad_hu is None else pad_hu
    pads: list[MapTransform] = (
        [SpatialPadd(keys, spatial_size=crop, mode="constant", value=0)]
        if image_pad == 0
        else [
            SpatialPadd(keys[0], spatial_size=crop, mode="constant", value=image_pad),
            SpatialPadd(keys[1:], spatial_size=crop, mode="constant", value=0),
        ]
    )
    # cached with the volume: sampling needs no pass over the label
    indices = [ForegroundIndicesd(label_key, classes=patch.positive_classes)]
    if patch.negative_classes is not None:
        indices.append(
            ForegroundIndicesd(
                label_key, classes=patch.negative_classes, postfix=NEGATIVE_CLASS_INDICES_POSTFIX
            )
        )
    return [*pads, *indices, build_patch_sampler(keys, patch)]


def build_patch_sampler(keys: Sequence[str], patch: PatchSettings) -> RandOffsetPosNegCropd:
    """The positive/negative patch sampling of training (the first label guides it): ``samples_per_volume``
    crops of ``patch.crop_size``, each holding a label foreground voxel with probability ``pos_fraction``.

    The preprocessed store (:mod:`pe_segmentation.data.store_dataset`) draws its crop boxes with it too, from
    the stored foreground indices, so both ways of feeding training sample alike."""
    keys = _check_keys(keys)
    label_key = keys[1]
    return RandOffsetPosNegCropd(
        keys,
        label_key=label_key,
        spatial_size=patch.crop_size,
        pos=patch.pos_fraction,
        neg=1.0 - patch.pos_fraction,
        num_samples=patch.samples_per_volume,
        fg_indices_key=f"{label_key}{FG_INDICES_POSTFIX}",
        negative_indices_key=(
            None if patch.negative_classes is None else f"{label_key}{NEGATIVE_CLASS_INDICES_POSTFIX}"
        ),
        negative_class_fraction=0.0 if patch.negative_classes is None else patch.negative_class_fraction,
    )


def _after_crop(
    pre: PreprocessingSettings,
    patch: PatchSettings,
    aug: AugmentationSettings | None,
    keys: tuple[str, ...],
    in_hu: bool,
) -> list[MapTransform]:
    """What each patch goes through once cut: in 2D the squeeze to ``(C, H, W)``; for patches cut in HU
    (``in_hu``) the HU-space domain randomisation and then the intensity step; then augmentation."""
    steps: list[MapTransform] = []
    if patch.spatial_dims == 2:
        steps.append(SqueezeDimd(keys, dim=-1))  # (C, H, W, 1) -> (C, H, W)
    if in_hu:
        if aug is not None and aug.has_hu:
            steps += build_hu_augmentation(aug, patch.spatial_dims, keys[0])
        steps += _intensity_list(pre, keys[0])
    if aug is not None:
        steps += build_augmentation(aug, patch.spatial_dims, patch.patch_size or (), keys[0], keys[1:])
        steps.append(EnsureTyped(keys, dtype=torch.float32))
    return steps


def build_patch_transforms(
    pre: PreprocessingSettings | None = None,
    patch: PatchSettings | None = None,
    aug: AugmentationSettings | None = None,
    keys: Sequence[str] = ("image", "label"),
) -> Compose:
    """The transforms of a training patch cut in HU from a volume of :func:`build_geometry_transforms`
    (what the preprocessed store feeds): HU-space domain randomisation when on, the intensity step
    (:func:`build_intensity_transforms`), then augmentation; in 2D the squeeze to one axial slice first.

    The same steps, in the same order, as :func:`build_train_transforms` applies after its crop; the intensity
    step is pointwise, so windowing a patch equals cutting it from a windowed volume."""
    pre = pre if pre is not None else PreprocessingSettings()
    patch = patch if patch is not None else PatchSettings()
    keys = _check_keys(keys)
    if len(keys) < 2:
        raise ConfigError(f"training needs an image and a label key, got {list(keys)}")
    return Compose(_after_crop(pre, patch, aug, keys, in_hu=True))


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
    # With HU-space domain randomisation the volume is cached and cut into patches in HU; each patch is
    # randomised, then normalised, then augmented as usual. Padding is then air (below any window or clip).
    pad_hu = air_hu(pre) if in_hu else None
    steps = _preprocessing_list(pre, keys, reader, normalise=not in_hu) + _patch_steps(
        keys, patch, pad_hu, pad=pre.air_value
    )
    steps += _after_crop(pre, patch, aug, keys, in_hu)
    # Only the deterministic prefix (preprocessing and padding) is cached, so only it enters the fingerprint.
    parts: dict[str, Any] = {"pad_hu": pad_hu, "window": "after_hu_augmentation"} if in_hu else {}
    if patch.positive_classes is not None:  # the cached indices are of those classes only
        parts["positive_classes"] = list(patch.positive_classes)
    if patch.negative_classes is not None:  # a second cached index list
        parts["negative_classes"] = list(patch.negative_classes)
    fingerprint = transform_fingerprint(
        chain="train",
        keys=keys,
        reader=type(reader).__name__,
        pre=_settings_fingerprint(pre),
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
