"""Which series of a DICOM folder pe-seg segments: the series rule of :mod:`pe_segmentation.io.dicom_scan`
(:meth:`SeriesInfo.rejection_reason` says which series qualify, :meth:`SeriesInfo.rank_key` orders them), or the
series a user names with ``--series-uid`` (a SeriesInstanceUID or, for files without one, pe-seg's key)."""

from __future__ import annotations

import logging

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_scan import DicomScan, SeriesInfo

log = logging.getLogger(__name__)


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
            f"{scan.folder}: no series with SeriesInstanceUID or pe-seg key {series_uid} "
            f"(found {len(scan.series)}: " + ", ".join(s.series_uid for s in scan.series[:5]) + ")"
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
