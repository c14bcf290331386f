"""The one voxel size a network is trained and run at, worked out from its training cases.

The rule is nnU-Net's (v2, ``ExperimentPlanner.determine_fullres_target_spacing``), written once here so that
training and ``pe-seg plan`` (:mod:`pe_segmentation.planning`) choose alike (:func:`target_spacing`):

* each axis takes the **median** of the cases' spacings along it;
* except on anisotropic data: when the coarsest axis's median spacing is more than
  :data:`ANISOTROPY_THRESHOLD` (3) times the coarsest of the other two, **and** that axis's median voxel count
  times 3 is still below the smallest of the other two median counts (few, thick slices), that axis takes the
  **10th percentile** of its spacings instead, though never finer than the other axes' (coarsest) median.
  The median of thick-slice data resamples its thin-slice cases badly (a median of 2.5 mm slices on a set
  that also holds 1 mm series throws most of those away); nnU-Net's published PE plan has 1.0 mm slices for
  that reason.

Spacings and voxel counts are taken along R, A, S, the axes the preprocessing reorients every case to before
it resamples (``preprocessing.spacing`` is given in that order too); :func:`case_grid` reads them from a
case's header without its voxels (:func:`ras_grid` from an affine), and :func:`training_set_spacing` applies
the rule to a list of cases.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_reader import series_geometry
from pe_segmentation.io.dicom_scan import scan_dicom_folder
from pe_segmentation.io.loader import load_volume
from pe_segmentation.io.series_choice import choose_series
from pe_segmentation.io.volume_files import is_volume_file, read_volume_header

#: The coarse axis counts as anisotropic above this many times the other axes' spacing (nnU-Net's).
ANISOTROPY_THRESHOLD = 3.0
#: The percentile of its spacings an anisotropic axis takes (nnU-Net's).
ANISOTROPIC_PERCENTILE = 10.0
#: What checkpoints and logs call this rule.
RULE_NAME = "training-set median rule"
#: Digits (mm) a target spacing is rounded to: header spacings carry float noise (2.2500000001).
DECIMALS = 5

_AXES = "RAS"


@dataclass(frozen=True)
class TargetSpacing:
    """The spacing :func:`target_spacing` chose and why.

    Attributes:
        mm: voxel size along R, A, S in mm.
        cases: how many cases it was worked out from.
        median_mm: the per-axis median spacing.
        anisotropic_axis: the axis (0, 1, 2) that took the 10th percentile instead of its median, or ``None``.
    """

    mm: tuple[float, float, float]
    cases: int
    median_mm: tuple[float, float, float]
    anisotropic_axis: int | None = None

    def describe(self) -> str:
        """One line: the spacing and how the rule got it."""
        spacing = " x ".join(f"{v:g}" for v in self.mm)
        how = f"{RULE_NAME}: per-axis median of {self.cases} training case(s)"
        if self.anisotropic_axis is not None:
            axis = self.anisotropic_axis
            how += (
                f"; anisotropic, so axis {_AXES[axis]} takes the {ANISOTROPIC_PERCENTILE:g}th percentile "
                f"of its spacings ({self.mm[axis]:g} mm) instead of its median ({self.median_mm[axis]:g} mm)"
            )
        return f"{spacing} mm ({how})"


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]) -> TargetSpacing:
    """The target spacing of a training set by the module's rule.

    Args:
        spacings: each case's voxel size (3 values, mm), all in the same axis order.
        shapes: each case's voxel counts in that order (they tell few thick slices from many thin ones).

    Raises:
        ValueError: no cases, a count of shapes other than of spacings, or a spacing that is not positive.
    """
    values = np.asarray(spacings, dtype=np.float64)
    sizes = np.asarray(shapes, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] != 3:
        raise ValueError(f"expected one spacing of 3 values per case, got an array of shape {values.shape}")
    if sizes.shape != values.shape:
        raise ValueError(f"expected one shape per spacing, got {sizes.shape} for {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("spacings must be positive")
    median = np.percentile(values, 50, axis=0)
    median_size = np.percentile(sizes, 50, axis=0)
    target = median.copy()
    coarse = int(np.argmax(median))
    others = [axis for axis in range(3) if axis != coarse]
    other_spacing = max(median[axis] for axis in others)
    anisotropic = median[coarse] > ANISOTROPY_THRESHOLD * other_spacing and median_size[
        coarse
    ] * ANISOTROPY_THRESHOLD < min(median_size[axis] for axis in others)
    if anisotropic:
        target[coarse] = max(float(np.percentile(values[:, coarse], ANISOTROPIC_PERCENTILE)), other_spacing)
    return TargetSpacing(
        mm=_rounded(target),
        cases=int(values.shape[0]),
        median_mm=_rounded(median),
        anisotropic_axis=coarse if anisotropic else None,
    )


def _rounded(values: np.ndarray) -> tuple[float, float, float]:
    x, y, z = (round(float(v), DECIMALS) for v in values)
    return (x, y, z)


def case_grid(path: str | os.PathLike[str]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """A case's voxel size (mm) and voxel counts along R, A, S, from its header (no voxels are read).

    Volume files are read by their header; DICOM folders by their slice headers (the series the reader would
    choose, its grid validated as when it is read). A single DICOM file is read whole.

    Raises:
        InputDataError: the case cannot be read.
    """
    path = Path(path)
    if path.is_dir():
        scan = scan_dicom_folder(path)
        geometry = series_geometry(choose_series(scan), path)
        affine, shape = geometry.affine, geometry.shape
    elif is_volume_file(path):
        header = read_volume_header(path)
        affine, shape = header.affine, header.shape
    else:
        volume = load_volume(path)
        affine, shape = volume.affine, volume.shape
    return ras_grid(affine, shape)


def ras_grid(affine: np.ndarray, shape: Sequence[int]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Voxel size (mm) and voxel counts of a grid along R, A, S (the order after the preprocessing's
    reorientation), from its affine and its counts along the voxel axes i, j, k."""
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    ras_axis = nib.orientations.io_orientation(affine)[:, 0].astype(int)  # voxel axis i -> R/A/S axis
    ras_spacing, ras_shape = [0.0] * 3, [0] * 3
    for voxel_axis, axis in enumerate(ras_axis):
        ras_spacing[axis], ras_shape[axis] = float(spacing[voxel_axis]), int(shape[voxel_axis])
    return tuple(ras_spacing), tuple(ras_shape)


def training_set_spacing(items: Sequence[Mapping[str, str]], image_key: str = "image") -> TargetSpacing:
    """The target spacing of these cases' images by the module's rule (:func:`target_spacing`).

    Raises:
        InputDataError: no cases, or a case whose header cannot be read.
    """
    if not items:
        raise InputDataError("no training cases to work out the target spacing from")
    grids = [case_grid(item[image_key]) for item in items]
    return target_spacing([spacing for spacing, _ in grids], [shape for _, shape in grids])
