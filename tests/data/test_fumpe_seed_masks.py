"""The seed project's FUMPE layout with the real masks: FUMPE's expert masks paired with synthetic series.

The masks (``../shared/data/fumpe_labels``, see its README) are third-party data, read from there and never
committed; this test skips where the folder is absent. They are exactly the seed project's
``FUM_PE_data/label/PATxxx.nii.gz``, without their CT, so each is paired with a synthetic DICOM series of its
shape and spacing: PAT002's with file names running against slice position (its mask's slices, which follow
the names, must come out reversed), PAT022's with names following it (its mask must come out as it is).
Two 185-slice patients keep the test to a few seconds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pe_segmentation.data.datasets import from_fumpe
from pe_segmentation.io.dicom_writer import write_dicom_series
from pe_segmentation.io.volume import Volume, affine_from_geometry
from pe_segmentation.io.volume_files import read_volume

ROOT = Path(__file__).resolve().parents[2]
FUMPE = Path(os.environ.get("PE_SEG_FUMPE_LABELS", ROOT.parent / "shared/data/fumpe_labels"))
if not (FUMPE / "PAT002.nii.gz").is_file():
    FUMPE = Path("/work/shared/data/fumpe_labels")
pytestmark = pytest.mark.skipif(
    not (FUMPE / "PAT002.nii.gz").is_file(), reason="FUMPE masks not present (../shared/data/fumpe_labels)"
)

REVERSED, FORWARD = "PAT002", "PAT022"


def _series_like(mask_path: Path, folder: Path, names_against_position: bool) -> None:
    """A blank CT series with the mask's shape and spacing (lowest slice at z = -300 mm)."""
    header = nib.load(mask_path)
    spacing = np.asarray(header.header.get_zooms()[:3], dtype=float)
    n = header.shape[2]
    volume = Volume(
        np.full(header.shape, -1000, dtype=np.int16),
        affine_from_geometry(np.array([-150.0, -150.0, -300.0]), np.eye(3), spacing),
    )
    order = list(range(n))[::-1] if names_against_position else None
    write_dicom_series(volume, folder, uid_seed=folder.name, file_order=order)


def test_real_seed_masks_are_aligned_to_their_series(tmp_path: Path, caplog):
    root = tmp_path / "FUM_PE_data"
    (root / "label").mkdir(parents=True)
    for patient in (REVERSED, FORWARD):
        (root / "label" / f"{patient}.nii.gz").symlink_to(FUMPE / f"{patient}.nii.gz")
        _series_like(FUMPE / f"{patient}.nii.gz", root / "image" / patient, patient == REVERSED)
    with caplog.at_level(logging.WARNING, logger="pe_segmentation.io.fumpe"):
        items = from_fumpe(root, tmp_path / "cache")
    assert [item["case"] for item in items] == [REVERSED, FORWARD]
    for item in items:
        original = np.asarray(nib.load(FUMPE / f"{item['case']}.nii.gz").dataobj)
        expected = original[:, :, ::-1] if item["case"] == REVERSED else original
        label = read_volume(item["label"])
        assert label.shape == original.shape
        assert np.array_equal(label.array, expected)
        assert int(label.array.sum()) == int(original.sum()) > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{REVERSED}: ")
