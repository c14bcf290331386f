"""FUMPE masks (.mat v5 and v7.3/HDF5, and the seed project's NIfTI masks) aligned to their DICOM series."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
import scipy.io
from conftest import make_affine, write_seed_fumpe_mask

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.fumpe import read_fumpe_label, read_fumpe_mask, read_fumpe_nifti_mask
from pe_segmentation.io.volume import Volume


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


# ------------------------------------------------------------------- the seed project's NIfTI masks (label/)


def _seed_mask(shape: tuple[int, int, int], voxels_by_file: list[tuple[int, int, int]]) -> np.ndarray:
    """A columns x rows x files mask marking (i, j, m): m counts the series' files in file-name order."""
    mask = np.zeros(shape, dtype=np.uint8)
    for i, j, m in voxels_by_file:
        mask[i, j, m] = 1
    return mask


def test_seed_mask_whose_file_names_run_against_slice_position_is_reversed(
    tmp_path, hu_volume, series_writer, caplog
):
    n = hu_volume.shape[2]  # 8 slices; IM00001 is the highest slice (k = 7), IM00008 the lowest (k = 0)
    folder = series_writer(hu_volume, file_order=list(range(n))[::-1])
    reference = read_dicom_series(folder).volume
    # file m (by name) is grid slice 7 - m: (5, 3) in file 1 -> k 6; (2, 10) in file 7 -> k 0; (23, 19) in file 0 -> k 7
    mask = _seed_mask(hu_volume.shape, [(5, 3, 1), (2, 10, 7), (23, 19, 0)])
    path = write_seed_fumpe_mask(tmp_path / "label" / "PAT007.nii.gz", mask)
    with caplog.at_level(logging.WARNING, logger="pe_segmentation.io.fumpe"):
        label = read_fumpe_nifti_mask(path, reference)
    assert sorted(np.argwhere(label.array).tolist()) == [[2, 10, 0], [5, 3, 6], [23, 19, 7]]
    assert label.array.dtype == np.uint8
    np.testing.assert_array_equal(label.affine, reference.affine)  # the series' grid, not the mask's qform
    assert label.metadata["slice_order"] == "reversed"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("PAT007: ")
    assert "reversed" in warnings[0]
    assert "\n" not in warnings[0]


def test_seed_mask_whose_file_names_follow_slice_position_is_kept(tmp_path, hu_volume, series_writer, caplog):
    reference = read_dicom_series(series_writer(hu_volume)).volume  # IM00001 is k = 0
    mask = _seed_mask(hu_volume.shape, [(5, 3, 1), (2, 10, 7)])
    path = write_seed_fumpe_mask(tmp_path / "PAT001.nii.gz", mask)
    with caplog.at_level(logging.WARNING):
        label = read_fumpe_nifti_mask(path, reference)
    assert sorted(np.argwhere(label.array).tolist()) == [[2, 10, 7], [5, 3, 1]]
    assert label.metadata["slice_order"] == "ascending"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_seed_mask_follows_natural_file_name_order(tmp_path, series_writer):
    # 12 slices named 1.dcm .. 12.dcm with 1.dcm the highest: "10.dcm" sorts after "9.dcm", not after "1.dcm"
    i, j, k = np.meshgrid(np.arange(6), np.arange(5), np.arange(12), indexing="ij")
    volume = Volume((i + 10 * j + 100 * k).astype(np.int16), make_affine())
    folder = series_writer(volume, file_order=list(range(12))[::-1])
    for path in folder.iterdir():
        path.rename(folder / f"{int(path.stem[2:])}.dcm")
    reference = read_dicom_series(folder).volume
    mask = _seed_mask(volume.shape, [(1, 2, 9), (4, 4, 10)])  # files 10.dcm and 11.dcm: k = 2 and k = 1
    label = read_fumpe_nifti_mask(write_seed_fumpe_mask(tmp_path / "PAT003.nii", mask), reference)
    assert sorted(np.argwhere(label.array).tolist()) == [[1, 2, 2], [4, 4, 1]]


def test_seed_mask_errors_and_warnings(tmp_path, hu_volume, series_writer, caplog):
    n = hu_volume.shape[2]
    reference = read_dicom_series(series_writer(hu_volume)).volume
    mask = np.zeros(hu_volume.shape, dtype=np.uint8)
    short = write_seed_fumpe_mask(tmp_path / "short.nii.gz", mask[:, :, :-1])
    with pytest.raises(InputDataError, match=r"short\.nii\.gz: mask shape 24x20x7 does not match its series"):
        read_fumpe_nifti_mask(short, reference)
    turned = write_seed_fumpe_mask(tmp_path / "turned.nii.gz", mask.transpose(1, 0, 2))
    with pytest.raises(InputDataError, match=r"mask shape 20x24x8 does not match its series \(24 columns"):
        read_fumpe_nifti_mask(turned, reference)
    values = write_seed_fumpe_mask(tmp_path / "values.nii.gz", mask + 2)
    with pytest.raises(InputDataError, match="are not 0/1"):
        read_fumpe_nifti_mask(values, reference)
    other = write_seed_fumpe_mask(tmp_path / "PAT009.nii.gz", mask, spacing=(0.7, 0.8, 1.0))
    with caplog.at_level(logging.WARNING):
        read_fumpe_nifti_mask(other, reference)
    assert any(r.getMessage().startswith("PAT009: the mask's spacing 0.7x0.8x1 mm") for r in caplog.records)
    shuffled = read_dicom_series(series_writer(hu_volume, file_order=[1, 0, *range(2, n)])).volume
    with pytest.raises(InputDataError, match="file names follow its slice positions neither up nor down"):
        read_fumpe_nifti_mask(write_seed_fumpe_mask(tmp_path / "PAT010.nii.gz", mask), shuffled)


def test_read_fumpe_label_picks_the_reader_by_suffix(tmp_path, series_and_mask):
    reference, mask = series_and_mask  # the series' file names run against slice position
    scipy.io.savemat(tmp_path / "PAT001.mat", {"Mask": mask})
    seed = write_seed_fumpe_mask(tmp_path / "PAT001.nii.gz", mask.transpose(1, 0, 2))
    assert read_fumpe_label(tmp_path / "PAT001.mat", reference).metadata["format"] == "fumpe-mat"
    assert read_fumpe_label(seed, reference).metadata["format"] == "fumpe-nifti"
    assert np.argwhere(read_fumpe_label(seed, reference).array).tolist() == [[5, 3, 6]]
