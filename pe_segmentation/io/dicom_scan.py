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

``series_uid`` overrides the rule.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_multiframe import frame_tags, is_multiframe_ct

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
UNCOMPRESSED_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
# |cos| between the slice normal and the patient's S axis above which a series counts as axial (about 30°).
AXIAL_COSINE = 0.866


@dataclass
class DicomSlice:
    """The header facts of one image file that series selection and geometry need."""

    path: Path
    sop_instance_uid: str
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
    """One series found in a folder, with what a user needs to recognise it (no patient identity)."""

    series_uid: str
    study_uid: str
    modality: str
    description: str
    series_number: int | None
    image_type: tuple[str, ...]
    sop_class_uid: str
    slices: list[DicomSlice] = field(default_factory=list)
    non_image_files: int = 0

    @property
    def n_files(self) -> int:
        return len({s.path for s in self.slices}) + self.non_image_files  # a multi-frame file counts once

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
            "series_uid": self.series_uid,
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


def _floats(value, count: int) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return values if values.size == count and np.isfinite(values).all() else None


def _pixel_data_truncated(path: Path, data_offset: int, ds: pydicom.Dataset, syntax: str) -> bool:
    """For uncompressed files, whether the file is shorter than its declared pixel data."""
    if syntax not in UNCOMPRESSED_SYNTAXES:
        return False
    expected = int(ds.Rows) * int(ds.Columns) * (int(ds.get("BitsAllocated", 16)) // 8)
    expected *= int(ds.get("SamplesPerPixel", 1)) * int(ds.get("NumberOfFrames", 1) or 1)
    return path.stat().st_size - data_offset < expected


def _read_header(path: Path) -> tuple[pydicom.Dataset, int] | None:
    """The header of a DICOM file and the offset where its pixel data starts, or None if not DICOM."""
    with open(path, "rb") as handle:
        try:
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
        except InvalidDicomError:
            return None
        return ds, handle.tell()


def _slice_from_header(path: Path, ds: pydicom.Dataset, data_offset: int) -> DicomSlice:
    syntax = str(getattr(ds.get("file_meta", None), "TransferSyntaxUID", "1.2.840.10008.1.2"))
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    rescale = (float(slope), float(intercept)) if slope is not None and intercept is not None else None
    spacing = _floats(ds.get("PixelSpacing"), 2) if "PixelSpacing" in ds else None
    instance = ds.get("InstanceNumber")
    return DicomSlice(
        path=path,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        instance_number=int(instance) if instance not in (None, "") else None,
        position=_floats(ds.get("ImagePositionPatient"), 3) if "ImagePositionPatient" in ds else None,
        orientation=_floats(ds.get("ImageOrientationPatient"), 6)
        if "ImageOrientationPatient" in ds
        else None,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
        rescale=rescale,
        transfer_syntax=syntax,
        truncated=_pixel_data_truncated(path, data_offset, ds, syntax),
    )


def _slices_from_header(path: Path, ds: pydicom.Dataset, data_offset: int) -> list[DicomSlice]:
    """The file's one slice, or one slice per frame of a multi-frame CT object (io.dicom_multiframe)."""
    slice_ = _slice_from_header(path, ds, data_offset)
    if not is_multiframe_ct(ds):
        return [slice_]
    return [dataclasses.replace(slice_, **tags._asdict()) for tags in frame_tags(ds)]


#: Type 1 in every DICOM object: a file without one of them is cut short or not a DICOM object at all.
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID")


def _iter_files(folder: Path):
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.upper() != "DICOMDIR" and not name.startswith("."):
                yield Path(root) / name


def scan_dicom_folder(folder: str | os.PathLike[str]) -> DicomScan:
    """Read every file's header under ``folder`` (recursively) and group image files into series.

    Raises:
        InputDataError: the folder does not exist, or holds no DICOM file at all.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputDataError(f"{folder}: no such folder")
    by_uid: dict[str, SeriesInfo] = {}
    non_dicom: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    for path in _iter_files(folder):
        try:
            header = _read_header(path)
        except (OSError, ValueError, EOFError, KeyError, AttributeError, TypeError) as err:
            unreadable.append((path, f"{type(err).__name__}: {err}".splitlines()[0][:160]))
            continue
        if header is None:
            non_dicom.append(path)
            continue
        ds, data_offset = header
        missing = next((k for k in _REQUIRED_UIDS if not str(ds.get(k, "")).strip()), None)
        if missing is not None:  # pydicom stops quietly at the end of a file cut inside its header
            unreadable.append((path, f"incomplete header, no {missing} (truncated file?)"))
            continue
        uid = str(ds.SeriesInstanceUID)
        key = (
            f"{uid} {ds.SOPInstanceUID}" if is_multiframe_ct(ds) else uid
        )  # multi-frame: a series of its own
        series = by_uid.get(key)
        if series is None:
            series = by_uid[key] = SeriesInfo(
                series_uid=uid,
                study_uid=str(ds.get("StudyInstanceUID", "")),
                modality=str(ds.get("Modality", "")),
                description=str(ds.get("SeriesDescription", "")),
                series_number=int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
                image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or [])),
                sop_class_uid=str(ds.get("SOPClassUID", "")),
            )
        if "Rows" in ds and "Columns" in ds:
            try:
                series.slices += _slices_from_header(path, ds, data_offset)
            except (ValueError, TypeError) as err:
                unreadable.append((path, f"bad header value ({err})"))
        else:
            series.non_image_files += 1
    if not by_uid:
        if unreadable:
            path, reason = unreadable[0]
            raise InputDataError(
                f"{folder}: no readable DICOM file ({len(unreadable)} unreadable, e.g. {path}: {reason})"
            )
        raise InputDataError(f"{folder}: no DICOM files found ({len(non_dicom)} other files)")
    ordered = sorted(
        by_uid.values(), key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid)
    )
    return DicomScan(folder=folder, series=ordered, non_dicom_files=non_dicom, unreadable_files=unreadable)


def choose_series(scan: DicomScan, series_uid: str | None = None) -> SeriesInfo:
    """Pick the series to segment by the module's rule, or the one named by ``series_uid``.

    Raises:
        InputDataError: the named series is missing or unusable, or no series qualifies.
    """
    if series_uid is not None:
        # several when a multi-frame conversion keeps its original's UID: the rule picks one of them
        named = [s for s in scan.series if s.series_uid == series_uid]
        usable = [s for s in named if s.rejection_reason() is None]
        if usable:
            return min(usable, key=SeriesInfo.rank_key)
        if named:
            reason = named[0].rejection_reason()
            raise InputDataError(f"{scan.folder}: series {series_uid} cannot be used: {reason}")
        raise InputDataError(
            f"{scan.folder}: no series with SeriesInstanceUID {series_uid} (found {len(scan.series)}: "
            + ", ".join(s.series_uid for s in scan.series[:5])
            + ")"
        )
    candidates = [s for s in scan.series if s.rejection_reason() is None]
    if not candidates:
        found = "; ".join(
            f"{s.modality or '?'} '{s.description}' {s.n_files} file(s): {s.rejection_reason()}"
            for s in scan.series[:4]
        )
        kind = (
            "no CT image series"
            if all(s.modality != "CT" or not s.slices for s in scan.series)
            else "no usable CT series"
        )
        raise InputDataError(f"{scan.folder}: {kind} (found {found})")
    chosen = min(candidates, key=SeriesInfo.rank_key)
    if len(candidates) > 1:
        log.info(
            "%s: %d CT series qualify; using series %s '%s' (%d slices); pick another with --series-uid",
            scan.folder,
            len(candidates),
            chosen.series_number,
            chosen.description,
            len(chosen.slices),
        )
    return chosen
