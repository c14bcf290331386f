"""Multi-frame CT objects (Enhanced CT, Legacy Converted Enhanced CT): one file, one slice per frame.

Modern scanners and archives export a CT series as one multi-frame object instead of one file per slice. Its
geometry lives in functional groups: each frame's PlanePositionSequence, and PlaneOrientationSequence,
PixelMeasuresSequence and PixelValueTransformationSequence either per frame or shared by all frames. This
module turns such a header into one set of slice tags per frame, so that
:mod:`pe_segmentation.io.dicom_scan` can list the frames as the slices of a series of their own and
:mod:`pe_segmentation.io.dicom_reader` can validate and sort them exactly like a single-frame series (same
checks, same messages, same :class:`~pe_segmentation.io.volume.Volume`). It also decodes the frames:

* by pydicom when they are uncompressed (several times faster than GDCM on one large file) or when their
  rescales differ (GDCM applies the first frame's rescale to every frame): stored values, rescaled here;
* by SimpleITK/GDCM otherwise, as single-frame series are, so every compressed transfer syntax the reader
  supports (JPEG 2000, JPEG lossless, JPEG-LS, RLE) works; GDCM applies the one rescale itself.

This module imports nothing from the scan or the reader (they import it), so it must not build their types.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.pixels import get_decoder

from pe_segmentation.errors import InputDataError

ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
MULTIFRAME_CT_CLASSES = frozenset({ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE})


class FrameTags(NamedTuple):
    """The geometry and rescale of one frame, named like the fields of a scanned slice (``DicomSlice``).

    Attributes:
        frame: the 1-based frame number in the file.
        position: ImagePositionPatient (LPS mm), or None when missing or unparseable.
        orientation: ImageOrientationPatient (row then column cosines), or None.
        pixel_spacing: PixelSpacing (between rows, between columns) in mm, or None.
        rescale: (RescaleSlope, RescaleIntercept), or None when either is missing.
    """

    frame: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    rescale: tuple[float, float] | None


class FrameSource(Protocol):
    """What :func:`read_frames` needs of a slice: its file, frame number, rescale and transfer syntax."""

    @property
    def path(self) -> Path: ...

    @property
    def frame(self) -> int | None: ...

    @property
    def rescale(self) -> tuple[float, float] | None: ...

    @property
    def transfer_syntax(self) -> str: ...


def frame_tags(ds: pydicom.Dataset) -> list[FrameTags]:
    """Each frame's tags, in the file's frame order, from its per-frame and shared functional groups.

    A value is looked up in the frame's own functional group first, then in the shared one, then among the
    top-level attributes (where some converters leave it). Missing values stay None: the reader refuses them
    with the file and frame named, as it does for a single-frame file.

    Raises:
        ValueError: the number of per-frame functional groups differs from NumberOfFrames.
    """
    count = int(ds.get("NumberOfFrames") or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame and len(per_frame) != count:
        raise ValueError(f"{len(per_frame)} per-frame functional groups for NumberOfFrames {count}")
    shared_groups = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_groups[0] if shared_groups else pydicom.Dataset()
    return [
        _frame_tags(number, [per_frame[number - 1] if per_frame else pydicom.Dataset(), shared], ds)
        for number in range(1, count + 1)
    ]


def _frame_tags(number: int, groups: Sequence[pydicom.Dataset], ds: pydicom.Dataset) -> FrameTags:
    """One frame's tags from its functional ``groups`` (its own, then the shared one) and the top level."""
    position = _group_value(groups, ds, "PlanePositionSequence", "ImagePositionPatient")
    orientation = _group_value(groups, ds, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _numbers(_group_value(groups, ds, "PixelMeasuresSequence", "PixelSpacing"), 2)
    slope = _group_value(groups, ds, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _group_value(groups, ds, "PixelValueTransformationSequence", "RescaleIntercept")
    return FrameTags(
        frame=number,
        position=_numbers(position, 3),
        orientation=_numbers(orientation, 6),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
        rescale=(float(slope), float(intercept)) if slope is not None and intercept is not None else None,
    )


def _group_value(groups: Sequence[pydicom.Dataset], ds: pydicom.Dataset, sequence: str, keyword: str) -> Any:
    """``keyword`` from the first functional group whose ``sequence`` holds it, else from the top level."""
    for group in groups:
        items = group.get(sequence)
        if items and items[0].get(keyword) not in (None, ""):
            return items[0].get(keyword)
    value = ds.get(keyword)
    return None if value in (None, "") else value


def _numbers(value: Any, count: int) -> np.ndarray | None:
    """``count`` finite floats from a multi-valued DICOM attribute, or None."""
    if value is None:
        return None
    try:
        values = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return values if values.size == count and np.isfinite(values).all() else None


def read_frames(slices: Sequence[FrameSource], shape: tuple[int, int, int]) -> np.ndarray:
    """Decode the frames of one multi-frame object in grid order, in HU, indexed ``[i, j, k]``.

    Args:
        slices: the validated slices in grid order (k = 0, 1, ...), all frames of the same file.
        shape: the grid's shape (columns, rows, slices), which the decoded pixels must have.

    Returns:
        HU values: integers when one rescale with an integer slope and intercept covers every frame, float32
        otherwise (as for a single-frame series).

    Raises:
        InputDataError: the pixel data cannot be decoded, or does not hold the frames the header declares.
    """
    path = slices[0].path
    indices = np.array([(s.frame or 1) - 1 for s in slices])
    rescales = {s.rescale for s in slices}
    if len(rescales) == 1 and pydicom.uid.UID(slices[0].transfer_syntax).is_compressed:
        image = _decode_with_gdcm(path, rescales.pop())
        frames = sitk.GetArrayViewFromImage(image)  # a view: ``image`` must outlive it, until the copy below
        return frames[_checked(indices, frames, shape, path)].transpose(2, 1, 0)
    # uncompressed (pydicom reads it several times faster than GDCM), or a rescale per frame, which GDCM
    # would not apply: GDCM applies the first frame's rescale to every frame
    frames = _decode_with_pydicom(path)
    return _rescaled(frames, _checked(indices, frames, shape, path), slices).transpose(2, 1, 0)


def _rescaled(stored: np.ndarray, indices: np.ndarray, slices: Sequence[FrameSource]) -> np.ndarray:
    """Stored frames ``indices`` in HU, as (k, rows, columns): frame k by slice k's rescale (none: already HU).

    Integers when one rescale with an integer slope and intercept covers every frame, float32 otherwise. The
    frames are copied once, into the result, and rescaled in place: a CT is hundreds of megabytes.
    """
    rescales = [s.rescale or (1.0, 0.0) for s in slices]
    slope, intercept = rescales[0]
    integer = len(set(rescales)) == 1 and slope.is_integer() and intercept.is_integer()
    hu = np.empty((len(indices), *stored.shape[1:]), dtype=np.int32 if integer else np.float32)
    for k, index in enumerate(indices):
        hu[k] = stored[index]
    if integer:
        hu *= int(slope)
        hu += int(intercept)
        return hu
    slopes, intercepts = np.array(rescales, dtype=np.float32).T[:, :, None, None]
    hu *= slopes
    hu += intercepts
    return hu


def _checked(indices: np.ndarray, frames: np.ndarray, shape: tuple[int, int, int], path: Path) -> np.ndarray:
    """``indices``, once the decoded ``frames`` (frames, rows, columns) are known to hold them in ``shape``.

    Raises:
        InputDataError: fewer frames than the header numbers, or frames of another size.
    """
    columns, rows, _ = shape
    if frames.ndim != 3 or frames.shape[1:] != (rows, columns) or int(indices.max()) >= frames.shape[0]:
        raise InputDataError(
            f"{path}: decoded pixel data of shape {frames.shape} does not hold the header's "
            f"{int(indices.max()) + 1} frames of {rows} x {columns} pixels"
        )
    return indices


def _decode_with_gdcm(path: Path, rescale: tuple[float, float] | None) -> sitk.Image:
    """All frames, rescaled by GDCM, as an image of (columns, rows, frames); float32 for a fractional slope.

    Raises:
        InputDataError: GDCM cannot decode the pixel data.
    """
    fractional = rescale is not None and not float(rescale[0]).is_integer()
    pixel_type = sitk.sitkFloat32 if fractional else sitk.sitkUnknown
    try:
        image = sitk.ReadImage(str(path), pixel_type, imageIO="GDCMImageIO")
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "decode error"
        raise InputDataError(f"{path}: cannot decode pixel data ({reason[-120:]})") from err
    return image


def _decode_with_pydicom(path: Path) -> np.ndarray:
    """All frames' stored values (not rescaled) as (frames, rows, columns).

    Raises:
        InputDataError: pydicom has no decoder for the transfer syntax, or decoding fails.
    """
    ds = pydicom.dcmread(path)
    syntax = ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian)
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:  # a transfer syntax pydicom knows no decoder for at all
        available = False
    if not available:
        raise InputDataError(
            f"{path}: frames with different RescaleSlope/RescaleIntercept need pydicom to decode them, and it "
            f"has no decoder for transfer syntax {syntax.name}"
        )
    try:
        stored = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputDataError(f"{path}: cannot decode pixel data ({reason[:120]})") from err
    return stored.reshape(-1, *stored.shape[-2:])
