"""One entry point for every CT or label input: a DICOM folder, a DICOM file, or a volume file."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import is_volume_file, read_volume


def input_kind(path: str | os.PathLike[str]) -> str:
    """``"dicom"`` for a folder or a DICOM file, ``"volume"`` for a volume file.

    Raises:
        InputDataError: missing path or a file of unknown type.
    """
    path = Path(path)
    if path.is_dir():
        return "dicom"
    if not path.exists():
        raise InputDataError(f"{path}: no such file or folder")
    if is_volume_file(path):
        return "volume"
    if _dicom_series_uid(path) is not None:
        return "dicom"
    raise InputDataError(f"{path}: neither a DICOM file nor a NIfTI/NRRD/MHA volume")


def _dicom_series_uid(path: Path) -> str | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None
    return str(ds.get("SeriesInstanceUID", ""))


def load_volume(path: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """Read a CT (or label) from a DICOM folder, a single DICOM file (its series in the same folder) or a
    NIfTI/NRRD/MHA file.

    Args:
        path: the input.
        series_uid: for DICOM, the SeriesInstanceUID to read instead of the automatic choice.
    """
    path = Path(path)
    if input_kind(path) == "volume":
        if series_uid is not None:
            raise InputDataError(f"{path}: --series-uid applies to DICOM input only")
        return read_volume(path)
    if path.is_file():
        return read_dicom_series(path.parent, series_uid or _dicom_series_uid(path)).volume
    return read_dicom_series(path, series_uid).volume
