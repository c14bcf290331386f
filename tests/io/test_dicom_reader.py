"""DICOM series reading: HU values, geometry equal to SimpleITK's, compressed syntaxes, and refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import make_affine, set_dicom_tags
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.dicom_scan import scan_dicom_folder
from pe_segmentation.io.volume import Volume, affine_from_sitk


def sitk_reference(folder: Path) -> sitk.Image:
    """Plain SimpleITK reading of a one-series folder: the geometry we must agree with."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize(
    ("euler_deg", "reverse_files"),
    [
        ((0, 0, 0), False),  # axial
        ((0, 0, 0), True),  # axial, files numbered head to feet
        ((180, 0, 0), False),  # axial with the slice normal pointing to the feet
        ((90, 0, 0), False),  # coronal
        ((0, 90, 0), True),  # sagittal
        ((20, -10, 35), False),  # oblique
        ((20, -10, 35), True),
    ],
)
def test_geometry_and_values_match_simpleitk(hu_volume, series_writer, euler_deg, reverse_files):
    volume = Volume(hu_volume.array, make_affine(euler_deg=euler_deg))
    n = volume.shape[2]
    folder = series_writer(volume, file_order=list(range(n))[::-1] if reverse_files else None)

    result = read_dicom_series(folder)
    reference = sitk_reference(folder)

    np.testing.assert_allclose(result.volume.affine, affine_from_sitk(reference), atol=1e-4)
    np.testing.assert_allclose(result.volume.affine, volume.affine, atol=1e-4)
    np.testing.assert_array_equal(result.volume.array, volume.array)
    assert result.volume.array.dtype == np.int16


def test_known_voxels_in_hu_for_signed_and_unsigned_storage(hu_volume, series_writer):
    for signed, intercept in ((False, -1024.0), (True, 0.0), (True, -1000.0)):
        folder = series_writer(hu_volume, signed=signed, rescale_intercept=intercept)
        stored = pydicom.dcmread(sorted(folder.iterdir())[2])
        array = read_dicom_series(folder).volume.array
        # voxel (i=5, j=3, k=2) = 5 + 90 + 1400 - 1000 HU, whatever the stored representation
        assert array[5, 3, 2] == 495
        assert array[0, 0, 0] == -1000
        assert int(stored.pixel_array[3, 5]) == 495 - intercept  # rows are j, columns are i


@pytest.mark.parametrize("syntax", ["rle", "jpegls"])
def test_compressed_series_decode_losslessly(hu_volume, series_writer, syntax):
    folder = series_writer(hu_volume, transfer_syntax=syntax)
    assert pydicom.dcmread(next(folder.iterdir())).file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(read_dicom_series(folder).volume.array, hu_volume.array)


def test_jpeg2000_ct_from_pydicom_decodes_to_the_same_hu(tmp_path):
    """pydicom's bundled JPEG 2000 CT slice, made into a 3-slice series by shifting its position."""
    source = pydicom.dcmread(get_testdata_file("693_J2KI.dcm"))
    assert source.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
    expected = source.pixel_array.astype(np.int32) * int(source.RescaleSlope) + int(source.RescaleIntercept)
    folder = tmp_path / "j2k"
    folder.mkdir()
    series_uid = generate_uid()
    for k in range(3):
        ds = pydicom.dcmread(get_testdata_file("693_J2KI.dcm"))
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-122.5, -112.4, 47.0 + 2.5 * k]
        ds.save_as(folder / f"{k}.dcm")

    volume = read_dicom_series(folder).volume

    assert volume.shape == (512, 512, 3)
    np.testing.assert_allclose(volume.spacing, [0.478516, 0.478516, 2.5], atol=1e-6)
    for k in range(3):
        np.testing.assert_array_equal(volume.array[:, :, k], expected.T)


def test_study_folder_picks_the_largest_original_axial_series_and_skips_localizer(
    hu_volume, series_writer, tmp_path
):
    study = tmp_path / "study"
    series_writer(
        hu_volume,
        "study/a_scout",
        series_number=1,
        extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
    )
    thin = series_writer(hu_volume, "study/b_thin", series_number=3)
    series_writer(Volume(hu_volume.array[:, :, :4], hu_volume.affine), "study/c_thick", series_number=2)
    series_writer(
        hu_volume, "study/d_mip", series_number=4, extra_tags={"ImageType": ["DERIVED", "SECONDARY", "AXIAL"]}
    )
    thin_uid = pydicom.dcmread(next(thin.iterdir())).SeriesInstanceUID

    result = read_dicom_series(study)

    assert result.volume.metadata["series_uid"] == thin_uid
    assert len(result.scan.series) == 4
    chosen_by_uid = read_dicom_series(study, series_uid=result.scan.series[1].series_uid)
    assert chosen_by_uid.volume.shape[2] == 4


def _positions(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


REFUSALS = {
    "missing slice": (lambda f: _positions(f)[3].unlink(), "missing slices"),
    "duplicate position": (
        lambda f: set_dicom_tags(
            f, 4, ImagePositionPatient=pydicom.dcmread(_positions(f)[3]).ImagePositionPatient
        ),
        "duplicate slice positions",
    ),
    "uneven spacing": (
        lambda f: [
            set_dicom_tags(f, k, ImagePositionPatient=[10.0, -20.0, 30.0 + 2.0 * k + 0.3 * (k % 2)])
            for k in range(8)
        ],
        "non-uniform slice spacing",
    ),
    "gantry tilt": (
        lambda f: [
            set_dicom_tags(f, k, ImagePositionPatient=[10.0, -20.0 + 0.5 * k, 30.0 + 2.0 * k])
            for k in range(8)
        ],
        "gantry tilt",
    ),
    "mixed sizes": (
        lambda f: set_dicom_tags(f, 2, Rows=10, PixelData=np.zeros((10, 24), np.uint16).tobytes()),
        "mixed slice sizes",
    ),
    "mixed orientation": (
        lambda f: set_dicom_tags(f, 2, ImageOrientationPatient=[1, 0, 0, 0, 0.9, 0.43589]),
        "mixed ImageOrientationPatient",
    ),
    "truncated file": (
        lambda f: _positions(f)[5].write_bytes(_positions(f)[5].read_bytes()[:-50]),
        "truncated file",
    ),
    "missing position": (
        lambda f: set_dicom_tags(f, 1, ImagePositionPatient=None),
        "missing or invalid ImagePositionPatient",
    ),
    "parallel orientation vectors": (
        lambda f: [set_dicom_tags(f, k, ImageOrientationPatient=[1, 0, 0, 1, 0, 0]) for k in range(8)],
        "is not two orthonormal vectors",
    ),
    "not CT": (lambda f: [set_dicom_tags(f, k, Modality="MR") for k in range(8)], "no CT image series"),
    "single slice": (lambda f: [p.unlink() for p in _positions(f)[1:]], "a single slice"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_series_name_the_problem_in_one_line(hu_volume, series_writer, case):
    folder = series_writer(hu_volume)
    damage, expected = REFUSALS[case]
    damage(folder)
    with pytest.raises(InputDataError) as caught:
        read_dicom_series(folder)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert str(folder) in message


def test_empty_and_non_dicom_folders_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputDataError, match="no DICOM files found"):
        read_dicom_series(empty)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    with pytest.raises(InputDataError, match=r"no DICOM files found \(1 other files\)"):
        read_dicom_series(tmp_path / "notes")


def test_non_image_objects_only_are_refused(tmp_path):
    folder = tmp_path / "sr"
    folder.mkdir()
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # basic text SR
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.Modality = generate_uid(), "SR"
    ds.save_as(folder / "report.dcm", enforce_file_format=True)
    with pytest.raises(InputDataError, match="no CT image series"):
        read_dicom_series(folder)


def test_missing_rescale_and_slight_jitter_warn_but_read(hu_volume, series_writer):
    folder = series_writer(hu_volume, signed=True, rescale_intercept=0.0)
    for k in range(8):
        set_dicom_tags(folder, k, ImagePositionPatient=[10.0, -20.0, 30.0 + 2.0 * k + 0.005 * (k % 2)])
    set_dicom_tags(folder, 0, RescaleSlope=None, RescaleIntercept=None)

    result = read_dicom_series(folder)

    warnings = " | ".join(result.volume.metadata["warnings"])
    assert "RescaleSlope/RescaleIntercept missing" in warnings
    assert "slice spacing varies slightly" in warnings
    assert result.volume.array[5, 3, 2] == 495


def test_unknown_series_uid_lists_what_exists(hu_volume, series_writer):
    folder = series_writer(hu_volume)
    with pytest.raises(
        InputDataError, match=r"no series with SeriesInstanceUID or pe-seg key 1\.2\.3 \(found 1: 1\.2\."
    ):
        read_dicom_series(folder, series_uid="1.2.3")


def test_scan_reports_non_dicom_files_beside_the_series(hu_volume, series_writer):
    folder = series_writer(hu_volume)
    (folder / "notes.txt").write_text("x")
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "other_series.dcm")
    scan = scan_dicom_folder(folder)
    assert [p.name for p in scan.non_dicom_files] == ["notes.txt"]
    assert sorted(len(s.slices) for s in scan.series) == [1, 8]
    assert read_dicom_series(folder).volume.shape == (24, 20, 8)
