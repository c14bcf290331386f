"""One entry point for every CT or label input: a DICOM folder, a DICOM file, or a volume file."""

from __future__ import annotations

import os
from pathlib import Path

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_header import read_file_header
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.dicom_scan import scan_dicom_folder
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import is_volume_file, read_volume

_HEADER_ERRORS = (OSError, ValueError, EOFError, KeyError, AttributeError, TypeError)


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
    if _is_dicom_file(path):
        return "dicom"
    raise InputDataError(f"{path}: neither a DICOM file nor a NIfTI/NRRD/MHA volume")


def _is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM file (Part 10, or a raw data set without file meta), whole or not."""
    try:
        return read_file_header(path) is not None
    except _HEADER_ERRORS:
        return False


def series_key_of_file(path: Path) -> str:
    """What selects the series ``path`` belongs to: its SeriesInstanceUID, or when it has none, the key its
    folder's scan gives the series it was grouped into.

    Raises:
        InputDataError: the file is not part of any series (its scan says why).
    """
    try:
        header = read_file_header(path)
    except _HEADER_ERRORS:
        header = None
    uid = header.uids.get("SeriesInstanceUID") if header is not None else None
    if uid is not None:
        return uid
    scan = scan_dicom_folder(path.parent)
    target = path.resolve()
    for series in scan.series:
        if any(s.path.resolve() == target for s in series.slices):
            return series.series_uid
    reason = next((why for p, why in scan.unreadable_files if p.resolve() == target), "not an image")
    raise InputDataError(f"{path}: {reason}")


def load_volume(path: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """Read a CT (or label) from a DICOM folder, a single DICOM file (its series in the same folder) or a
    NIfTI/NRRD/MHA file.

    Args:
        path: the input.
        series_uid: for DICOM, the series to read instead of the automatic choice: a SeriesInstanceUID, or
            the key ``pe-seg info`` shows for a series whose files have none.
    """
    path = Path(path)
    if input_kind(path) == "volume":
        if series_uid is not None:
            raise InputDataError(f"{path}: --series-uid applies to DICOM input only")
        return read_volume(path)
    if path.is_file():
        return read_dicom_series(path.parent, series_uid or series_key_of_file(path)).volume
    return read_dicom_series(path, series_uid).volume
