"""FUMPE masks (.mat v5 and v7.3/HDF5) aligned to their DICOM series."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.fumpe import read_fumpe_mask


@pytest.fixture
def series_and_mask(hu_volume, series_writer):
    """A series written with InstanceNumber descending along the slice axis, as many scanners do, and a
    FUMPE-style mask (rows x columns x files in InstanceNumber order) marking voxel (i=5, j=3, k=6)."""
    n = hu_volume.shape[2]
    folder = series_writer(hu_volume, file_order=list(range(n))[::-1])
    reference = read_dicom_series(folder).volume
    mask = np.zeros((20, 24, n), dtype=bool)  # rows (j) x columns (i) x slices
    mask[3, 5, n - 1 - 6] = True  # grid slice k=6 is instance number n-6, i.e. mask slice n-1-6
    return reference, mask


def test_v5_mat_mask_lands_on_the_right_voxel(tmp_path, series_and_mask):
    reference, mask = series_and_mask
    scipy.io.savemat(tmp_path / "PAT001.mat", {"Mask": mask})
    label = read_fumpe_mask(tmp_path / "PAT001.mat", reference)
    assert label.array.dtype == np.uint8
    assert np.argwhere(label.array).tolist() == [[5, 3, 6]]
    np.testing.assert_array_equal(label.affine, reference.affine)


def test_v73_hdf5_mask_is_read_with_matlab_axis_order(tmp_path, series_and_mask):
    reference, mask = series_and_mask
    path = tmp_path / "PAT001.mat"
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle["Mask"] = mask.astype(np.uint8).transpose()  # MATLAB v7.3 stores axes reversed
    with open(path, "r+b") as handle:  # the header MATLAB writes into the HDF5 user block
        text = (
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
        )
        handle.write(text.ljust(116) + bytes(8) + b"\x00\x02IM")
    assert scipy.io.matlab.matfile_version(path)[0] == 2  # scipy sees a v7.3 file it cannot read itself
    label = read_fumpe_mask(path, reference)
    assert np.argwhere(label.array).tolist() == [[5, 3, 6]]


def test_mismatched_mask_is_refused(tmp_path, series_and_mask):
    reference, mask = series_and_mask
    scipy.io.savemat(tmp_path / "short.mat", {"Mask": mask[:, :, :-1]})
    with pytest.raises(InputDataError, match="does not match its series"):
        read_fumpe_mask(tmp_path / "short.mat", reference)
    scipy.io.savemat(tmp_path / "values.mat", {"Mask": mask.astype(np.uint8) * 3})
    with pytest.raises(InputDataError, match="are not 0/1"):
        read_fumpe_mask(tmp_path / "values.mat", reference)
    scipy.io.savemat(tmp_path / "other.mat", {"Label": mask})
    with pytest.raises(InputDataError, match="has no variable 'Mask'"):
        read_fumpe_mask(tmp_path / "other.mat", reference)
