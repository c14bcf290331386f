"""Volume files: geometry equal to SimpleITK's and nibabel's, lossless round trips, clear refusals."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_affine

from pe_segmentation.errors import InputDataError, OutputError
from pe_segmentation.io.volume import Volume, affine_from_sitk
from pe_segmentation.io.volume_files import case_name, read_volume, read_volume_header, write_volume


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("euler_deg", [(0, 0, 0), (90, 0, 0), (20, -10, 35)])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, hu_volume, suffix, euler_deg):
    volume = Volume(hu_volume.array, make_affine(euler_deg=euler_deg))
    path = write_volume(volume, tmp_path / f"case{suffix}")

    back = read_volume(path)

    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == np.int16
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
    np.testing.assert_allclose(back.affine, affine_from_sitk(sitk.ReadImage(str(path))), atol=1e-4)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_header_only_reading_gives_the_same_grid(tmp_path, hu_volume, suffix):
    path = write_volume(
        Volume(hu_volume.array, make_affine(euler_deg=(20, -10, 35))), tmp_path / f"v{suffix}"
    )
    header, full = read_volume_header(path), read_volume(path)
    assert header.shape == full.shape
    np.testing.assert_allclose(header.affine, full.affine, atol=1e-6)


def test_nifti_affine_agrees_with_nibabel(tmp_path, hu_volume):
    volume = Volume(hu_volume.array, make_affine(euler_deg=(20, -10, 35)))
    path = write_volume(volume, tmp_path / "case.nii.gz")
    image = nib.load(path)
    np.testing.assert_allclose(image.affine, volume.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(image.dataobj), volume.array)


def test_known_voxel_world_position(tmp_path, hu_volume):
    """Voxel (i, j, k) lies at affine @ (i, j, k, 1): checked against SimpleITK's index-to-point (LPS)."""
    path = write_volume(hu_volume, tmp_path / "case.nrrd")
    volume = read_volume(path)
    lps = np.array(sitk.ReadImage(str(path)).TransformIndexToPhysicalPoint((3, 4, 5)))
    ras = volume.affine @ np.array([3, 4, 5, 1.0])
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-6)


def test_corrupt_gzip_is_refused_with_the_file_named(tmp_path, hu_volume):
    path = write_volume(hu_volume, tmp_path / "case.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError) as caught:
        read_volume(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_nan_voxels_are_refused(tmp_path):
    array = np.zeros((4, 5, 6), np.float32)
    array[1, 2, 3] = np.nan
    array[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(InputDataError, match="contains 2 NaN or infinite voxels"):
        read_volume(tmp_path / "nan.nii.gz")


def test_4d_input_is_refused_but_a_singleton_fourth_axis_is_dropped(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.int16), np.eye(4)), tmp_path / "multi.nii.gz")
    with pytest.raises(InputDataError, match="is a 4D image"):
        read_volume(tmp_path / "multi.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.int16), np.eye(4)), tmp_path / "single.nii.gz")
    assert read_volume(tmp_path / "single.nii.gz").shape == (4, 5, 6)


def test_not_a_volume_and_missing_file(tmp_path):
    (tmp_path / "x.nii.gz").write_bytes(gzip.compress(b"hello"))
    with pytest.raises(InputDataError, match="cannot read"):
        read_volume(tmp_path / "x.nii.gz")
    with pytest.raises(InputDataError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(InputDataError, match="unknown volume format"):
        read_volume(tmp_path / "x.txt")


def test_failed_write_leaves_nothing_behind(tmp_path, hu_volume, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", fail)
    with pytest.raises(OutputError, match="disk full"):
        write_volume(hu_volume, tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_format_is_refused(tmp_path, hu_volume):
    with pytest.raises(OutputError, match="cannot write this format"):
        write_volume(hu_volume, tmp_path / "out.mhd")


def test_case_name_strips_double_suffixes():
    assert case_name("/data/CT_001.nii.gz") == "CT_001"
    assert case_name("scan.v2.nrrd") == "scan.v2"
