"""Typed settings of the data pipeline: preprocessing, training patches and augmentation.

Each class is a frozen dataclass of primitives and tuples with defaults, validated in ``__post_init__`` with a
one-line :class:`~pe_segmentation.errors.ConfigError`. Field names are the YAML keys of the future config
schema, which embeds these classes; :meth:`from_dict` builds one from a plain mapping (YAML gives lists where
the fields hold tuples, which are normalised here) and :meth:`to_dict` gives the mapping back (their shared
base: :mod:`~pe_segmentation.data.settings_base`; ``preprocessing.normalization``:
:mod:`~pe_segmentation.data.normalization`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from pe_segmentation.data.normalization import NormalizationSettings
from pe_segmentation.data.settings_base import SettingsSection


@dataclass(frozen=True)
class PreprocessingSettings(SettingsSection):
    """The deterministic preprocessing shared by training, validation, inference and the bundle.

    Attributes:
        spacing: target voxel size in mm along R, A, S after reorientation. In a recipe, ``None`` (or a ``None``
            / 0 element, e.g. ``[0.7, 0.7, null]``) has training work that axis out from its training cases
            (:mod:`~pe_segmentation.data.target_spacing`), so a trained model always has all three
            (:attr:`fixed_spacing`). The transforms alone keep the input spacing along a ``None`` axis.
        hu_window: ``[low, high]`` HU mapped linearly to ``[0, 1]``, values outside clipped, under the default
            normalisation (scheme ``window``); the display window of previews under any scheme. The default
            keeps both contrast-filled arteries (250-500 HU) and emboli (20-90 HU).
        normalization: how HU become network inputs (:class:`NormalizationSettings`): the window above, or
            nnU-Net's CT scheme from the training set's foreground statistics.
        crop_foreground: crop to the bounding box of the body (voxels above ``body_threshold_hu``), which
            drops the air around the patient and most of the CT table's surroundings.
        body_threshold_hu: HU threshold of the body mask used for cropping (air is about -1000 HU).
        margin: voxels kept around the body box (on the reoriented input grid, before resampling).
        binarize_label: map label values > 0 to 1 (CAD-PE and other sources may number each clot).
    """

    section: ClassVar[str] = "preprocessing"

    spacing: tuple[float | None, float | None, float | None] | None = (1.0, 1.0, 1.0)
    hu_window: tuple[float, float] = (-100.0, 500.0)
    normalization: NormalizationSettings = field(default_factory=NormalizationSettings)
    crop_foreground: bool = True
    body_threshold_hu: float = -500.0
    margin: int = 4
    binarize_label: bool = True

    def __post_init__(self) -> None:
        if self.spacing is not None:
            spacing = self._sequence("spacing", (3,))
            self._set(
                "spacing",
                tuple(
                    None
                    if v is None or (v == 0 and not isinstance(v, bool))
                    else self._number("spacing", v, low=0, strict_low=True)
                    for v in spacing
                ),
            )
        low, high = (self._number("hu_window", v) for v in self._sequence("hu_window", (2,)))
        if low >= high:
            raise self._fail("hu_window", f"low must be below high, got [{low:g}, {high:g}]")
        self._set("hu_window", (low, high))
        self._set("normalization", self._normalization())
        self._bool("crop_foreground")
        self._set("body_threshold_hu", self._number("body_threshold_hu"))
        self._set("margin", self._int("margin", low=0))
        self._bool("binarize_label")

    def _normalization(self) -> NormalizationSettings:
        value = self.normalization
        if value is None:
            return NormalizationSettings()
        if isinstance(value, NormalizationSettings):
            return value
        if isinstance(value, Mapping):
            return NormalizationSettings.from_dict(value)
        raise self._fail(
            "normalization", f"expected a mapping (scheme: window | ct_foreground), got {value!r}"
        )

    @property
    def intensity_map(self) -> tuple[float, float, float, float]:
        """``(a_min, a_max, b_min, b_max)``: HU in ``[a_min, a_max]`` map linearly onto ``[b_min, b_max]``,
        values outside are clipped (MONAI's ``ScaleIntensityRange`` with ``clip=True``).

        The window maps ``hu_window`` onto [0, 1]. ``ct_foreground`` maps its clip range ``[lo, hi]`` onto
        ``[(lo - mean) / std, (hi - mean) / std]``: the line through those two points is ``(HU - mean) / std``,
        so this is nnU-Net's clip, subtract and divide in one pass over the volume.
        """
        norm = self.normalization
        if norm.scheme == "window":
            low, high = self.hu_window
            return (low, high, 0.0, 1.0)
        clip, mean, std = norm.clip, norm.mean, norm.std
        if clip is None or mean is None or std is None:  # checked when the settings are built
            raise self._fail("normalization", "scheme ct_foreground needs clip, mean and std")
        low, high = clip
        return (low, high, (low - mean) / std, (high - mean) / std)

    @property
    def air_value(self) -> float:
        """The normalised value of air (and of anything below the map's range): what patches are padded with,
        so that padding looks like the air around a patient (0 under the default window)."""
        return self.intensity_map[2]

    @property
    def fixed_spacing(self) -> tuple[float, float, float] | None:
        """``spacing`` when it gives every axis, else ``None`` (what a trained network needs: it is run at the
        one spacing it was trained at)."""
        if self.spacing is None or any(v is None for v in self.spacing):
            return None
        x, y, z = (float(v) for v in self.spacing if v is not None)
        return (x, y, z)

    @property
    def monai_pixdim(self) -> tuple[float, float, float] | None:
        """``spacing`` in MONAI's ``Spacingd`` form (0 keeps an axis), or ``None`` to skip resampling."""
        if self.spacing is None:
            return None
        x, y, z = (0.0 if v is None else float(v) for v in self.spacing)
        return (x, y, z)


@dataclass(frozen=True)
class PatchSettings(SettingsSection):
    """How training patches are sampled.

    Attributes:
        patch_size: patch size in voxels: 3 values in 3D; in 2D ``[H, W]`` (``[H, W, 1]`` is accepted) for one
            axial slice. ``None`` picks ``[96, 96, 96]`` (3D) or ``[256, 256]`` (2D).
        samples_per_volume: patches drawn from each loaded volume per epoch.
        pos_fraction: expected fraction of patches centred on embolus voxels; the rest are centred on
            background voxels. 1.0 gives only patches that contain label foreground.
        positive_classes: the label values a positive patch is centred on; ``None``: any non-zero value. With
            an artery class as a second target (phantoms labelled ``--vessel-label``: 1 embolus, 2 artery),
            ``[1]`` keeps positive patches on emboli, whose voxels are a few percent of the tree's.
        negative_classes: label values that some negative patches are centred on (hard negatives): with the
            vessels labelled (2 patent artery, 3 vein), ``[2, 3]`` shows the network the vessels that look like
            clot (unopacified veins, thin partial-volume arteries) far more often than patches centred anywhere
            off the emboli would. ``None``: negative patches are centred anywhere off the positive classes.
        negative_class_fraction: the share of negative patches centred on ``negative_classes`` (the rest
            anywhere off the positive classes); used only with ``negative_classes``.
        spatial_dims: 3 for volumetric networks, 2 for networks trained on axial slices.
    """

    section: ClassVar[str] = "patches"

    patch_size: tuple[int, ...] | None = None
    samples_per_volume: int = 4
    pos_fraction: float = 0.5
    positive_classes: tuple[int, ...] | None = None
    negative_classes: tuple[int, ...] | None = None
    negative_class_fraction: float = 0.5
    spatial_dims: int = 3

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3) or isinstance(self.spatial_dims, bool):
            raise self._fail("spatial_dims", f"expected 2 or 3, got {self.spatial_dims!r}")
        if self.patch_size is None:
            self._set("patch_size", (96, 96, 96) if self.spatial_dims == 3 else (256, 256))
        size = tuple(self._int("patch_size", v, low=1) for v in self._sequence("patch_size", (2, 3)))
        if self.spatial_dims == 3 and len(size) != 3:
            raise self._fail("patch_size", f"3D patches need 3 values, got {list(size)}")
        if self.spatial_dims == 2:
            if len(size) == 3 and size[2] != 1:
                raise self._fail("patch_size", f"2D patches are [H, W] (or [H, W, 1]), got {list(size)}")
            size = size[:2]
        self._set("patch_size", size)
        self._set("samples_per_volume", self._int("samples_per_volume", low=1))
        self._set("pos_fraction", self._number("pos_fraction", low=0.0, high=1.0))
        for name in ("positive_classes", "negative_classes"):
            classes = getattr(self, name)
            if classes is None:
                continue
            if isinstance(classes, (str, bytes)) or not isinstance(classes, (list, tuple)) or not classes:
                raise self._fail(name, f"expected a list of label values, got {classes!r}")
            self._set(name, tuple(sorted({self._int(name, v, low=1) for v in classes})))
        if self.negative_classes is not None:
            shared = set(self.negative_classes) & set(self.positive_classes or ())
            if self.positive_classes is None:
                raise self._fail(
                    "negative_classes", "needs positive_classes: the values positive patches are on"
                )
            if shared:
                raise self._fail("negative_classes", f"shares {sorted(shared)} with positive_classes")
        self._set("negative_class_fraction", self._number("negative_class_fraction", low=0.0, high=1.0))

    @property
    def crop_size(self) -> tuple[int, int, int]:
        """The 3D crop taken from a volume: the patch, or ``(H, W, 1)`` for one axial slice in 2D."""
        size = tuple(self.patch_size or ())
        if len(size) == 3:
            return (size[0], size[1], size[2])
        return (size[0], size[1], 1)


@dataclass(frozen=True)
class AugmentationSettings(SettingsSection):
    """Random augmentation of training patches (spatial on image and label together, intensity on the image).

    Attributes:
        flip: random flips along each spatial axis, each with probability ``flip_prob``.
        flip_prob: probability of each flip.
        rotate90: random quarter turns in the axial plane (probability ``prob``).
        rotate_range_deg: maximum absolute rotation in degrees (about each axis in 3D, in-plane in 2D);
            0 disables rotation.
        scale_range: maximum relative zoom of the random affine (0.1 = +-10 %); 0 disables zoom.
        scale_intensity: random intensity scaling ``v * (1 + f)`` with ``|f| <= scale_intensity``; 0 disables.
        shift_intensity: random intensity offset (windowed units, 0.1 = 60 HU with the default window).
        noise_std: standard deviation of additive Gaussian noise (windowed units); 0 disables.
        prob: probability of each of rotate90, affine, intensity scale, intensity shift and noise.

    Domain randomisation in HU, for the variety of real CTPA (scanners, kernels, doses, slice thicknesses,
    contrast timing). Each is off at probability 0 (the default), and while all are off the chain is exactly
    the one without them. When any is on, the patches are cut from the volume in HU and windowed after these
    steps (see :func:`~pe_segmentation.data.transforms.build_train_transforms`), in this order:

        contrast_prob: probability of rescaling the contrast enhancement: HU above 40 (unenhanced blood) are
            mapped to ``40 + (HU - 40) * f``, ``f`` drawn from ``contrast_scale``; lung, fat and clot
            (below about 40 HU) keep their values. Models bolus timing (pulmonary trunk 150-600 HU).
        contrast_scale: ``[low, high]`` range of ``f``.
        hu_shift_prob: probability of adding an offset drawn from ``hu_shift`` (HU) to every voxel
            (calibration and kVp differences between scanners).
        hu_shift: ``[low, high]`` range of the offset in HU.
        thick_slice_prob: probability of simulating thicker slices: the patch is averaged down along z (the
            last axis) by a factor drawn from ``thick_slice_zoom``, then linearly interpolated back (as the
            resampling of a thick-slice scan does). At a 1 mm model spacing, 0.2 is a 5 mm slice. 3D only.
        thick_slice_zoom: ``[low, high]`` range of the zoom factor along z, in (0, 1].
        hu_noise_prob: probability of adding Gaussian noise in HU (dose, patient size, slice thickness).
        hu_noise_std: the largest noise SD in HU; each draw takes a SD uniformly in ``[0, hu_noise_std]``.
        blur_prob: probability of a Gaussian blur in the axial plane (soft reconstruction kernels).
        blur_sigma: ``[low, high]`` range of the blur's SD in voxels, drawn for each in-plane axis.
        sharpen_prob: probability of unsharp masking (sharp reconstruction kernels), MONAI's
            ``RandGaussianSharpen`` with its default kernel widths.
        sharpen_alpha: ``[low, high]`` range of the sharpening weight.
    """

    section: ClassVar[str] = "augmentation"

    flip: bool = True
    flip_prob: float = 0.5
    rotate90: bool = False
    rotate_range_deg: float = 15.0
    scale_range: float = 0.1
    scale_intensity: float = 0.1
    shift_intensity: float = 0.1
    noise_std: float = 0.02
    prob: float = 0.2
    contrast_prob: float = 0.0
    contrast_scale: tuple[float, float] = (0.6, 1.6)
    hu_shift_prob: float = 0.0
    hu_shift: tuple[float, float] = (-20.0, 20.0)
    thick_slice_prob: float = 0.0
    thick_slice_zoom: tuple[float, float] = (0.2, 1.0)
    hu_noise_prob: float = 0.0
    hu_noise_std: float = 25.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.25, 1.0)
    sharpen_prob: float = 0.0
    sharpen_alpha: tuple[float, float] = (1.0, 3.0)

    #: The probabilities of the HU-space domain randomisation.
    HU_PROBS: ClassVar[tuple[str, ...]] = (
        "contrast_prob",
        "hu_shift_prob",
        "thick_slice_prob",
        "hu_noise_prob",
        "blur_prob",
        "sharpen_prob",
    )

    def __post_init__(self) -> None:
        self._bool("flip")
        self._bool("rotate90")
        self._set("flip_prob", self._number("flip_prob", low=0.0, high=1.0))
        self._set("rotate_range_deg", self._number("rotate_range_deg", low=0.0, high=180.0))
        self._set("scale_range", self._number("scale_range", low=0.0, high=0.9))
        self._set("scale_intensity", self._number("scale_intensity", low=0.0, high=0.9))
        self._set("shift_intensity", self._number("shift_intensity", low=0.0))
        self._set("noise_std", self._number("noise_std", low=0.0))
        self._set("prob", self._number("prob", low=0.0, high=1.0))
        for name in self.HU_PROBS:
            self._set(name, self._number(name, low=0.0, high=1.0))
        self._set("contrast_scale", self._range("contrast_scale", low=0.0, strict_low=True))
        self._set("hu_shift", self._range("hu_shift"))
        self._set("thick_slice_zoom", self._range("thick_slice_zoom", low=0.0, strict_low=True, high=1.0))
        self._set("hu_noise_std", self._number("hu_noise_std", low=0.0))
        self._set("blur_sigma", self._range("blur_sigma", low=0.0))
        self._set("sharpen_alpha", self._range("sharpen_alpha", low=0.0))

    def _range(
        self, name: str, *, low: float | None = None, high: float | None = None, strict_low: bool = False
    ) -> tuple[float, float]:
        first, second = (
            self._number(name, v, low=low, high=high, strict_low=strict_low)
            for v in self._sequence(name, (2,))
        )
        if first > second:
            raise self._fail(name, f"expected [low, high] with low <= high, got [{first:g}, {second:g}]")
        return (first, second)

    @property
    def has_hu(self) -> bool:
        """Whether any HU-space domain randomisation is on (patches are then windowed after it)."""
        return any(getattr(self, name) > 0 for name in self.HU_PROBS)

    @property
    def has_affine(self) -> bool:
        """Whether the random affine (rotation and/or zoom) is on."""
        return self.rotate_range_deg > 0 or self.scale_range > 0
