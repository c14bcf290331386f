"""The fingerprint of a training set: the figures its recipe is planned from, as nnU-Net gathers them.

Each case is read once, with the readers training uses (:func:`~pe_segmentation.io.loader.load_volume`), and
reduced to a few numbers along R, A, S (the axes the preprocessing reorients to):

* its voxel size and voxel counts, and the voxel counts of its body box (voxels above
  ``preprocessing.body_threshold_hu`` grown by ``margin``: what the preprocessing keeps; MONAI's
  ``generate_spatial_bounding_box``, as ``CropForegroundd`` calls it);
* the HU inside its labels (the foreground, here the emboli): every voxel, or a seeded random subset when the
  case holds more than its share of :data:`FOREGROUND_SAMPLES`. nnU-Net draws the same number from every case
  (10^8 in all); pe-seg pools the voxels themselves, so a case weighs by its clot burden, as in training;
* its emboli: the 26-connected components of the label (the definition the evaluation counts by) and their
  volumes in mL, with their size classes (:mod:`~pe_segmentation.data.embolus_sizes`).

Anything odd is listed, never fatal: a case that cannot be read (or whose label does not lie on its image's
grid, or holds other than integer values) is left out with the reason; a case whose spacing along an axis is
more than :data:`SPACING_OUTLIER_FACTOR` times off the median, or with no air in view (not in HU, or cropped),
is kept and listed. A missing file is an error of the datalist itself, refused when the datalist is read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from monai.transforms.utils import generate_spatial_bounding_box
from tqdm import tqdm

from pe_segmentation.data.embolus_sizes import CLASS_DEFINITIONS, SIZE_CLASSES, size_class
from pe_segmentation.data.label_values import integer_label_values
from pe_segmentation.data.settings import PreprocessingSettings
from pe_segmentation.data.target_spacing import ras_grid
from pe_segmentation.data.transforms import BodyMask
from pe_segmentation.errors import PESegError
from pe_segmentation.evaluation.detection import label_components
from pe_segmentation.io.loader import load_volume
from pe_segmentation.io.volume import Volume, check_same_geometry

#: Foreground voxels kept over the whole set for the HU statistics (40 MB as float32).
FOREGROUND_SAMPLES = 10_000_000
#: A case is a spacing outlier when an axis's spacing is more than this many times off the set's median.
SPACING_OUTLIER_FACTOR = 2.0
#: The HU percentiles of the foreground that the fingerprint reports (nnU-Net's clip range and median).
PERCENTILES = (0.5, 50.0, 99.5)
#: What the axes are called, in the order of every triple here.
AXES = "RAS"


@dataclass(frozen=True)
class CaseFingerprint:
    """One case's figures (triples along R, A, S).

    Attributes:
        case: the case id.
        spacing: voxel size in mm.
        shape: voxel counts.
        body_shape: voxel counts of the body box, what the preprocessing keeps before resampling.
        hu_range: the lowest and highest HU of the image.
        foreground_voxels: labelled voxels.
        emboli_ml: each embolus's volume in mL, largest first.
    """

    case: str
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    body_shape: tuple[int, int, int]
    hu_range: tuple[float, float]
    foreground_voxels: int
    emboli_ml: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "spacing_mm": [round(v, 5) for v in self.spacing],
            "shape": list(self.shape),
            "body_shape": list(self.body_shape),
            "hu_range": [round(v, 2) for v in self.hu_range],
            "foreground_voxels": self.foreground_voxels,
            "emboli": len(self.emboli_ml),
            "emboli_ml": [round(v, 5) for v in self.emboli_ml],
        }


@dataclass(frozen=True)
class Oddity:
    """Something odd about a case: ``unreadable`` (left out), ``spacing_outlier`` or ``no_air`` (kept)."""

    case: str
    kind: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"case": self.case, "kind": self.kind, "detail": self.detail}


@dataclass(frozen=True)
class ForegroundIntensities:
    """HU statistics of the labelled voxels pooled over the set (what ``ct_foreground`` normalises by)."""

    voxels: int
    percentile_00_5: float
    median: float
    percentile_99_5: float
    mean: float
    sd: float
    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray) -> ForegroundIntensities:
        values = np.asarray(values, dtype=np.float64)
        low, median, high = (float(v) for v in np.percentile(values, PERCENTILES))
        return cls(
            int(values.size),
            low,
            median,
            high,
            float(values.mean()),
            float(values.std()),
            float(values.min()),
            float(values.max()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "voxels": self.voxels,
            **{k: round(getattr(self, k), 3) for k in ("percentile_00_5", "median", "percentile_99_5")},
            **{k: round(getattr(self, k), 3) for k in ("mean", "sd")},
            "min": round(self.low, 3),
            "max": round(self.high, 3),
        }


def _summary(values: np.ndarray, digits: int = 5) -> dict[str, Any]:
    """Median, min, max (and the 10th and 90th percentiles) of each column, or of a vector."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"median": None, "min": None, "max": None}

    def stat(fn: Any, *args: Any) -> Any:
        out = fn(values, *args, axis=0)
        return [round(float(v), digits) for v in out] if np.ndim(out) else round(float(out), digits)

    return {
        "median": stat(np.percentile, 50),
        "min": stat(np.min),
        "max": stat(np.max),
        "percentile_10": stat(np.percentile, 10),
        "percentile_90": stat(np.percentile, 90),
    }


@dataclass(frozen=True)
class DatasetFingerprint:
    """The fingerprint of a set: its readable cases, what was odd, and the pooled foreground HU.

    Attributes:
        listed: cases in the datalist.
        cases: the cases read.
        oddities: what was odd, case by case.
        foreground: the foreground HU statistics (``None`` when no case holds a label voxel).
        foreground_hu: the pooled foreground samples (for the histogram; not in :meth:`to_dict`).
    """

    listed: int
    cases: tuple[CaseFingerprint, ...]
    oddities: tuple[Oddity, ...]
    foreground: ForegroundIntensities | None
    foreground_hu: np.ndarray = field(repr=False, compare=False)

    @property
    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], dtype=np.float64).reshape(-1, 3)

    @property
    def shapes(self) -> np.ndarray:
        return np.array([c.shape for c in self.cases], dtype=np.int64).reshape(-1, 3)

    @property
    def body_mm(self) -> np.ndarray:
        """Each case's body box in mm along R, A, S."""
        return np.array([np.multiply(c.body_shape, c.spacing) for c in self.cases]).reshape(-1, 3)

    @property
    def emboli_ml(self) -> np.ndarray:
        return np.array([v for c in self.cases for v in c.emboli_ml], dtype=np.float64)

    @property
    def cases_without_emboli(self) -> int:
        return sum(1 for c in self.cases if not c.emboli_ml)

    def _emboli(self) -> dict[str, Any]:
        volumes = self.emboli_ml
        classes = [size_class(v * 1000.0) for v in volumes]
        return {
            "count": int(volumes.size),
            "per_case": _summary(np.array([len(c.emboli_ml) for c in self.cases])),
            "volume_ml": _summary(volumes),
            "burden_ml_per_case": _summary(np.array([sum(c.emboli_ml) for c in self.cases])),
            "size_classes": {
                name: {
                    "count": classes.count(name),
                    "share": round(classes.count(name) / len(classes), 4) if classes else None,
                    "definition": CLASS_DEFINITIONS[name],
                }
                for name in SIZE_CLASSES
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """The fingerprint as ``fingerprint.json`` holds it (triples along R, A, S)."""
        return {
            "axes": AXES,
            "cases_listed": self.listed,
            "cases_read": len(self.cases),
            "cases_without_emboli": self.cases_without_emboli,
            "spacing_mm": _summary(self.spacings),
            "shape": _summary(self.shapes, 1),
            "body_shape": _summary(np.array([c.body_shape for c in self.cases]).reshape(-1, 3), 1),
            "body_mm": _summary(self.body_mm, 2),
            "foreground_hu": None if self.foreground is None else self.foreground.to_dict(),
            "emboli": self._emboli(),
            "oddities": [o.to_dict() for o in self.oddities],
            "cases": [c.to_dict() for c in self.cases],
        }


def _triple(values: Sequence[Any], kind: type) -> Any:
    return tuple(kind(v) for v in values)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The box holding every true voxel, or ``None``: from the projections on each axis (0.03 s on a
    512x512x300 mask; ``np.nonzero`` and ``ndimage.find_objects`` took 2 s on the Fortran-ordered arrays
    that NIfTI files give)."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _masked_values(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image[mask]`` in memory order: boolean indexing walks C order, 70x slower on Fortran-ordered arrays
    (2 s for 512x512x300), so those are indexed through their transposes (the same voxels, in another order)."""
    if image.flags.f_contiguous and mask.flags.f_contiguous:
        return image.T[mask.T]
    return image[mask]


def _case_figures(
    case: str, image: Volume, foreground: np.ndarray, settings: PreprocessingSettings
) -> CaseFingerprint:
    """A case's figures from its image and its labelled voxels (a boolean array on the image's grid)."""
    spacing, shape = ras_grid(image.affine, image.shape)
    start, end = generate_spatial_bounding_box(
        image.array[None],
        select_fn=BodyMask(settings.body_threshold_hu),
        margin=settings.margin,
        allow_smaller=True,
    )
    _, body = ras_grid(image.affine, [b - a for a, b in zip(start, end, strict=True)])
    emboli: list[float] = []
    voxels = 0
    box = _bounding_box(foreground)
    if box is not None:
        components, count = label_components(foreground[box])
        voxel_ml = float(np.prod(image.spacing)) / 1000.0
        sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
        emboli = sorted((float(n) * voxel_ml for n in sizes), reverse=True)
        voxels = int(sizes.sum())
    return CaseFingerprint(
        case,
        _triple(spacing, float),
        _triple(shape, int),
        _triple(body, int),
        (float(image.array.min()), float(image.array.max())),
        voxels,
        tuple(emboli),
    )


def read_case(
    item: Mapping[str, str], settings: PreprocessingSettings, samples: int, rng: np.random.Generator
) -> tuple[CaseFingerprint, np.ndarray]:
    """One case's figures and up to ``samples`` of its foreground HU (all of them when it holds fewer).

    Raises:
        PESegError: the image or label cannot be read, their grids differ, or the label is not an integer mask.
    """
    image = load_volume(item["image"])
    label_volume = load_volume(item["label"])
    check_same_geometry(label_volume, image, item["label"], item["image"])
    foreground = integer_label_values(np.asarray(label_volume.array), item["label"]) > 0
    figures = _case_figures(item["case"], image, foreground, settings)
    values = _masked_values(image.array, foreground)
    if values.size > samples:
        values = values[rng.choice(values.size, samples, replace=False)]
    return figures, values.astype(np.float32)


def _spacing_outliers(cases: Sequence[CaseFingerprint]) -> list[Oddity]:
    if not cases:
        return []
    spacings = np.array([c.spacing for c in cases], dtype=np.float64)
    median = np.median(spacings, axis=0)
    found = []
    for case, spacing in zip(cases, spacings, strict=True):
        ratio = spacing / median
        off = [
            f"{AXES[a]} {spacing[a]:g} mm vs median {median[a]:g}"
            for a in range(3)
            if not 1 / SPACING_OUTLIER_FACTOR <= ratio[a] <= SPACING_OUTLIER_FACTOR
        ]
        if off:
            found.append(Oddity(case.case, "spacing_outlier", "; ".join(off)))
    return found


def fingerprint_dataset(
    items: Sequence[Mapping[str, str]],
    settings: PreprocessingSettings | None = None,
    *,
    seed: int = 0,
    progress: bool = False,
) -> DatasetFingerprint:
    """Read every case of ``items`` (``{"case", "image", "label"}``) and gather the set's fingerprint.

    Args:
        items: the cases, as the dataset adapters list them.
        settings: the preprocessing whose body crop the body boxes follow (``None``: the defaults).
        seed: seeds the subsets of foreground voxels (case ``i`` draws from ``(seed, i)``).
        progress: a progress bar over the cases.
    """
    settings = settings if settings is not None else PreprocessingSettings()
    share = max(FOREGROUND_SAMPLES // max(len(items), 1), 1)
    cases: list[CaseFingerprint] = []
    samples: list[np.ndarray] = []
    oddities: list[Oddity] = []
    for index, item in enumerate(tqdm(items, desc="fingerprint", unit="case", disable=not progress)):
        rng = np.random.default_rng((seed, index))
        try:
            figures, values = read_case(item, settings, share, rng)
        except (PESegError, OSError, RuntimeError, ValueError) as err:  # SimpleITK raises RuntimeError
            oddities.append(Oddity(item["case"], "unreadable", " ".join(str(err).split())))
            continue
        cases.append(figures)
        samples.append(values)
        if figures.hu_range[0] > settings.body_threshold_hu:
            oddities.append(
                Oddity(
                    figures.case,
                    "no_air",
                    f"no voxel below {settings.body_threshold_hu:g} HU (lowest {figures.hu_range[0]:g}): "
                    "not in HU, or cropped to the body? the body crop keeps the whole image",
                )
            )
    oddities += _spacing_outliers(cases)
    pooled = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    foreground = ForegroundIntensities.of(pooled) if pooled.size else None
    order = {item["case"]: i for i, item in enumerate(items)}
    oddities.sort(key=lambda o: (order.get(o.case, math.inf), o.kind))
    return DatasetFingerprint(len(items), tuple(cases), tuple(oddities), foreground, pooled)
