"""Multi-frame CT objects for tests: a single-frame series converted by highdicom, then edited or damaged."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import generate_uid


def convert_to_multiframe(
    series: Path,
    path: Path,
    *,
    series_instance_uid: str | None = None,
    frame_order: Sequence[int] | None = None,
    transfer_syntax: str | None = None,
) -> Path:
    """Write the single-frame series in folder ``series`` as one Legacy Converted Enhanced CT file ``path``.

    Args:
        series_instance_uid: the new object's SeriesInstanceUID (default: a new one, as converters do).
        frame_order: store highdicom's frames in this order (a permutation), to test sorting by position.
        transfer_syntax: compress the pixel data with this lossless syntax (e.g. RLE, JPEG-LS).
    """
    datasets = [pydicom.dcmread(p) for p in sorted(series.iterdir())]
    converted = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=int(datasets[0].SeriesNumber),
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    ds: pydicom.Dataset = converted
    if frame_order is not None:
        _keep_frames(ds, list(frame_order))
    if transfer_syntax is not None:
        ds.compress(transfer_syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _keep_frames(ds: pydicom.Dataset, order: list[int]) -> None:
    """Keep the frames ``order`` names (0-based), in that order: their functional groups and pixels."""
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    ds.PerFrameFunctionalGroupsSequence = [ds.PerFrameFunctionalGroupsSequence[i] for i in order]
    ds.PixelData = np.ascontiguousarray(frames[order]).tobytes()
    ds.NumberOfFrames = len(order)


def edit_multiframe(path: Path, edit: Callable[[pydicom.Dataset], object]) -> Path:
    """Apply ``edit`` to the file's dataset and save it back."""
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)
    return path


def drop_frame(index: int) -> Callable[[pydicom.Dataset], None]:
    """An edit that removes the frame at 0-based ``index`` (a missing slice)."""

    def edit(ds: pydicom.Dataset) -> None:
        _keep_frames(ds, [i for i in range(int(ds.NumberOfFrames)) if i != index])

    return edit


def same_position(index: int, as_index: int) -> Callable[[pydicom.Dataset], None]:
    """An edit that puts the frame at 0-based ``index`` where the frame at ``as_index`` is (a duplicate)."""

    def edit(ds: pydicom.Dataset) -> None:
        groups = ds.PerFrameFunctionalGroupsSequence
        position = groups[as_index].PlanePositionSequence[0].ImagePositionPatient
        groups[index].PlanePositionSequence[0].ImagePositionPatient = list(position)

    return edit


def per_frame(
    sequence: str, keyword: str, value_of: Callable[[int, object], object]
) -> Callable[[pydicom.Dataset], None]:
    """An edit that moves a shared functional group into every frame, with ``value_of(index, shared value)``."""

    def edit(ds: pydicom.Dataset) -> None:
        shared = ds.SharedFunctionalGroupsSequence[0]
        group = shared[sequence].value
        del shared[sequence]
        for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
            own = copy.deepcopy(group)
            setattr(own[0], keyword, value_of(index, getattr(group[0], keyword)))
            setattr(item, sequence, own)

    return edit


def positions(path: Path) -> list[list[float]]:
    """ImagePositionPatient of each frame, in the file's frame order."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return [
        [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        for item in ds.PerFrameFunctionalGroupsSequence
    ]
