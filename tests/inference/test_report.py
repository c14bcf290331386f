"""The JSON report: clot volumes against hand-counted voxels, positions, totals, and no patient identity."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_affine

from pe_segmentation.inference.outputs import OutputOptions, write_case
from pe_segmentation.inference.predictor import Predictor
from pe_segmentation.inference.report import case_report, clot_report, file_sha256, input_identity
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.volume import Volume

from .helpers import IntensityNet, own_spacing, tiny_config

AFFINE = make_affine((0.7, 0.8, 2.0), origin_lps=(10.0, -20.0, 30.0), euler_deg=(0.0, 15.0, 0.0))
VOXEL_ML = 0.7 * 0.8 * 2.0 / 1000


def _two_clots() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((30, 25, 20), np.uint8)
    mask[2:5, 3:5, 4:6] = 1  # 3 x 2 x 2 = 12 voxels
    mask[10:20, 10:15, 8:12] = 1  # 10 x 5 x 4 = 200 voxels
    mask[20, 15, 12] = 1  # touches the big block by a corner: 201 voxels
    probability = np.where(mask > 0, 0.6, 0.1).astype(np.float32)
    probability[12, 12, 9] = 0.97
    return mask, probability


def test_clot_volumes_and_positions_match_hand_counts():
    mask, probability = _two_clots()
    clots = clot_report(mask, probability, AFFINE)
    assert [c["id"] for c in clots] == [1, 2]
    big, small = clots
    assert big["voxels"] == 201
    assert small["voxels"] == 12
    assert big["volume_ml"] == pytest.approx(201 * VOXEL_ML, abs=1e-6)
    assert small["volume_ml"] == pytest.approx(12 * VOXEL_ML, abs=1e-6)
    assert small["bbox_voxels"] == [[2, 4], [3, 4], [4, 5]]
    assert big["bbox_voxels"] == [[10, 20], [10, 15], [8, 12]]
    centre = np.array([3.0, 3.5, 4.5, 1.0])  # mean voxel index of the small block
    assert small["centroid_ras_mm"] == pytest.approx((AFFINE @ centre)[:3], abs=0.01)
    lps = small["centroid_lps_mm"]
    assert lps == pytest.approx(
        [-small["centroid_ras_mm"][0], -small["centroid_ras_mm"][1], small["centroid_ras_mm"][2]]
    )
    assert big["max_probability"] == pytest.approx(0.97)
    assert big["mean_probability"] == pytest.approx((200 * 0.6 + 0.97) / 201, abs=1e-4)
    assert small["max_probability"] == pytest.approx(0.6)

    # the same clots from a box of the grid, given its offset
    box = (slice(1, 25), slice(2, 20), slice(3, 15))
    offset_clots = clot_report(mask[box], probability[box], AFFINE, offset=(1, 2, 3))
    assert offset_clots == clots
    assert clot_report(np.zeros((4, 4, 4), np.uint8), None, AFFINE) == []
    assert "max_probability" not in clot_report(mask, None, AFFINE)[0]


def test_case_report_totals_and_sections():
    mask, probability = _two_clots()
    image = Volume(
        np.zeros(mask.shape, np.int16), AFFINE, {"format": ".nii.gz", "source": "/data/DOE_JOHN/ct.nii.gz"}
    )
    roi = (slice(2, 21), slice(3, 16), slice(4, 13))
    report = case_report(
        "case_a",
        image,
        mask,
        roi,
        probability[roi],
        {"threshold": 0.5},
        {"network": 1.23456},
        {"sha256": "ab"},
        {"mask": "mask.nii.gz"},
    )
    assert report["totals"] == {
        "clot_count": 2,
        "clot_burden_ml": pytest.approx(213 * VOXEL_ML, abs=1e-6),
        "voxels": 213,
    }
    assert report["seconds"] == {"network": 1.235}
    assert report["input"]["shape"] == [30, 25, 20]
    assert report["input"]["spacing_mm"] == pytest.approx([0.7, 0.8, 2.0])
    assert set(report["software"]) >= {"pe_segmentation", "torch", "monai", "highdicom"}
    assert "DOE" not in json.dumps(report)  # the input path may hold the patient's name
    empty = case_report("e", image, np.zeros_like(mask), None, None, {}, {}, {}, {})
    assert empty["totals"] == {"clot_count": 0, "clot_burden_ml": 0.0, "voxels": 0}


def test_dicom_input_is_identified_by_uids_not_by_the_patient(series_writer):
    image = Volume(np.full((12, 10, 6), 40, np.int16), AFFINE)
    folder = series_writer(image, "DOE_JOHN", patient_name="DOE^JOHN", patient_id="ID-4711", series_number=7)
    volume = read_dicom_series(folder).volume
    identity = input_identity(volume)
    assert identity["series_instance_uid"] == volume.metadata["series_uid"]
    assert identity["study_instance_uid"] == volume.metadata["study_uid"]
    assert identity["series_number"] == 7
    assert identity["instances"] == 6
    assert identity["modality"] == "CT"
    text = json.dumps(identity)
    assert "DOE" not in text
    assert "ID-4711" not in text


def test_written_report_counts_planted_clots(tmp_path, checkpoint):
    # identity grid and an intensity "network": the mask is exactly the planted bright blocks
    array = np.full((24, 22, 20), 100, np.int16)
    array[2:4, 2:4, 2:4] = 400  # 8 voxels
    array[10:13, 10:14, 8:13] = 400  # 60 voxels
    image = Volume(array, AFFINE, {"format": ".nii.gz"})
    # not a chest: the territory would hold nothing, so it is left out here (tests/inference/test_territory.py)
    predictor = Predictor(
        IntensityNet(), tiny_config(own_spacing(image), crop=False), "cpu", "fp32", territory=False
    )
    prediction = predictor.predict(image)
    model = {"file": checkpoint.name, "sha256": file_sha256(checkpoint), "name": "unet"}
    report = write_case(
        prediction, tmp_path, "case", OutputOptions(), model, predictor.settings(), started=0.0
    )

    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == report
    assert [c["voxels"] for c in saved["clots"]] == [60, 8]
    assert saved["clots"][0]["volume_ml"] == pytest.approx(60 * VOXEL_ML, abs=1e-6)
    assert saved["totals"]["clot_burden_ml"] == pytest.approx(68 * VOXEL_ML, abs=1e-6)
    assert saved["clots"][0]["bbox_voxels"] == [[10, 12], [10, 13], [8, 12]]
    assert saved["model"]["sha256"] == file_sha256(checkpoint)
    assert len(saved["model"]["sha256"]) == 64
    assert saved["settings"]["threshold"] == 0.5
    assert set(saved["seconds"]) >= {"load", "preprocess", "network", "postprocess", "write_nifti", "total"}
    assert saved["outputs"] == {"mask": "mask.nii.gz", "preview": "preview.png", "report": "report.json"}
    assert (tmp_path / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a block of 100 HU is no chest: the checks say so, and the study-level answer is marked unreliable
    assert saved["qc"]["verdict"] == "fail"
    assert set(saved["qc"]["checks"]) == {"chest", "lungs", "contrast", "slice_spacing"}
    assert saved["qc"]["checks"]["lungs"]["verdict"] == "fail"
    assert saved["study"]["pe_present"] is True
    assert saved["study"]["reliable"] is False
    # identity grid, no territory: the score is the highest probability, found at the brighter blocks
    assert saved["study"]["score"] == pytest.approx(float(prediction.roi_probability.max()), abs=1e-6)
    assert saved["territory"]["used"] is False
