"""DICOM SEG that an independent validator (dciodvfy) passes and that files into its source's study, from
single-frame, multi-frame and anonymized sources; a source lacking what a SEG needs costs the SEG only."""

from __future__ import annotations

import json

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from anonymize import blank_uids, drop_file_meta, to_jpeg2000
from conftest import make_affine

from pe_segmentation.inference.dicom_seg import write_dicom_seg
from pe_segmentation.inference.seg_sources import DicomSegSkipped
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.volume import Volume

from . import seg_checks
from .helpers import make_ct
from .seg_checks import dciodvfy_findings, edit_headers, multi_frame_source

OBLIQUE = make_affine((0.9, 1.1, 2.0), euler_deg=(10.0, 20.0, 5.0))

#: Patient and study attributes of a scanner's series that the phantom writer leaves out.
COMPLETE_STUDY = {
    "PatientBirthDate": "19500101",
    "PatientSex": "O",
    "StudyTime": "101500",
    "StudyID": "S4711",
    "AccessionNumber": "A0815",
    "ReferringPhysicianName": "REFERRER^R",
    "StudyDescription": "CTPA",
}


def _series(series_writer, name="ct", **tags):
    return series_writer(
        make_ct(OBLIQUE, shape=(32, 28, 14)), name, patient_id="PID-7731", extra_tags=tags or None
    )


def _mask(volume: Volume) -> np.ndarray:
    mask = np.zeros(volume.shape, np.uint8)
    mask[10:20, 8:15, 3:9] = 1
    return mask


def _infer(run_infer, folder, out, checkpoint, *flags):
    return run_infer(
        "-i", folder, "-o", out, "--checkpoint", checkpoint, "--device", "cpu", "--no-preview", *flags
    )


@pytest.mark.parametrize("tags", [{}, COMPLETE_STUDY], ids=["phantom", "complete-study"])
def test_seg_passes_dciodvfy_and_files_into_the_source_study(
    tags, tmp_path, series_writer, checkpoint, run_infer
):
    folder = _series(series_writer, **tags)
    assert _infer(run_infer, folder, tmp_path / "out", checkpoint) == 0

    seg_path = tmp_path / "out" / "ct" / "seg.dcm"
    source_path = sorted(folder.iterdir())[0]
    found, own = dciodvfy_findings(seg_path), dciodvfy_findings(source_path)
    assert found.errors == []
    assert found.warnings <= own.warnings, found.warnings - own.warnings
    if tags:  # a source with its whole Patient and General Study modules gives a SEG without a warning
        assert found.warnings == set()
    seg, source = pydicom.dcmread(seg_path), pydicom.dcmread(source_path, stop_before_pixels=True)
    assert (seg.PatientID, seg.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID) != ("", "")
    for keyword in ("PatientName", "StudyDate", *tags):
        assert seg[keyword].value == source[keyword].value, keyword


def test_anonymous_seg_leaves_the_patient_and_study_out(tmp_path, series_writer, checkpoint, run_infer):
    folder = _series(series_writer, **COMPLETE_STUDY)
    assert _infer(run_infer, folder, tmp_path / "out", checkpoint, "--anonymous-seg") == 0

    seg_path = tmp_path / "out" / "ct" / "seg.dcm"
    assert dciodvfy_findings(seg_path).errors == []
    seg = pydicom.dcmread(seg_path)
    source = pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True)
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "StudyDate",
        "StudyID",
        "AccessionNumber",
    ):
        assert seg[keyword].value in ("", None), keyword  # Type 2: present, empty
    assert "StudyDescription" not in seg
    # StudyInstanceUID is Type 1: kept, as the references to the CT's series and instances are
    assert seg.StudyInstanceUID == source.StudyInstanceUID


def test_a_source_without_frame_of_reference_costs_the_seg_only(
    tmp_path, series_writer, checkpoint, run_infer, capsys
):
    folder = _series(series_writer)
    edit_headers(folder, lambda ds: delattr(ds, "FrameOfReferenceUID"))
    out = tmp_path / "out"
    assert _infer(run_infer, folder, out, checkpoint) == 0

    assert sorted(p.name for p in (out / "ct").iterdir()) == ["mask.nii.gz", "report.json"]
    report = json.loads((out / "ct" / "report.json").read_text())
    assert "dicom_seg" not in report["outputs"]
    reason = report["skipped_outputs"]["dicom_seg"]
    assert "FrameOfReferenceUID" in reason
    assert "\n" not in reason
    notes = [line for line in capsys.readouterr().err.splitlines() if "seg.dcm" in line]
    assert len(notes) == 1
    assert notes[0].endswith(f"ct: no seg.dcm: {reason}")


def test_a_source_without_study_uid_gives_no_seg(tmp_path, series_writer, checkpoint, run_infer):
    folder = _series(series_writer)
    edit_headers(folder, lambda ds: setattr(ds, "StudyInstanceUID", ""))
    out = tmp_path / "out"
    assert _infer(run_infer, folder, out, checkpoint) == 0

    assert sorted(p.name for p in (out / "ct").iterdir()) == ["mask.nii.gz", "report.json"]
    reason = json.loads((out / "ct" / "report.json").read_text())["skipped_outputs"]["dicom_seg"]
    assert reason == "the source has no StudyInstanceUID in 14 of 14 files, which a DICOM SEG must reference"


def _blank_sop_uids(ds: pydicom.Dataset) -> None:
    """What some anonymizers do: blank the dataset's SOP UIDs, leaving those of the file meta."""
    ds.SOPClassUID = ""
    ds.SOPInstanceUID = ""


def test_sop_uids_only_in_the_file_meta_are_referenced(tmp_path, series_writer):
    """The writer on a volume read before the headers were blanked: pe-seg's reader refuses blank SOP UIDs
    today (the end-to-end run is the next test)."""
    folder = _series(series_writer, **COMPLETE_STUDY)
    volume = read_dicom_series(folder).volume
    original = dciodvfy_findings(sorted(folder.iterdir())[0])
    edit_headers(folder, _blank_sop_uids)
    path = write_dicom_seg(_mask(volume), volume, tmp_path / "seg.dcm")

    seg = hd.seg.segread(path)
    (series,) = seg.ReferencedSeriesSequence
    metas = [pydicom.dcmread(name, stop_before_pixels=True).file_meta for name in volume.metadata["files"]]
    assert [i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence] == [
        meta.MediaStorageSOPInstanceUID for meta in metas
    ]
    assert {i.ReferencedSOPClassUID for i in series.ReferencedInstanceSequence} == {
        metas[0].MediaStorageSOPClassUID
    }
    assert series.SeriesInstanceUID == volume.metadata["series_uid"]
    assert seg.StudyInstanceUID == volume.metadata["study_uid"]
    found = dciodvfy_findings(path)
    assert found.errors == []
    assert found.warnings <= original.warnings


def test_sop_uids_only_in_the_file_meta_end_to_end(tmp_path, series_writer, checkpoint, run_infer):
    folder = _series(series_writer)
    expected = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in sorted(folder.iterdir())]
    edit_headers(folder, _blank_sop_uids)
    if _infer(run_infer, folder, tmp_path / "out", checkpoint) != 0:
        pytest.skip(
            "pe-seg's DICOM reader does not read sources with blank SOP UIDs yet (issue 14, reader part)"
        )
    seg = pydicom.dcmread(tmp_path / "out" / "ct" / "seg.dcm")
    referenced = {
        i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == set(expected)


@pytest.mark.parametrize("blank", ["StudyInstanceUID", "SeriesInstanceUID"])
def test_sources_lacking_study_or_series_uid_give_no_seg(blank, tmp_path, series_writer):
    folder = _series(series_writer)
    volume = read_dicom_series(folder).volume

    def anonymize(ds: pydicom.Dataset) -> None:
        _blank_sop_uids(ds)
        setattr(ds, blank, "")

    edit_headers(folder, anonymize)
    with pytest.raises(DicomSegSkipped, match=f"^the source has no {blank} in 14 of 14 files, "):
        write_dicom_seg(_mask(volume), volume, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


@pytest.mark.parametrize("anonymous", [False, True], ids=["default", "anonymous"])
def test_seg_of_a_multi_frame_source(anonymous, tmp_path, series_writer):
    series = read_dicom_series(_series(series_writer, **COMPLETE_STUDY)).volume
    volume = multi_frame_source(series, tmp_path / "enhanced.dcm")
    frames = volume.metadata["frames"]
    assert frames != sorted(frames)  # the frame order is not the slice order: the mapping is tested
    mask = _mask(volume)
    path = write_dicom_seg(mask, volume, tmp_path / "seg.dcm", anonymous=anonymous)

    source = pydicom.dcmread(tmp_path / "enhanced.dcm", stop_before_pixels=True)
    seg = hd.seg.segread(path)
    (series_ref,) = seg.ReferencedSeriesSequence
    assert series_ref.SeriesInstanceUID == source.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series_ref.ReferencedInstanceSequence] == [
        source.SOPInstanceUID
    ]
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.PatientID == ("" if anonymous else source.PatientID)
    # one SEG frame per source frame holding clot, showing the slice that source frame is
    slice_of = {frame: k for k, frame in enumerate(frames)}
    with_clot = sorted(frame for frame in frames if mask[:, :, slice_of[frame]].any())
    referenced = [
        int(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
        for item in seg.PerFrameFunctionalGroupsSequence
    ]
    assert sorted(referenced) == with_clot
    pixels = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=source.SOPInstanceUID, source_frame_numbers=with_clot, segment_numbers=[1]
    )
    for index, frame in enumerate(with_clot):
        np.testing.assert_array_equal(pixels[index, :, :, 0], mask[:, :, slice_of[frame]].T)
    found, own = dciodvfy_findings(path), dciodvfy_findings(tmp_path / "enhanced.dcm")
    assert found.errors == []
    if not anonymous:
        assert found.warnings <= own.warnings


def test_without_dciodvfy_the_check_skips_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(seg_checks.shutil, "which", lambda _name: None)
    with pytest.raises(pytest.skip.Exception, match="package dicom3tools"):
        dciodvfy_findings(tmp_path / "seg.dcm")


def test_the_issues_anonymized_series_gets_its_mask_and_report(
    tmp_path, series_writer, checkpoint, run_infer
):
    """The series of issue 14: JPEG 2000 lossless, SOP Class, SOP Instance and Series UIDs blanked by the
    anonymizer (the file meta keeps the SOP UIDs). pe-seg reads it, writes the mask and the report as for the
    original, and skips the SEG in one line: with no SeriesInstanceUID there is no series to reference, and
    pe-seg makes up no UID that would pretend to be the source's."""
    original = _series(series_writer, name="original")
    anonymized = _series(series_writer, name="ct")
    to_jpeg2000(anonymized)
    blank_uids(anonymized)
    assert _infer(run_infer, original, tmp_path / "plain", checkpoint) == 0
    out = tmp_path / "out"
    assert _infer(run_infer, anonymized, out, checkpoint) == 0

    assert sorted(p.name for p in (out / "ct").iterdir()) == ["mask.nii.gz", "report.json"]
    report = json.loads((out / "ct" / "report.json").read_text())
    assert "SeriesInstanceUID" in report["skipped_outputs"]["dicom_seg"]
    plain = json.loads((tmp_path / "plain" / "original" / "report.json").read_text())
    assert report["clots"] == plain["clots"]
    masks = [nib.load(folder / "mask.nii.gz") for folder in (tmp_path / "plain" / "original", out / "ct")]
    np.testing.assert_array_equal(masks[0].get_fdata(), masks[1].get_fdata())
    np.testing.assert_allclose(masks[0].affine, masks[1].affine, atol=1e-4)


def test_keep_phi_reads_the_patient_of_files_without_file_meta(
    tmp_path, series_writer, checkpoint, run_infer
):
    """An export without preamble and file meta is read; --keep-phi and the SEG writer then read its headers with
    the reader's own parser (pydicom's plain dcmread refuses such files): the patient in the report, a valid SEG."""
    folder = _series(series_writer)
    drop_file_meta(folder)
    out = tmp_path / "out"
    assert _infer(run_infer, folder, out, checkpoint, "--keep-phi") == 0

    report = json.loads((out / "ct" / "report.json").read_text())
    assert report["patient"]["id"] == "PID-7731"
    assert "skipped_outputs" not in report
    seg = pydicom.dcmread(out / "ct" / "seg.dcm")
    assert seg.PatientID == "PID-7731"
    assert dciodvfy_findings(out / "ct" / "seg.dcm").errors == []
