"""Helpers of the DICOM SEG tests: dciodvfy's findings, header edits, and a multi-frame source from a series."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pe_segmentation.io.volume import Volume

#: dciodvfy, the DICOM validator of David Clunie's dicom3tools.
DCIODVFY_PACKAGE = "dicom3tools"


@dataclass(frozen=True)
class Findings:
    """What dciodvfy said about one file: its error and warning lines (without the ``Error - `` prefix)."""

    errors: list[str]
    warnings: set[str]


def dciodvfy_findings(path: Path) -> Findings:
    """Run dciodvfy on ``path`` (skip the test, naming the package, when it is not installed)."""
    program = shutil.which("dciodvfy")
    if program is None:
        pytest.skip(f"dciodvfy is not installed (Debian/Ubuntu package {DCIODVFY_PACKAGE})")
    done = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=120, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    errors = [line.removeprefix("Error - ") for line in lines if line.startswith("Error - ")]
    warnings = {line.removeprefix("Warning - ") for line in lines if line.startswith("Warning - ")}
    return Findings(errors, warnings)


def edit_headers(folder: Path, edit: Callable[[pydicom.Dataset], None]) -> list[Path]:
    """Apply ``edit`` to the dataset of every file of ``folder`` (sorted by name), saved in place."""
    paths = sorted(folder.iterdir())
    for path in paths:
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)
    return paths


def multi_frame_source(volume: Volume, path: Path, shuffle_seed: int = 0) -> Volume:
    """Save the single-frame series ``volume`` was read from as one Legacy Converted Enhanced CT object at
    ``path``, and return ``volume`` as pe-seg's reader gives a multi-frame source: ``files`` the one path per
    slice, ``frames`` each slice's 1-based frame number (highdicom orders the frames by its own rule)."""
    slices = [pydicom.dcmread(name) for name in volume.metadata["files"]]
    given = list(slices)
    random.Random(shuffle_seed).shuffle(given)
    converted = hd.legacy.LegacyConvertedEnhancedCTImage(
        given,
        series_instance_uid=hd.UID(),
        series_number=7,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    converted.save_as(path)
    frame_positions = [
        np.array([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        for frame in converted.PerFrameFunctionalGroupsSequence
    ]
    frames = []
    for ds in slices:
        position = np.array([float(v) for v in ds.ImagePositionPatient])
        distances = [float(np.linalg.norm(position - p)) for p in frame_positions]
        frames.append(int(np.argmin(distances)) + 1)
    assert sorted(frames) == list(range(1, len(slices) + 1))
    metadata = {
        **volume.metadata,
        "series_uid": converted.SeriesInstanceUID,
        "series_number": 7,
        "sop_instance_uids": [converted.SOPInstanceUID] * len(slices),
        "files": [str(path)] * len(slices),
        "frames": frames,
    }
    return Volume(volume.array, volume.affine, metadata)
