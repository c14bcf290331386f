"""``pe-seg infer`` as users run it: outputs per case, geometry, DICOM SEG, many cases with a bad one."""

from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pytest
from conftest import make_affine

from pe_segmentation.errors import EXIT_CHECKPOINT, EXIT_CONFIG, EXIT_INPUT
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.volume_files import read_volume, write_volume

from .helpers import make_ct

OBLIQUE = make_affine((0.9, 1.1, 2.0), euler_deg=(10.0, 20.0, 5.0))


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_nifti_input(tmp_path, checkpoint, run_infer, capsys):
    image = make_ct(OBLIQUE)
    path = write_volume(image, tmp_path / "patient_1.nii.gz")
    out = tmp_path / "out"
    assert (
        run_infer(
            "--input",
            path,
            "--output",
            out,
            "--checkpoint",
            checkpoint,
            "--device",
            "cpu",
            "--save-probability",
        )
        == 0
    )

    case = out / "patient_1"
    assert _files(out) == ["patient_1"]  # no staging folder left behind
    assert _files(case) == [
        "mask.nii.gz",
        "preview.png",
        "probability.nii.gz",
        "report.json",
    ]  # no SEG: not DICOM
    mask = read_volume(case / "mask.nii.gz")
    assert mask.array.dtype == np.uint8
    assert mask.shape == image.shape
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-4)
    probability = read_volume(case / "probability.nii.gz")
    assert probability.array.dtype == np.float32
    np.testing.assert_array_equal(mask.array, probability.array >= 0.5)
    report = json.loads((case / "report.json").read_text())
    assert report["case"] == "patient_1"
    assert report["totals"]["voxels"] == int(mask.array.sum())
    assert report["settings"]["device"] == "cpu"
    assert report["model"]["file"] == "model.pt"


def test_dicom_input_gets_a_seg_and_keeps_its_geometry(tmp_path, checkpoint, run_infer, series_writer):
    folder = series_writer(make_ct(OBLIQUE, shape=(32, 28, 14)), "ct")
    out = tmp_path / "out"
    assert (
        run_infer(
            "-i", folder, "-o", out, "--checkpoint", checkpoint, "--device", "cpu", "--threshold", "0.45"
        )
        == 0
    )

    source = read_dicom_series(folder).volume
    mask = read_volume(out / "ct" / "mask.nii.gz")
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)
    seg = hd.seg.segread(out / "ct" / "seg.dcm")
    referenced = [
        i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    ]
    assert referenced == source.metadata["sop_instance_uids"]
    report = json.loads((out / "ct" / "report.json").read_text())
    assert report["settings"]["threshold"] == 0.45
    assert report["input"]["series_instance_uid"] == source.metadata["series_uid"]
    assert report["outputs"]["dicom_seg"] == "seg.dcm"


def test_many_cases_with_a_bad_one(tmp_path, checkpoint, run_infer, series_writer, capsys):
    cases = tmp_path / "cases"
    write_volume(make_ct(OBLIQUE), cases / "good_a.nii.gz")
    series_writer(make_ct(OBLIQUE, shape=(30, 26, 12)), "cases/good_b")
    (cases / "broken.nii.gz").write_bytes(b"\x1f\x8b" + b"not a gzip stream" * 10)
    out = tmp_path / "out"
    (out / "broken").mkdir(parents=True)
    (out / "broken" / "old.txt").write_text("from an earlier run")

    code = run_infer(
        "--input", cases, "--output", out, "--checkpoint", checkpoint, "--device", "cpu", "--no-preview"
    )
    assert code == EXIT_INPUT
    assert _files(out) == ["broken", "good_a", "good_b"]  # no partial or staging folders
    assert _files(out / "broken") == ["old.txt"]  # a failed case leaves an earlier result alone
    assert _files(out / "good_a") == ["mask.nii.gz", "report.json"]
    assert _files(out / "good_b") == ["mask.nii.gz", "report.json", "seg.dcm"]
    err = capsys.readouterr().err
    failures = [line for line in err.splitlines() if ": failed: " in line]
    assert len(failures) == 1
    assert failures[0].startswith("[1/3] broken: failed: ")
    assert "cannot read" in failures[0]
    assert "[3/3] good_b: " in err
    assert err.rstrip().endswith("error: 1 of 3 case(s) failed")


def test_a_rerun_replaces_the_case_folder(tmp_path, checkpoint, run_infer):
    path = write_volume(make_ct(OBLIQUE), tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    assert (
        run_infer("-i", path, "-o", out, "--checkpoint", checkpoint, "--device", "cpu", "--save-probability")
        == 0
    )
    assert (out / "ct" / "probability.nii.gz").exists()
    assert (
        run_infer("-i", path, "-o", out, "--checkpoint", checkpoint, "--device", "cpu", "--no-preview") == 0
    )
    assert _files(out / "ct") == ["mask.nii.gz", "report.json"]


def test_one_bad_input_fails_with_its_own_error(tmp_path, checkpoint, run_infer, capsys):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"garbage")
    assert run_infer("-i", bad, "-o", tmp_path / "out", "--checkpoint", checkpoint) == EXIT_INPUT
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("error: ")
    assert "bad.nii.gz: cannot read" in last
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--threshold", "0"], EXIT_CONFIG, "--threshold must be in (0, 1]"),
        (["--min-volume", "-3"], EXIT_CONFIG, "--min-volume"),
        (["--min-peak", "1.5"], EXIT_CONFIG, "--min-peak must be in [0, 1], got 1.5"),
        (["--precision", "fp16", "--device", "cpu"], EXIT_CONFIG, "--precision: fp16 needs a CUDA device"),
        (["--device", "tpu"], EXIT_CONFIG, "--device"),
    ],
)
def test_bad_flags(tmp_path, checkpoint, run_infer, capsys, args, code, message):
    path = write_volume(make_ct(OBLIQUE), tmp_path / "ct.nii.gz")
    assert run_infer("-i", path, "-o", tmp_path / "out", "--checkpoint", checkpoint, *args) == code
    assert message in capsys.readouterr().err


def test_bad_checkpoint(tmp_path, run_infer, capsys):
    path = write_volume(make_ct(OBLIQUE), tmp_path / "ct.nii.gz")
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    assert (
        run_infer("-i", path, "-o", tmp_path / "out", "--checkpoint", tmp_path / "model.pt")
        == EXIT_CHECKPOINT
    )
    assert "corrupt or truncated checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out" / "ct").exists()


@pytest.mark.slow
def test_worker_processes_give_the_same_results(tmp_path, checkpoint, run_infer):
    """Two CPU workers stand in for two GPUs: the same queue, the same outputs."""
    cases = tmp_path / "cases"
    for seed in range(3):
        write_volume(make_ct(OBLIQUE, seed=seed), cases / f"ct{seed}.nii.gz")
    common = ["--checkpoint", checkpoint, "--device", "cpu", "--precision", "fp32", "--no-preview"]
    assert run_infer("-i", cases, "-o", tmp_path / "one", *common) == 0
    assert run_infer("-i", cases, "-o", tmp_path / "two", *common, "--workers", "2") == 0
    for seed in range(3):
        one = read_volume(tmp_path / "one" / f"ct{seed}" / "mask.nii.gz").array
        two = read_volume(tmp_path / "two" / f"ct{seed}" / "mask.nii.gz").array
        np.testing.assert_array_equal(one, two)


def test_under_torchrun_each_process_takes_its_share(tmp_path, checkpoint, run_infer, monkeypatch):
    cases = tmp_path / "cases"
    for seed in range(3):
        write_volume(make_ct(OBLIQUE, seed=seed), cases / f"ct{seed}.nii.gz")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_infer("-i", cases, "-o", tmp_path / "out", "--checkpoint", checkpoint, "--device", "cpu") == 0
    assert _files(tmp_path / "out") == ["ct1"]  # rank 1 of 2: every second case from the second
