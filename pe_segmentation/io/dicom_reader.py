"""Read a CT DICOM series into a :class:`Volume` in Hounsfield units, with validated geometry.

Geometry comes from the headers, never from SliceThickness: the slice axis is the normal of
ImageOrientationPatient, slices are ordered by their ImagePositionPatient projected onto it, and the slice
spacing is measured between positions. Series whose slices do not form one regular grid (gaps, duplicates,
uneven spacing, gantry tilt/shear, mixed sizes or orientations) are refused with a one-line reason, because a
model run on them would silently be wrong. Pixels are decoded by SimpleITK/GDCM (JPEG 2000, JPEG lossless,
JPEG-LS and RLE included), which is several times faster than decoding slice by slice in Python.

The frames of a multi-frame CT object are slices like any other here (same checks, same messages, the file
and frame named); only their pixels are decoded by :mod:`pe_segmentation.io.dicom_multiframe`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import SimpleITK as sitk

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_multiframe import read_frames
from pe_segmentation.io.dicom_scan import (
    DicomScan,
    DicomSlice,
    SeriesInfo,
    scan_dicom_folder,
    slice_normal,
)
from pe_segmentation.io.series_choice import choose_series
from pe_segmentation.io.volume import Volume, affine_from_geometry

log = logging.getLogger(__name__)

ORIENTATION_TOLERANCE = 1e-4  # direction cosines of all slices must agree this closely
SPACING_TOLERANCE = 0.01  # relative deviation of a slice gap from the median gap that is still "uniform"
SPACING_WARNING = 0.001  # relative deviation worth a warning
GAP_FACTOR = 1.5  # a gap this many times the median one means missing slices
TILT_TOLERANCE_DEG = 0.1  # slice stack off the slice normal by more than this: gantry tilt or shear


@dataclass
class SeriesGeometry:
    """The regular grid a validated series lies on, and its slices in grid order (k = 0, 1, ...)."""

    slices: list[DicomSlice]
    origin_lps: np.ndarray
    direction_lps: np.ndarray  # columns: i (row direction), j (column direction), k (slice normal)
    spacing: np.ndarray  # i, j, k in mm
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.slices[0].columns, self.slices[0].rows, len(self.slices))

    @property
    def affine(self) -> np.ndarray:
        return affine_from_geometry(self.origin_lps, self.direction_lps, self.spacing)


class _SliceTags(NamedTuple):
    """The geometry tags of one slice, present and parsed (:func:`_required_tags`)."""

    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]


def series_geometry(series: SeriesInfo, where: Path) -> SeriesGeometry:
    """Validate a series' headers and work out its grid.

    Args:
        series: a series from :func:`scan_dicom_folder`.
        where: the folder, for messages.

    Raises:
        InputDataError: the slices do not form one regular 3D grid (the message says how).
    """
    label = f"{where}: series {series.series_number} '{series.description}'"
    if series.slices and series.slices[0].frame is not None:  # one multi-frame object: name the file
        label = f"{series.slices[0].path}: multi-frame series {series.series_number} '{series.description}'"
    if len(series.slices) < 2:
        raise InputDataError(f"{label}: has {len(series.slices)} slice; a CT volume needs at least 2")
    tags = [_required_tags(slice_) for slice_ in series.slices]
    _check_same_size(series.slices, tags, label)
    row, col, normal = _slice_axes(series.slices, tags, label)
    heights = np.array([np.dot(t.position, normal) for t in tags])
    order = np.argsort(heights, kind="stable")
    slices = [series.slices[i] for i in order]
    positions = [tags[i].position for i in order]
    heights = heights[order]
    warnings = _check_spacing(slices, heights, label)
    _check_tilt(positions, normal, label)
    warnings += _series_notes(series, slices)
    spacing_k = float((heights[-1] - heights[0]) / (len(slices) - 1))
    row_spacing, col_spacing = tags[order[0]].pixel_spacing
    return SeriesGeometry(
        slices=slices,
        origin_lps=positions[0].copy(),
        direction_lps=np.stack([row, col, normal], axis=1),
        spacing=np.array([col_spacing, row_spacing, spacing_k]),
        warnings=warnings,
    )


def _required_tags(slice_: DicomSlice) -> _SliceTags:
    """The slice's position, orientation and pixel spacing, which every grid computation needs.

    Raises:
        InputDataError: a truncated file, or one of the tags missing or unparseable.
    """
    if slice_.truncated:
        raise InputDataError(f"{slice_.path}: truncated file (it ends inside its pixel data)")
    position, orientation, pixel_spacing = slice_.position, slice_.orientation, slice_.pixel_spacing
    if position is None or orientation is None or pixel_spacing is None:
        missing = [
            name
            for name, value in (
                ("ImagePositionPatient", position),
                ("ImageOrientationPatient", orientation),
                ("PixelSpacing", pixel_spacing),
            )
            if value is None
        ]
        raise InputDataError(f"{slice_.location}: missing or invalid {', '.join(missing)}")
    return _SliceTags(position, orientation, pixel_spacing)


def _check_same_size(slices: Sequence[DicomSlice], tags: Sequence[_SliceTags], label: str) -> None:
    """Refuse slices of different sizes or pixel spacings: they cannot be stacked into one grid.

    Raises:
        InputDataError: mixed rows x columns or mixed PixelSpacing.
    """
    sizes = {(s.rows, s.columns) for s in slices}
    if len(sizes) > 1:
        raise InputDataError(f"{label}: mixed slice sizes {sorted(sizes)} (rows x columns)")
    pixel_spacings = {t.pixel_spacing for t in tags}
    if len(pixel_spacings) > 1:
        raise InputDataError(f"{label}: mixed PixelSpacing {sorted(pixel_spacings)}")


def _slice_axes(
    slices: Sequence[DicomSlice], tags: Sequence[_SliceTags], label: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The unit row (i) and column (j) directions shared by all slices, and the slice normal (k), in LPS.

    Raises:
        InputDataError: slices with different orientations, or an orientation that is not two orthonormal vectors.
    """
    orientation = tags[0].orientation
    for slice_, slice_tags in zip(slices[1:], tags[1:], strict=True):
        if np.abs(slice_tags.orientation - orientation).max() > ORIENTATION_TOLERANCE:
            raise InputDataError(f"{label}: mixed ImageOrientationPatient ({slice_.name} differs)")
    row, col = orientation[:3], orientation[3:]
    if (
        abs(np.linalg.norm(row) - 1) > 1e-3
        or abs(np.linalg.norm(col) - 1) > 1e-3
        or abs(np.dot(row, col)) > 1e-3
    ):
        raise InputDataError(
            f"{label}: ImageOrientationPatient {orientation.tolist()} is not two orthonormal vectors"
        )
    normal = slice_normal(orientation)
    assert normal is not None  # two orthonormal vectors have a unit cross product
    return row / np.linalg.norm(row), col / np.linalg.norm(col), normal


def _check_spacing(slices: Sequence[DicomSlice], heights: np.ndarray, label: str) -> list[str]:
    """Check that slices sorted along the normal (at ``heights`` mm) are evenly spaced, with none missing.

    Returns:
        A warning when the spacing varies slightly (within tolerance), else nothing.

    Raises:
        InputDataError: duplicate positions, a gap of missing slices, or uneven spacing.
    """
    gaps = np.diff(heights)
    duplicate = np.flatnonzero(gaps < 1e-3)
    if duplicate.size:
        i = int(duplicate[0])
        raise InputDataError(
            f"{label}: duplicate slice positions ({duplicate.size + 1} slices share a position, e.g. "
            f"{slices[i].name} and {slices[i + 1].name} at {heights[i]:.2f} mm); "
            "several acquisitions in one series? pick one with --series-uid or split the folder"
        )
    step = float(np.median(gaps))
    deviation = np.abs(gaps - step) / step
    if gaps.max() > GAP_FACTOR * step:
        i = int(np.argmax(gaps))
        missing = round(gaps[i] / step) - 1
        raise InputDataError(
            f"{label}: missing slices: a gap of {gaps[i]:.2f} mm between {heights[i]:.2f} and {heights[i + 1]:.2f} mm "
            f"where slices are {step:.2f} mm apart (about {missing} slice(s) missing)"
        )
    if deviation.max() > SPACING_TOLERANCE:
        raise InputDataError(
            f"{label}: non-uniform slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm); resample it into a "
            "regular grid first"
        )
    if deviation.max() > SPACING_WARNING:
        return [f"slice spacing varies slightly ({gaps.min():.4f} to {gaps.max():.4f} mm); using the mean"]
    return []


def _check_tilt(positions: Sequence[np.ndarray], normal: np.ndarray, label: str) -> None:
    """Refuse a slice stack that runs off the slice normal: the grid would be sheared, not rectangular.

    Raises:
        InputDataError: gantry tilt or shear beyond :data:`TILT_TOLERANCE_DEG`.
    """
    span = positions[-1] - positions[0]
    tilt = np.degrees(np.arccos(np.clip(abs(np.dot(span, normal)) / np.linalg.norm(span), 0.0, 1.0)))
    if tilt > TILT_TOLERANCE_DEG:
        raise InputDataError(
            f"{label}: gantry tilt or sheared geometry: slices are stacked {tilt:.2f} degrees off their normal"
        )


def _series_notes(series: SeriesInfo, slices: Sequence[DicomSlice]) -> list[str]:
    """Warnings about a readable but unusual series: missing UIDs, no rescale tags, not axial, or derived."""
    uid_warning = series.uid_warning()
    notes = [uid_warning] if uid_warning else []
    if any(s.rescale is None for s in slices):
        notes.append("RescaleSlope/RescaleIntercept missing on some slices; assuming stored values are HU")
    if not series.is_axial:
        notes.append("not an axial series; it is read with its own orientation")
    if series.is_derived:
        notes.append(f"a DERIVED series (ImageType {'/'.join(series.image_type)})")
    return notes


@dataclass
class DicomSeriesReadResult:
    """A read series: the volume and what else a caller may want (scan, chosen series, grid)."""

    volume: Volume
    scan: DicomScan
    series: SeriesInfo
    geometry: SeriesGeometry


def read_dicom_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> DicomSeriesReadResult:
    """Scan ``folder``, choose and validate the CT series, and read it in HU.

    Args:
        folder: a series folder or a study folder with several series (searched recursively).
        series_uid: read this series instead of the automatic choice: its SeriesInstanceUID, or for a series
            whose files have none, the key ``pe-seg info`` shows.

    Returns:
        The volume (int16 HU unless rescaling needs floats; RAS affine) and the scan behind it. The volume's
        metadata holds the source's ``series_uid``, ``study_uid`` and ``frame_of_reference_uid`` (None when
        the files lack them: no UID is made up), ``series_key`` (what selects the series), ``missing_uids``
        (the sorted UID keywords the files lack, see :attr:`SeriesInfo.missing_uids`),
        ``uids_from_file_meta``, ``sop_instance_uids`` (grid order, None where a file has none), ``files``
        and ``warnings``.

    Raises:
        InputDataError: nothing usable, or the chosen series fails validation (one line says why).
    """
    folder = Path(folder)
    scan = scan_dicom_folder(folder)
    series = choose_series(scan, series_uid)
    try:
        geometry = series_geometry(series, folder)
    except InputDataError as err:
        if scan.unreadable_files:  # a damaged file often explains a gap: name it
            path, reason = scan.unreadable_files[0]
            raise InputDataError(
                f"{err}; {len(scan.unreadable_files)} unreadable file(s), e.g. {path} ({reason})"
            ) from err
        raise
    if scan.unreadable_files:
        geometry.warnings.append(
            f"{len(scan.unreadable_files)} unreadable file(s) ignored, e.g. {scan.unreadable_files[0][0]}"
        )
    array = _read_pixels(geometry, series, folder)
    for note in geometry.warnings:
        log.warning("%s: %s", folder, note)
    volume = Volume(array, geometry.affine, _volume_metadata(folder, series, geometry))
    return DicomSeriesReadResult(volume=volume, scan=scan, series=series, geometry=geometry)


def _volume_metadata(folder: Path, series: SeriesInfo, geometry: SeriesGeometry) -> dict:
    """Provenance of a volume read from ``series`` (see :func:`read_dicom_series`); no patient identity."""
    metadata: dict[str, Any] = {
        "source": str(folder),
        "format": "dicom",
        "series_uid": series.source_series_uid,
        "study_uid": series.study_uid or None,
        "frame_of_reference_uid": series.frame_of_reference_uid,
        "series_key": series.series_uid,
        "missing_uids": sorted(series.missing_uids),
        "uids_from_file_meta": sorted(series.uids_from_file_meta),
        "series_description": series.description,
        "series_number": series.series_number,
        "modality": series.modality,
        "sop_instance_uids": [s.sop_instance_uid for s in geometry.slices],
        "files": [str(s.path) for s in geometry.slices],
        "instance_numbers": [s.instance_number for s in geometry.slices],
        "warnings": list(geometry.warnings),
    }
    if geometry.slices[0].frame is not None:  # multi-frame: each slice's 1-based frame number in its file
        metadata["frames"] = [s.frame for s in geometry.slices]
    return metadata


def _read_pixels(geometry: SeriesGeometry, series: SeriesInfo, folder: Path) -> np.ndarray:
    """Decode the slices in grid order with GDCM and return HU values indexed [i, j, k]."""
    if geometry.slices[0].frame is not None:  # the frames of one multi-frame object (io.dicom_multiframe)
        return _compact_hu(read_frames(geometry.slices, geometry.shape))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in geometry.slices])
    reader.MetaDataDictionaryArrayUpdateOff()
    reader.LoadPrivateTagsOff()
    rescales = {s.rescale for s in geometry.slices}
    if len(rescales) > 1 or any(r is not None and float(r[0]).is_integer() is False for r in rescales):
        # Per-slice or fractional rescale: decode to float so no slice is rounded into another's integer type.
        reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputDataError(_explain_decode_failure(geometry, folder, err)) from err
    array = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)
    expected = geometry.shape
    if array.shape != expected:
        raise InputDataError(f"{folder}: decoded shape {array.shape} differs from the headers' {expected}")
    return _compact_hu(array)


def _compact_hu(array: np.ndarray) -> np.ndarray:
    """HU as int16 when they fit (GDCM widens rescaled uint16 to int32), float32 for fractional values."""
    if np.issubdtype(array.dtype, np.floating):
        return np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype != np.int16 and array.size and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16)
    return np.ascontiguousarray(array)


def _explain_decode_failure(geometry: SeriesGeometry, folder: Path, err: RuntimeError) -> str:
    """Find the slice GDCM could not decode (only on the error path, so reading each file is affordable)."""
    for slice_ in geometry.slices:
        try:
            sitk.ReadImage(str(slice_.path))
        except RuntimeError as single:
            reason = str(single).strip().splitlines()[-1] if str(single).strip() else "decode error"
            return f"{slice_.path}: cannot decode pixel data ({reason[-120:]})"
    return f"{folder}: cannot decode the series ({str(err).strip().splitlines()[-1][-160:]})"
