"""Which cases an --input names: files, series and study folders, many-case folders, globs."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from conftest import make_affine

from pe_segmentation.errors import InputDataError
from pe_segmentation.inference.cases import discover_cases
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import write_volume

IMAGE = Volume(np.full((12, 10, 6), 40, np.int16), make_affine())
SCOUT = Volume(np.full((12, 10, 1), 40, np.int16), make_affine())
LOCALIZER = {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}


def test_a_volume_file_a_series_folder_and_a_dicom_file(tmp_path, series_writer):
    path = write_volume(IMAGE, tmp_path / "case_7.nii.gz")
    (case,) = discover_cases(path)
    assert case.name == "case_7"
    assert case.path == path
    folder = series_writer(IMAGE, "patient_a")
    (case,) = discover_cases(folder)
    assert case.name == "patient_a"
    assert case.path == folder
    assert case.series_uid is None  # a flat folder: the series rule decides when it is read
    (case,) = discover_cases(sorted(folder.iterdir())[0])
    assert case.name == "patient_a"


def test_a_flat_folder_with_several_series_is_one_case(tmp_path, series_writer):
    series_writer(
        IMAGE, "flat", series_number=3, study_instance_uid="1.2.3.4", series_instance_uid="1.2.3.4.3"
    )
    for path in (tmp_path / "flat").iterdir():
        path.rename(tmp_path / "flat" / f"ct_{path.name}")
    series_writer(SCOUT, "scout", series_number=1, study_instance_uid="1.2.3.4", extra_tags=LOCALIZER)
    for path in (tmp_path / "scout").iterdir():
        path.rename(tmp_path / "flat" / f"scout_{path.name}")
    (case,) = discover_cases(tmp_path / "flat")
    assert case.name == "flat"
    assert read_dicom_series(case.path, case.series_uid).volume.metadata["series_uid"] == "1.2.3.4.3"


def test_a_study_folder_with_several_series_is_one_case_with_the_series_rule(tmp_path, series_writer):
    ct = series_writer(IMAGE, "study/ct", series_number=3, study_instance_uid="1.2.3.4")
    series_writer(SCOUT, "study/scout", series_number=1, study_instance_uid="1.2.3.4", extra_tags=LOCALIZER)
    (case,) = discover_cases(tmp_path / "study")
    assert case.name == "study"
    assert case.series_uid == read_dicom_series(ct).volume.metadata["series_uid"]
    assert case.error is None


def test_a_folder_of_many_cases(tmp_path, series_writer):
    series_writer(IMAGE, "cases/p1/ct", study_instance_uid="1.1")
    series_writer(SCOUT, "cases/p1/scout", study_instance_uid="1.1", extra_tags=LOCALIZER)
    series_writer(IMAGE, "cases/p2", study_instance_uid="2.2")
    series_writer(SCOUT, "cases/p3", study_instance_uid="3.3", extra_tags=LOCALIZER)  # nothing usable
    write_volume(IMAGE, tmp_path / "cases" / "nifti" / "p4.nii.gz")
    write_volume(IMAGE, tmp_path / "cases" / "p5.mha")

    cases = {case.name: case for case in discover_cases(tmp_path / "cases")}
    assert sorted(cases) == ["nifti_p4", "p1", "p2", "p3", "p5"]
    assert cases["p1"].path == tmp_path / "cases" / "p1"
    assert cases["p3"].error is not None
    assert "localizer" in cases["p3"].error
    assert cases["p5"].path == tmp_path / "cases" / "p5.mha"


def test_globs_and_unique_names(tmp_path, series_writer):
    for folder in ("a", "b"):
        write_volume(IMAGE, tmp_path / folder / "ct.nii.gz")
    cases = discover_cases(str(tmp_path / "*" / "ct.nii.gz"))
    assert [c.name for c in cases] == ["ct", "ct_2"]
    series = series_writer(IMAGE, "series")
    (case,) = discover_cases(str(series / "*.dcm"))  # many files of one series: one case
    assert case.name == "series"
    dicom_folders = discover_cases(str(tmp_path / "se*"))
    assert [c.name for c in dicom_folders] == ["series"]


def test_nothing_to_segment(tmp_path):
    with pytest.raises(InputDataError, match="no such file or folder"):
        discover_cases(tmp_path / "missing")
    with pytest.raises(InputDataError, match="matches no file"):
        discover_cases(str(tmp_path / "*.nii.gz"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.raises(InputDataError, match="no DICOM series and no NIfTI"):
        discover_cases(tmp_path / "empty")
    with pytest.raises(InputDataError, match="neither a DICOM file nor"):
        discover_cases(tmp_path / "empty" / "notes.txt")


def test_anonymized_patients_without_study_uids_stay_separate_cases(tmp_path, series_writer):
    """Two patients exported UID-less (Study and Series UIDs blanked) under one root: one case each, found by
    folder, not one merged "study" whose series rule would pick only one of them."""
    for patient in ("p1", "p2"):
        folder = series_writer(IMAGE, f"cases/{patient}")
        for path in folder.iterdir():
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID = ds.SeriesInstanceUID = ""
            ds.save_as(path)
    cases = discover_cases(tmp_path / "cases")
    assert [(case.name, case.path.name, case.error) for case in cases] == [
        ("p1", "p1", None),
        ("p2", "p2", None),
    ]
    for case in cases:
        volume = read_dicom_series(case.path, case.series_uid).volume
        assert volume.metadata["study_uid"] is None
        assert volume.metadata["series_key"] == case.series_uid
