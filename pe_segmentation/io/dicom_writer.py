"""Write a :class:`Volume` as a CT DICOM series (one file per axial slice).

Used by the phantom generator (so that every DICOM code path can be exercised without private data) and by
``pe-seg`` tests. Geometry follows the standard: ImageOrientationPatient holds the row (i) and column (j)
direction cosines in LPS, ImagePositionPatient the LPS position of each slice's first voxel; pixel values are
stored with RescaleSlope/RescaleIntercept so that ``stored * slope + intercept`` is HU.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from pe_segmentation.errors import OutputError
from pe_segmentation.io.volume import Volume, geometry_from_affine
from pe_segmentation.versions import __version__

TRANSFER_SYNTAXES = {"explicit": ExplicitVRLittleEndian, "rle": RLELossless, "jpegls": JPEGLSLossless}
# The display window (HU) written into every slice: a CT angiography window.
_WINDOW_CENTER_HU, _WINDOW_WIDTH_HU = 100.0, 700.0


def _uid(seed: str | None, *parts: object) -> str:
    """A fresh UID, or a reproducible one derived from ``seed`` and ``parts``."""
    if seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[seed, *(str(p) for p in parts)])


def _stored_values(hu: np.ndarray, signed: bool, intercept: float) -> np.ndarray:
    """HU -> stored integers (slope 1), clipped to the stored type's range."""
    info = np.iinfo(np.int16 if signed else np.uint16)
    hu = np.asarray(hu)
    if np.issubdtype(hu.dtype, np.integer) and float(intercept).is_integer():  # exact in integers, and faster
        stored = hu.astype(np.int64)
        stored -= np.int64(intercept)
    else:
        stored = np.rint(hu.astype(np.float64) - intercept)
    np.clip(stored, stored.dtype.type(info.min), stored.dtype.type(info.max), out=stored)  # typed: fast path
    return stored.astype(np.int16 if signed else np.uint16)


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    patient_name: str = "PHANTOM^PE",
    patient_id: str = "PESEG-PHANTOM",
    series_description: str = "CTPA pe-seg phantom",
    series_number: int = 1,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    uid_seed: str | None = None,
    transfer_syntax: str = "explicit",
    signed: bool = False,
    rescale_intercept: float = -1024.0,
    extra_tags: dict[str, object] | None = None,
    file_order: Sequence[int] | None = None,
) -> list[Path]:
    """Write ``volume`` (voxel values in HU) as a CT image series into ``folder``.

    The folder is written whole or not at all: files go to a temporary sibling folder that is renamed at the
    end. ``folder`` must not exist yet.

    Args:
        volume: HU values indexed ``[i, j, k]``; slices are taken along k.
        folder: output folder, created.
        patient_name: PatientName; the phantoms use obviously synthetic names.
        patient_id: PatientID.
        series_description: SeriesDescription.
        series_number: SeriesNumber.
        study_instance_uid: StudyInstanceUID (generated when ``None``).
        series_instance_uid: SeriesInstanceUID (generated when ``None``).
        uid_seed: derive every generated UID from this string, so the same call writes the same UIDs.
        transfer_syntax: ``"explicit"`` (uncompressed), ``"rle"`` (RLE lossless) or ``"jpegls"`` (JPEG-LS lossless).
        signed: PixelRepresentation 1 (int16) instead of 0 (uint16).
        rescale_intercept: RescaleIntercept; stored values are ``HU - intercept`` (slope 1).
        extra_tags: keyword -> value set on every slice (e.g. to make odd series for tests).
        file_order: the order in which slice indices are given file numbers (default: k ascending), to test
            readers that must sort by position rather than by name.

    Returns:
        The written file paths, in slice order k = 0, 1, ...
    """
    folder = Path(folder)
    order = _check_request(volume, folder, transfer_syntax, file_order)
    study_uid = study_instance_uid or _uid(uid_seed, "study")
    series_uid = series_instance_uid or _uid(uid_seed, "series", series_number)
    shared = _SeriesTags(
        patient_name=patient_name,
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        frame_uid=_uid(uid_seed, "frame", study_uid),
        description=series_description,
        number=series_number,
        extra_tags=extra_tags or {},
    )
    encoding = _Encoding(transfer_syntax, signed, rescale_intercept)
    with _staging_folder(folder) as staging:
        names = _write_slices(staging, volume, order, shared, encoding, uid_seed)
    return [folder / name for name in names]


def _check_request(
    volume: Volume, folder: Path, transfer_syntax: str, file_order: Sequence[int] | None
) -> list[int]:
    """Check the arguments of :func:`write_dicom_series` before anything is written.

    Returns:
        The slice index k of each file number, in file order.

    Raises:
        ValueError: an unknown transfer syntax, or a file order that is not a permutation of the slices.
        OutputError: ``folder`` exists already.
    """
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(
            f"transfer_syntax must be one of {sorted(TRANSFER_SYNTAXES)}, got {transfer_syntax!r}"
        )
    if folder.exists():
        raise OutputError(f"{folder}: already exists; refusing to mix two series in one folder")
    n_slices = volume.shape[2]
    order = list(range(n_slices)) if file_order is None else [int(k) for k in file_order]
    if sorted(order) != list(range(n_slices)):
        raise ValueError("file_order must be a permutation of the slice indices")
    return order


@dataclass(frozen=True)
class _SeriesTags:
    """What every slice of one written series shares: patient, study and series identity, dates, display
    window, and the caller's extra tags."""

    patient_name: str
    patient_id: str
    study_uid: str
    series_uid: str
    frame_uid: str
    description: str
    number: int
    extra_tags: dict[str, object]
    date: str = field(default_factory=lambda: datetime.date.today().strftime("%Y%m%d"))

    def apply(self, ds: pydicom.Dataset) -> None:
        """Set the shared tags on one slice's dataset (the extra tags last, so they can override any tag)."""
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
            self.study_uid,
            self.series_uid,
            self.frame_uid,
        )
        ds.SeriesDescription, ds.SeriesNumber = self.description, self.number
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = self.date
        ds.WindowCenter, ds.WindowWidth = _WINDOW_CENTER_HU, _WINDOW_WIDTH_HU
        for keyword, value in self.extra_tags.items():
            setattr(ds, keyword, value)


@dataclass(frozen=True)
class _Encoding:
    """How pixels are stored: the transfer syntax (a key of :data:`TRANSFER_SYNTAXES`), signed or unsigned
    16-bit integers, and the RescaleIntercept (stored values are ``HU - intercept``)."""

    transfer_syntax: str
    signed: bool
    intercept: float


def _write_slices(
    staging: Path,
    volume: Volume,
    order: Sequence[int],
    shared: _SeriesTags,
    encoding: _Encoding,
    uid_seed: str | None,
) -> list[str]:
    """Write one file per slice into ``staging``, numbered in ``order``, and return the file names by slice k."""
    origin, direction, spacing = geometry_from_affine(volume.affine)
    # one transposed copy, [k, j, i], so each slice's rows x columns are contiguous; stored values per slice
    slices = np.ascontiguousarray(np.asarray(volume.array).transpose(2, 1, 0))
    names = [""] * len(order)
    for number, k in enumerate(order, start=1):
        ds = _slice_dataset(
            _stored_values(slices[k], encoding.signed, encoding.intercept),
            position=origin + direction[:, 2] * spacing[2] * k,
            orientation=direction[:, :2].T.ravel(),
            pixel_spacing=(spacing[1], spacing[0]),
            slice_thickness=spacing[2],
            signed=encoding.signed,
            intercept=encoding.intercept,
            instance_number=number,
            sop_uid=_uid(uid_seed, "sop", shared.series_uid, k),
        )
        shared.apply(ds)
        if encoding.transfer_syntax != "explicit":
            ds.compress(TRANSFER_SYNTAXES[encoding.transfer_syntax])
        names[k] = f"IM{number:05d}.dcm"
        ds.save_as(staging / names[k], enforce_file_format=True)
    return names


@contextlib.contextmanager
def _staging_folder(folder: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder that is renamed to ``folder`` on success and removed on any error,
    so that a series appears whole or not at all.

    Raises:
        OutputError: the files or the rename fail with an OS error.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield staging
        os.replace(staging, folder)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{folder}: cannot write DICOM series ({err.strerror or err})") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _slice_dataset(
    pixels: np.ndarray,
    *,
    position: np.ndarray,
    orientation: np.ndarray,
    pixel_spacing: tuple[float, float],
    slice_thickness: float,
    signed: bool,
    intercept: float,
    instance_number: int,
    sop_uid: str,
) -> pydicom.Dataset:
    """One CT Image Storage slice with its geometry and pixels (rows = j, columns = i)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Manufacturer = "pe-seg"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [_ds_number(v) for v in position]
    ds.ImageOrientationPatient = [_ds_number(v) for v in orientation]
    ds.PixelSpacing = [_ds_number(v) for v in pixel_spacing]
    ds.SliceThickness = _ds_number(slice_thickness)
    ds.SliceLocation = _ds_number(position[2])
    ds.KVP = 120
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = _ds_number(intercept), 1, "HU"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _ds_number(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) that keeps sub-micrometre precision."""
    text = f"{float(value):.10g}"
    if len(text) > 16:
        text = f"{float(value):.8g}"
    return text
