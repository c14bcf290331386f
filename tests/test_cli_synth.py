"""``pe-seg synth``: argument handling, written files and the printed size summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pe_segmentation.commands import synth
from pe_segmentation.errors import EXIT_CONFIG, ConfigError


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pe-seg")
    synth.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["synth", *argv])
    assert args.handler is synth.run
    return args.handler(args)


def test_synth_writes_cases_datalist_and_prints_the_summary(tmp_path: Path, capsys):
    out = tmp_path / "synth"
    assert (
        _run(
            "--output",
            str(out),
            "--cases",
            "3",
            "--seed",
            "4",
            "--shape",
            "64",
            "64",
            "48",
            "--profile",
            "uniform",
            "--negative-fraction",
            "0",
            "--no-progress",
        )
        == 0
    )
    printed = capsys.readouterr().out
    datalist = json.loads((out / "datalist.json").read_text())
    assert datalist["numTraining"] == 3
    assert datalist["seed"] == 4
    assert datalist["spacing"] == pytest.approx([5.6, 5.6, 320 / 48], abs=1e-3)  # default field kept
    for index in range(3):
        image = nib.load(out / "images" / f"phantom_{index:03d}.nii.gz")
        assert image.shape == (64, 64, 48)
        assert image.get_data_dtype() == np.int16
        assert (out / "labels" / f"phantom_{index:03d}.nii.gz").is_file()
    assert not (out / "dicom").exists()
    emboli = [e for case in datalist["training"] for e in case["emboli"]]
    assert f"Emboli: {len(emboli)} " in printed
    for size in ("central", "segmental", "small"):
        count = sum(e["class"] == size for e in emboli)
        row = next(line for line in printed.splitlines() if line.strip().startswith(size))
        assert row.split("mm^3", 1)[1].split()[0] == str(count)
    assert f"Datalist: {out / 'datalist.json'}" in printed


def test_synth_both_formats_and_vessel_label(tmp_path: Path, capsys):
    out = tmp_path / "both"
    code = _run(
        "--output",
        str(out),
        "--profile",
        "uniform",
        "--cases",
        "1",
        "--spacing",
        "7.5",
        "7.5",
        "8",
        "--format",
        "both",
        "--vessel-label",
    )
    assert code == 0
    entry = json.loads((out / "datalist.json").read_text())
    case = entry["training"][0]
    assert entry["labels"] == {"0": "background", "1": "embolus", "2": "pulmonary artery"}
    assert entry["shape"] == [48, 48, 40]  # shape derived from the spacing and the default field
    assert len(list((out / case["dicom"]).glob("*.dcm"))) == 40
    label = np.asarray(nib.load(out / case["label"]).dataobj)
    assert set(np.unique(label)) == {0, 1, 2}
    assert "nifti + dicom" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cases", "0"], "--cases must be at least 1"),
        (["--cases", "-2"], "--cases must be at least 1"),
        (["--seed", "-1"], "--seed"),
        (["--shape", "16", "16", "16"], "shape"),
        (["--shape", "64", "64", "48", "--spacing", "1", "1", "1"], "too small to hold the chest"),
        (["--spacing", "0", "1", "1"], "positive"),
    ],
)
def test_synth_bad_arguments_raise_one_line_config_errors(tmp_path: Path, argv, message):
    out = tmp_path / "bad"
    with pytest.raises(ConfigError, match=message) as caught:
        _run("--output", str(out), "--no-progress", *argv)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG
    assert not out.exists()


def test_synth_requires_an_output_folder(capsys):
    with pytest.raises(SystemExit) as caught:
        _run("--cases", "1")
    assert caught.value.code == 2
    assert "--output" in capsys.readouterr().err


def test_synth_clinical_profile_writes_scanner_mimics_and_normal_scans(tmp_path: Path, capsys):
    out = tmp_path / "clinical"
    argv = ["--output", str(out), "--cases", "4", "--seed", "3", "--shape", "64", "64", "48"]
    assert _run(*argv, "--profile", "clinical", "--negative-fraction", "0.5", "--no-progress") == 0
    printed = capsys.readouterr().out
    datalist = json.loads((out / "datalist.json").read_text())
    assert (datalist["profile"], datalist["negative_fraction"]) == ("clinical", 0.5)
    assert datalist["settings"]["profile"] == "clinical"
    entries = datalist["training"]
    assert {e["profile"] for e in entries} == {"clinical"}
    for entry in entries:
        assert entry["negative"] == (entry["emboli"] == [])
        scanner = entry["scanner"]
        for key in (
            "spacing",
            "thickness_mm",
            "noise_hu",
            "kernel",
            "trunk_hu",
            "phase",
            "streaks",
            "motion",
        ):
            assert key in scanner
        assert scanner["shape"] == entry["shape"] == [64, 64, 48]
        assert scanner["thickness_mm"] >= scanner["spacing"][2] - 1e-6
        assert 150 <= scanner["trunk_hu"] <= 600
        for mimic in entry["mimics"]:
            assert set(mimic) == {"kind", "location", "voxels", "hu", "size_mm"}
        image = nib.load(out / entry["image"])
        assert image.shape == (64, 64, 48)
        assert np.allclose(image.header.get_zooms(), scanner["spacing"], atol=1e-3)
    assert datalist["summary"]["negative_cases"] == sum(e["negative"] for e in entries)
    assert f"Normal scans (no embolus): {datalist['summary']['negative_cases']} of 4" in printed
    assert "Cases with PE mimics (label 0):" in printed


def test_synth_defaults_to_the_clinical_profile_and_a_quarter_normal_scans():
    parser = argparse.ArgumentParser(prog="pe-seg")
    synth.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["synth", "--output", "x"])
    assert (args.profile, args.negative_fraction, args.noise) == ("clinical", 0.25, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shape", "64", "64", "48", "--noise", "10"], "clinical profile draws noise"),
        (["--shape", "64", "64", "48", "--negative-fraction", "1.5"], "negative fraction"),
        (["--profile", "clinical", "--spacing", "20", "20", "20"], "clinical profile's field of view"),
    ],
)
def test_synth_clinical_bad_arguments(tmp_path: Path, argv, message):
    with pytest.raises(ConfigError, match=message):
        _run("--output", str(tmp_path / "bad"), "--no-progress", *argv)
    assert not (tmp_path / "bad").exists()
