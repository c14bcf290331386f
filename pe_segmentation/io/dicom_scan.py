"""Find the DICOM files under a folder, group them into series, and pick the CT series to segment.

Headers are read with pydicom without pixel data (fast, no decoder needed); pixels are read later by
:mod:`pe_segmentation.io.dicom_reader` through SimpleITK/GDCM.

A multi-frame CT object (Enhanced CT, Legacy Converted Enhanced CT) is a series of its own, one slice per frame
(:mod:`pe_segmentation.io.dicom_multiframe`), never merged with single-frame files that share its series UID.

Which series is chosen, when a folder holds several (documented for users in ``pe-seg info``):

1. Only image series of modality CT qualify; localizers/scouts (ImageType LOCALIZER), secondary captures and
   series with fewer than 2 slices are skipped.
2. ORIGINAL series beat DERIVED ones (reformats, MIPs); axial series beat coronal/sagittal/oblique ones.
3. Among the rest: the most slices, then the thinnest slice spacing, then the lowest SeriesNumber.

``series_uid`` overrides the rule. :func:`pe_segmentation.io.series_choice.choose_series` applies it.

Which files make a series: those sharing a SeriesInstanceUID. Files without one (blanked or dropped by an
anonymizer) are grouped by folder, study, series number, grid and reconstruction
(:mod:`pe_segmentation.io.dicom_series_keys`) and named by a synthetic key instead. A file is refused only for
what is really wrong with it: cut short (:mod:`pe_segmentation.io.dicom_header` checks the bytes), or an image
header without pixel data. Missing UIDs are recorded on the series and warned about, not refused.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_header import FileHeader, read_file_header
from pe_segmentation.io.dicom_multiframe import MULTIFRAME_CT_CLASSES, frame_tags
from pe_segmentation.io.dicom_series_keys import SeriesFacts, UidlessGrouping, series_facts

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
# |cos| between the slice normal and the patient's S axis above which a series counts as axial (about 30°).
AXIAL_COSINE = 0.866


@dataclass
class DicomSlice:
    """The header facts of one image file that series selection and geometry need."""

    path: Path
    sop_instance_uid: str | None  # from the file meta when the data set lacks it; None when neither has one
    instance_number: int | None
    position: np.ndarray | None  # ImagePositionPatient (LPS mm)
    orientation: np.ndarray | None  # ImageOrientationPatient: row cosines then column cosines
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) in mm
    rescale: tuple[float, float] | None  # (slope, intercept), None when the tags are missing
    transfer_syntax: str
    truncated: bool
    # --- multi-frame CT (io.dicom_multiframe): the frame this slice is, None for a single-frame file ---
    frame: int | None = None

    @property
    def name(self) -> str:
        """The file name, with the frame number for a frame of a multi-frame object (for messages)."""
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame}"

    @property
    def location(self) -> str:
        """The file path, with the frame number for a frame of a multi-frame object (for messages)."""
        return str(self.path) if self.frame is None else f"{self.path} frame {self.frame}"


@dataclass
class SeriesInfo:
    """One series found in a folder, with what a user needs to recognise it (no patient identity).

    Attributes:
        series_uid: what selects the series (``--series-uid``): its SeriesInstanceUID, or for files without
            one, the synthetic key of :mod:`pe_segmentation.io.dicom_series_keys` (then ``grouping`` is set).
            Use :attr:`source_series_uid` for the UID the files carry.
        study_uid: StudyInstanceUID of its first file, "" when absent.
        grouping: for a series without SeriesInstanceUID, which facts grouped its files; None otherwise.
        missing_uids: UID keywords that some of its files lack in their data set (absent or empty).
        uids_from_file_meta: SOP UID keywords taken from the file meta because a data set lacks them.
    """

    series_uid: str
    study_uid: str
    modality: str
    description: str
    series_number: int | None
    image_type: tuple[str, ...]
    sop_class_uid: str
    slices: list[DicomSlice] = field(default_factory=list)
    non_image_files: int = 0
    frame_of_reference_uid: str | None = None
    grouping: str | None = None
    missing_uids: frozenset[str] = frozenset()
    uids_from_file_meta: frozenset[str] = frozenset()

    @property
    def n_files(self) -> int:
        return len({s.path for s in self.slices}) + self.non_image_files  # a multi-frame file counts once

    @property
    def source_series_uid(self) -> str | None:
        """The SeriesInstanceUID its files carry, or None for a series grouped without one."""
        return None if self.grouping is not None else self.series_uid

    def uid_warning(self) -> str | None:
        """What ``pe-seg info`` and the reader warn about the series' UIDs: which are missing, and for a series
        without SeriesInstanceUID, how its files were grouped and which key selects it. None when complete."""
        if not self.missing_uids:
            return None
        text = f"missing in the files: {', '.join(sorted(self.missing_uids))}"
        if self.uids_from_file_meta:
            text += f" ({', '.join(sorted(self.uids_from_file_meta))} taken from the file meta)"
        if self.grouping is not None:
            text += (
                f"; files grouped into one series by {self.grouping}; pe-seg names it {self.series_uid} "
                f"(not a DICOM UID): pass --series-uid {self.series_uid} to select it"
            )
        return text

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def is_derived(self) -> bool:
        return bool(self.image_type) and self.image_type[0] == "DERIVED"

    @property
    def is_axial(self) -> bool:
        """Whether the first slice's normal lies within about 30° of the S axis."""
        normal = slice_normal(self.slices[0].orientation) if self.slices else None
        return normal is not None and abs(float(normal[2])) >= AXIAL_COSINE

    @property
    def slice_spacing(self) -> float | None:
        """Median distance between neighbouring slice positions along the normal, or None."""
        if len(self.slices) < 2 or self.slices[0].orientation is None:
            return None
        normal = slice_normal(self.slices[0].orientation)
        if normal is None:  # parallel row and column cosines: refused with its reason when the series is read
            return None
        heights = sorted(float(np.dot(s.position, normal)) for s in self.slices if s.position is not None)
        diffs = np.diff(heights)
        diffs = diffs[diffs > 1e-6]
        return float(np.median(diffs)) if diffs.size else None

    def rejection_reason(self) -> str | None:
        """Why this series cannot be the CT volume to segment, or None when it can."""
        if not self.slices:
            return "no image data"
        if self.modality != "CT":
            return f"modality {self.modality or 'missing'}, not CT"
        if self.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX):
            return "secondary capture"
        if self.is_localizer:
            return "localizer/scout"
        if len(self.slices) < 2:
            return "a single slice"
        return None

    def rank_key(self) -> tuple:
        """Sort key of the selection rule (smaller is better); see the module docstring."""
        spacing = self.slice_spacing
        return (
            self.is_derived,
            not self.is_axial,
            -len(self.slices),
            spacing if spacing is not None else float("inf"),
            self.series_number if self.series_number is not None else 1 << 30,
        )

    def summary(self) -> dict:
        """JSON-friendly description for ``pe-seg info``."""
        return {
            "key": self.series_uid,
            "series_uid": self.source_series_uid,
            "missing_uids": sorted(self.missing_uids),
            "grouped_by": self.grouping,
            "series_number": self.series_number,
            "description": self.description,
            "modality": self.modality,
            "image_type": list(self.image_type),
            "slices": len(self.slices),
            "non_image_files": self.non_image_files,
            "axial": self.is_axial if self.slices else None,
            "slice_spacing_mm": self.slice_spacing,
            "rejected": self.rejection_reason(),
        }


@dataclass
class DicomScan:
    """What a folder holds: its series and the files that were not DICOM or could not be parsed."""

    folder: Path
    series: list[SeriesInfo]
    non_dicom_files: list[Path]
    unreadable_files: list[tuple[Path, str]]


def slice_normal(orientation: np.ndarray | None) -> np.ndarray | None:
    """Unit normal (row x column) of an ImageOrientationPatient, or None."""
    if orientation is None:
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else None


def _floats(value: Any, count: int) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return values if values.size == count and np.isfinite(values).all() else None


def _slice_from_header(header: FileHeader) -> DicomSlice:
    """The :class:`DicomSlice` of an image file; a file whose pixel data is cut short is marked truncated."""
    ds = header.ds
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    rescale = (float(slope), float(intercept)) if slope is not None and intercept is not None else None
    spacing = _floats(ds.get("PixelSpacing"), 2) if "PixelSpacing" in ds else None
    instance = ds.get("InstanceNumber")
    return DicomSlice(
        path=header.path,
        sop_instance_uid=header.uids.get("SOPInstanceUID"),
        instance_number=int(instance) if instance not in (None, "") else None,
        position=_floats(ds.get("ImagePositionPatient"), 3) if "ImagePositionPatient" in ds else None,
        orientation=_floats(ds.get("ImageOrientationPatient"), 6)
        if "ImageOrientationPatient" in ds
        else None,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
        rescale=rescale,
        transfer_syntax=header.transfer_syntax,
        truncated=header.ends_early is not None,
    )


def _is_multiframe(header: FileHeader) -> bool:
    """Whether the file is an Enhanced or Legacy Converted Enhanced CT object (its SOP Class UID may come from
    the file meta when an anonymizer blanked the data set's)."""
    return header.uids.get("SOPClassUID") in MULTIFRAME_CT_CLASSES


def _slices_from_header(header: FileHeader) -> list[DicomSlice]:
    """The file's one slice, or one slice per frame of a multi-frame CT object (io.dicom_multiframe)."""
    slice_ = _slice_from_header(header)
    if not _is_multiframe(header):
        return [slice_]
    return [dataclasses.replace(slice_, **tags._asdict()) for tags in frame_tags(header.ds)]


def _iter_files(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.upper() != "DICOMDIR" and not name.startswith("."):
                yield Path(root) / name


def _file_problem(header: FileHeader) -> str | None:
    """Why a whole-looking DICOM file cannot be part of a series, or None.

    A file cut inside its header is refused here; one cut inside its pixel data becomes a slice marked
    truncated, refused with its name when its series is read. Missing UIDs are no problem (module docstring).
    """
    if header.ends_early == "inside its header":
        return f"truncated file: it ends {header.ends_early}"
    ds = header.ds
    image_class = header.uids.get("SOPClassUID") in {CT_IMAGE_STORAGE, *MULTIFRAME_CT_CLASSES}
    if header.pixel_offset is None and ("Rows" in ds or "Columns" in ds or image_class):
        return "an image header without pixel data"
    if header.pixel_offset is not None and not ("Rows" in ds and "Columns" in ds):
        return "pixel data without Rows and Columns"
    return None


def _new_series(key: str, header: FileHeader, facts: SeriesFacts | None) -> SeriesInfo:
    """The :class:`SeriesInfo` that ``header``, its first file, opens (``facts``: how UID-less files group)."""
    ds = header.ds
    return SeriesInfo(
        series_uid=key,
        study_uid=header.uids.get("StudyInstanceUID", ""),
        modality=str(ds.get("Modality", "")),
        description=str(ds.get("SeriesDescription", "")),
        series_number=int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
        image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or [])),
        sop_class_uid=header.uids.get("SOPClassUID", ""),
        grouping=facts.describe() if facts is not None else None,
    )


def _add_file(header: FileHeader, by_key: dict[str, SeriesInfo], grouping: UidlessGrouping) -> None:
    """Add a file to its series: the one of its SeriesInstanceUID, or for a file without one, the group of
    :mod:`pe_segmentation.io.dicom_series_keys`.

    Raises:
        ValueError, TypeError: a header value that cannot be parsed.
    """
    uid = header.uids.get("SeriesInstanceUID")
    facts = grouping.add(series_facts(header.ds, header.path.parent)) if uid is None else None
    key = facts.key if facts is not None else str(uid)
    # a multi-frame object is a series of its own, never merged with a single-frame original of the same UID
    slot = f"{key} {header.uids.get('SOPInstanceUID')}" if _is_multiframe(header) else key
    series = by_key.get(slot)
    if series is None:
        series = _new_series(key, header, facts)
    if header.pixel_offset is not None:
        series.slices += _slices_from_header(header)
    else:
        series.non_image_files += 1
    by_key[slot] = series
    series.missing_uids |= header.missing_uids
    series.uids_from_file_meta |= header.uids_from_file_meta
    if series.frame_of_reference_uid is None:
        series.frame_of_reference_uid = header.uids.get("FrameOfReferenceUID")


_HEADER_ERRORS = (OSError, ValueError, EOFError, KeyError, AttributeError, TypeError, struct.error)


def scan_dicom_folder(folder: str | os.PathLike[str]) -> DicomScan:
    """Read every file's header under ``folder`` (recursively) and group image files into series.

    Raises:
        InputDataError: the folder does not exist, or holds no DICOM file at all.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputDataError(f"{folder}: no such folder")
    by_key: dict[str, SeriesInfo] = {}
    grouping = UidlessGrouping()
    non_dicom: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    for path in _iter_files(folder):
        try:
            header = read_file_header(path)
            problem = None if header is None else _file_problem(header)
            if header is not None and problem is None:
                _add_file(header, by_key, grouping)
        except _HEADER_ERRORS as err:  # an unparseable header or header value
            header, problem = None, f"{type(err).__name__}: {err}".splitlines()[0][:160]
        if problem is not None:
            unreadable.append((path, problem))
        elif header is None:
            non_dicom.append(path)
    if not by_key:
        if unreadable:
            path, reason = unreadable[0]
            raise InputDataError(
                f"{folder}: no readable DICOM file ({len(unreadable)} unreadable, e.g. {path}: {reason})"
            )
        raise InputDataError(f"{folder}: no DICOM files found ({len(non_dicom)} other files)")
    ordered = sorted(
        by_key.values(), key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid)
    )
    return DicomScan(folder=folder, series=ordered, non_dicom_files=non_dicom, unreadable_files=unreadable)
