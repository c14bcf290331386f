"""Shared fixtures: small synthetic volumes and DICOM series with known geometry and values."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from scipy.spatial.transform import Rotation

from pe_segmentation.io.dicom_writer import write_dicom_series
from pe_segmentation.io.volume import Volume, affine_from_geometry

if os.environ.get("PYTEST_XDIST_WORKER"):
    # each xdist worker already has a core: more intra-op threads oversubscribe the machine (the network tests
    # ran 44 s instead of 12 s)
    torch.set_num_threads(1)


def make_affine(
    spacing=(0.7, 0.8, 2.0), origin_lps=(10.0, -20.0, 30.0), euler_deg=(0.0, 0.0, 0.0)
) -> np.ndarray:
    """RAS affine of a grid with LPS direction cosines rotated by ``euler_deg`` (xyz) from identity."""
    direction = Rotation.from_euler("xyz", euler_deg, degrees=True).as_matrix()
    return affine_from_geometry(np.array(origin_lps), direction, np.array(spacing))


@pytest.fixture
def hu_volume() -> Volume:
    """A 24x20x8 HU volume whose voxel (i, j, k) holds ``i + 30 j + 700 k - 1000`` (unique, readable)."""
    i, j, k = np.meshgrid(np.arange(24), np.arange(20), np.arange(8), indexing="ij")
    return Volume((i + 30 * j + 700 * k - 1000).astype(np.int16), make_affine())


@pytest.fixture
def series_writer(tmp_path: Path) -> Callable[..., Path]:
    """Write a volume as a DICOM series under ``tmp_path`` and return its folder."""
    counter = iter(range(1000))

    def write(volume: Volume, name: str | None = None, **kwargs) -> Path:
        folder = tmp_path / (name or f"series_{next(counter)}")
        kwargs.setdefault("uid_seed", str(folder))
        write_dicom_series(volume, folder, **kwargs)
        return folder

    return write


def set_dicom_tags(folder: Path, index: int, **tags: object) -> None:
    """Set (or, with ``None``, blank) DICOM attributes of the ``index``-th file of ``folder`` (sorted by name)."""
    path = sorted(folder.iterdir())[index]
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def write_seed_fumpe_mask(
    path: Path, array: np.ndarray, spacing=(0.7, 0.8, 2.0), origin_ras=(120.8, 158.5, -935.5)
) -> Path:
    """A FUMPE mask as the seed project ships them (``label/PAT001.nii.gz``): uint8, slices as given, a qform
    (code 1) with the spacing and an origin whose slice axis claims +z whatever the slices' real order, no sform."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = origin_ras
    image = nib.Nifti1Image(np.asarray(array, dtype=np.uint8), None)
    image.set_qform(affine, code=1)
    image.set_sform(None, code=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path
