"""DICOM series whose UIDs an anonymizer blanked or dropped: read like SimpleITK reads them, grouped without
merging reconstructions, and refused only when a file is really cut short (issue 14)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from anonymize import blank_uids, drop_file_meta, files_of, to_jpeg2000
from conftest import make_affine

from pe_segmentation.cli import main
from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_header import read_file_header
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.dicom_scan import scan_dicom_folder
from pe_segmentation.io.loader import load_volume
from pe_segmentation.io.volume import Volume, affine_from_sitk

BLANKED = ["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID"]


def sitk_reference(folder: Path) -> sitk.Image:
    """Plain SimpleITK reading of a one-series folder: the geometry and voxels pe-seg must agree with."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


VARIANTS: dict[str, Callable[[Path], object]] = {
    "uids blanked": blank_uids,
    "no file meta": drop_file_meta,
    "no file meta, uids blanked": lambda f: (blank_uids(f), drop_file_meta(f)),
    "jpeg2000, uids blanked": lambda f: (to_jpeg2000(f), blank_uids(f)),  # the series of the issue
}
#: variant -> (UIDs the data sets lack, those the file meta gives back)
EXPECTED_UIDS = {
    "uids blanked": (BLANKED, ["SOPClassUID", "SOPInstanceUID"]),
    "no file meta": ([], []),
    "no file meta, uids blanked": (BLANKED, []),
    "jpeg2000, uids blanked": (BLANKED, ["SOPClassUID", "SOPInstanceUID"]),
}


@pytest.fixture
def oblique_ct(hu_volume) -> Volume:
    """The 24x20x8 phantom (voxel ``i + 30 j + 700 k - 1000`` HU) on an oblique grid."""
    return Volume(hu_volume.array, make_affine(euler_deg=(20, -10, 35)))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_anonymized_series_reads_like_simpleitk(oblique_ct, series_writer, variant):
    folder = series_writer(oblique_ct)
    original = [pydicom.dcmread(p, stop_before_pixels=True) for p in files_of(folder)]  # file i holds k = i
    VARIANTS[variant](folder)

    result = read_dicom_series(folder)
    reference = sitk_reference(folder)

    volume = result.volume
    if variant != "no file meta, uids blanked":
        # with no SOP Class UID anywhere GDCM does not take the file for a CT image and drops its geometry;
        # pe-seg reads it from the headers: the written grid, checked next
        np.testing.assert_allclose(volume.affine, affine_from_sitk(reference), atol=1e-4)
    np.testing.assert_allclose(volume.affine, oblique_ct.affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(reference).transpose(2, 1, 0))
    np.testing.assert_array_equal(volume.array, oblique_ct.array)
    assert volume.array[5, 3, 2] == 5 + 30 * 3 + 700 * 2 - 1000
    missing, from_meta = EXPECTED_UIDS[variant]
    assert volume.metadata["missing_uids"] == missing
    assert volume.metadata["uids_from_file_meta"] == from_meta
    # the UIDs the files still carry are kept; those they lack stay None, never made up
    assert volume.metadata["study_uid"] == original[0].StudyInstanceUID
    assert volume.metadata["frame_of_reference_uid"] == original[0].FrameOfReferenceUID
    blanked = "SeriesInstanceUID" in missing
    assert volume.metadata["series_uid"] == (None if blanked else original[0].SeriesInstanceUID)
    assert volume.metadata["series_key"].startswith("nouid-") == blanked
    kept_sop = "SOPInstanceUID" not in missing or "SOPInstanceUID" in from_meta
    assert volume.metadata["sop_instance_uids"] == [
        ds.SOPInstanceUID if kept_sop else None for ds in original
    ]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_whole_files_are_never_called_truncated(oblique_ct, series_writer, variant):
    folder = series_writer(oblique_ct)
    VARIANTS[variant](folder)
    for path in files_of(folder):
        header = read_file_header(path)
        assert header is not None
        assert header.ends_early is None, path
        assert header.pixel_offset is not None
    scan = scan_dicom_folder(folder)
    assert scan.unreadable_files == []
    assert [len(s.slices) for s in scan.series] == [8]
    assert not any(s.truncated for s in scan.series[0].slices)


def test_uid_less_series_warns_which_uids_are_missing_and_how_files_were_grouped(hu_volume, series_writer):
    folder = series_writer(hu_volume, extra_tags={"ConvolutionKernel": "B30f", "AcquisitionNumber": 2})
    blank_uids(folder)
    volume = read_dicom_series(folder).volume
    key = volume.metadata["series_key"]
    (warning,) = [w for w in volume.metadata["warnings"] if "missing in the files" in w]
    assert warning.startswith(
        "missing in the files: SOPClassUID, SOPInstanceUID, SeriesInstanceUID "
        "(SOPClassUID, SOPInstanceUID taken from the file meta); files grouped into one series by "
        f"folder {folder.name}, StudyInstanceUID present, SeriesNumber 1, Modality CT, "
        "ImageType ORIGINAL\\PRIMARY\\AXIAL, ConvolutionKernel B30f, SliceThickness 2, AcquisitionNumber 2, "
        "ImageOrientationPatient, PixelSpacing and 20 x 24 matrix"
    )
    assert warning.endswith(f"pass --series-uid {key} to select it")


def test_the_key_is_stable_and_selects_the_series_from_any_scan_root(hu_volume, series_writer, tmp_path):
    folder = series_writer(hu_volume, "patients/a/ct")
    blank_uids(folder)
    key = read_dicom_series(folder).volume.metadata["series_key"]

    assert [s.series_uid for s in scan_dicom_folder(tmp_path / "patients").series] == [key]
    assert read_dicom_series(folder).volume.metadata["series_key"] == key  # same files, same key
    assert read_dicom_series(tmp_path, series_uid=key).volume.shape == (24, 20, 8)
    single = load_volume(files_of(folder)[3])  # a file of the series stands for its series
    np.testing.assert_array_equal(single.array, hu_volume.array)


def test_same_facts_in_two_folders_make_two_series_with_different_keys(hu_volume, series_writer, tmp_path):
    for name in ("a", "b"):
        blank_uids(
            series_writer(hu_volume, f"study/{name}", study_instance_uid="1.2.826.0.1.3680043.8.498.5")
        )
    scan = scan_dicom_folder(tmp_path / "study")
    assert [len(s.slices) for s in scan.series] == [8, 8]
    assert len({s.series_uid for s in scan.series}) == 2


RECONSTRUCTIONS = {
    "kernel": ({"ConvolutionKernel": "B30f"}, {"ConvolutionKernel": "B70f"}),
    "image type": (
        {"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]},
        {"ImageType": ["DERIVED", "SECONDARY", "AXIAL"]},
    ),
    "acquisition": ({"AcquisitionNumber": 1}, {"AcquisitionNumber": 2}),
    "slice thickness": ({"SliceThickness": 1.0}, {"SliceThickness": 3.0}),
}


@pytest.mark.parametrize("case", sorted(RECONSTRUCTIONS))
def test_two_uid_less_reconstructions_in_one_folder_stay_two_series(hu_volume, series_writer, tmp_path, case):
    """Soft-tissue and lung kernels (or a derived copy, a second acquisition) on the same grid, their files
    mixed in one folder without SeriesInstanceUID: two series of 8 slices, each read with its own voxels."""
    tags_a, tags_b = RECONSTRUCTIONS[case]
    lung = Volume((hu_volume.array + 500).astype(np.int16), hu_volume.affine)
    mixed = series_writer(hu_volume, "mixed", extra_tags=tags_a)
    other = series_writer(lung, "other", extra_tags=tags_b)
    for path in files_of(other):
        path.rename(mixed / f"lung_{path.name}")
    blank_uids(mixed)

    scan = scan_dicom_folder(mixed)

    assert [len(s.slices) for s in scan.series] == [8, 8]
    by_first_file = {s.slices[0].path.name.startswith("lung_"): s.series_uid for s in scan.series}
    soft = read_dicom_series(mixed, series_uid=by_first_file[False]).volume
    sharp = read_dicom_series(mixed, series_uid=by_first_file[True]).volume
    np.testing.assert_array_equal(soft.array, hu_volume.array)
    np.testing.assert_array_equal(sharp.array, lung.array)


def test_orientation_noise_does_not_split_a_uid_less_series(hu_volume, series_writer):
    folder = series_writer(hu_volume)
    blank_uids(folder)
    for index, path in enumerate(files_of(folder)):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [1.0, 3e-5 * (index % 2), 0.0, 0.0, 1.0, 0.0]
        ds.save_as(path)
    scan = scan_dicom_folder(folder)
    assert [len(s.slices) for s in scan.series] == [8]


CUTS = {
    "pixel data, uncompressed": (
        "uids blanked",
        lambda data: data[:-50],
        "truncated file (it ends inside its pixel data)",
    ),
    "pixel data, jpeg2000": (
        "jpeg2000, uids blanked",
        lambda data: data[:-50],
        "truncated file (it ends inside its pixel data)",
    ),
    "jpeg2000 delimiter": (
        "jpeg2000, uids blanked",
        lambda data: data[:-4],
        "truncated file (it ends inside its pixel data)",
    ),
    "header": ("uids blanked", lambda data: data[:600], "truncated file: it ends inside its header"),
    "header, no file meta": (
        "no file meta",
        lambda data: data[:500],
        "truncated file: it ends inside its header",
    ),
}


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_a_uid_less_file_that_is_also_cut_short_is_refused_as_truncated(oblique_ct, series_writer, cut):
    variant, shorten, expected = CUTS[cut]
    folder = series_writer(oblique_ct)
    VARIANTS[variant](folder)
    victim = files_of(folder)[5]
    victim.write_bytes(shorten(victim.read_bytes()))

    with pytest.raises(InputDataError) as caught:
        read_dicom_series(folder)

    message = str(caught.value)
    assert expected in message
    assert str(victim) in message
    assert "\n" not in message


def dciodvfy_read_fails(path: Path) -> bool:
    """David Clunie's dciodvfy, an independent reader: whether it fails to read the whole data set."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False, timeout=60)
    return "Dicom dataset read failed" in run.stdout + run.stderr


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy is not installed")
@pytest.mark.parametrize("cut", sorted(CUTS))
def test_truncation_agrees_with_dciodvfy(oblique_ct, series_writer, cut):
    variant, shorten, _ = CUTS[cut]
    folder = series_writer(oblique_ct)
    VARIANTS[variant](folder)
    whole, victim = files_of(folder)[4:6]
    victim.write_bytes(shorten(victim.read_bytes()))

    assert not dciodvfy_read_fails(whole)
    assert read_file_header(whole).ends_early is None
    assert dciodvfy_read_fails(victim)
    assert read_file_header(victim).ends_early is not None


def test_a_whole_uid_less_object_without_pixels_is_not_called_truncated(tmp_path, hu_volume, series_writer):
    folder = series_writer(hu_volume)
    blank_uids(folder)
    report = pydicom.Dataset()
    report.Modality, report.SeriesNumber = "SR", 99
    report.file_meta = pydicom.dataset.FileMetaDataset()
    report.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    report.save_as(folder / "report.dcm", enforce_file_format=False)

    scan = scan_dicom_folder(folder)

    assert scan.unreadable_files == []
    assert sorted((len(s.slices), s.non_image_files) for s in scan.series) == [(0, 1), (8, 0)]
    assert read_dicom_series(folder).volume.shape == (24, 20, 8)


def test_info_shows_the_uid_less_series_its_key_and_the_warning(hu_volume, series_writer, capsys):
    folder = series_writer(hu_volume)
    blank_uids(folder)
    assert main(["info", "--input", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (series,) = report["series"]
    key = series["key"]
    assert series["series_uid"] is None
    assert series["missing_uids"] == BLANKED
    assert key.startswith("nouid-")
    assert report["chosen_series"] == key

    assert main(["info", "--input", str(folder), "--series-uid", key]) == 0
    printed = capsys.readouterr()
    assert f"no SeriesInstanceUID; pe-seg key {key} (pass it to --series-uid)" in printed.out
    assert f"chosen: {key} (named by --series-uid)" in printed.out
    warnings = [line for line in printed.out.splitlines() if line.startswith("warning: missing in the files")]
    assert len(warnings) == 1
    assert "files grouped into one series by folder" in warnings[0]
    assert printed.err == ""


def test_info_on_the_issues_series_no_longer_refuses_every_file(hu_volume, series_writer, capsys):
    """JPEG 2000 lossless, UIDs blanked, only the file meta left: read, not "incomplete header"."""
    folder = series_writer(hu_volume)
    VARIANTS["jpeg2000, uids blanked"](folder)
    assert main(["info", "--input", str(folder)]) == 0
    printed = capsys.readouterr()
    assert "incomplete header" not in printed.out + printed.err
    assert "truncated" not in printed.out + printed.err
    assert "shape: 24 x 20 x 8 voxels" in printed.out
