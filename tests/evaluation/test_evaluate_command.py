"""``pe-seg evaluate`` end to end: files in, CSV/JSON/PNG/Markdown out; clear errors; training-run curves."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from pe_segmentation.commands import evaluate
from pe_segmentation.data.phantom import PhantomSettings, generate_phantom
from pe_segmentation.errors import ConfigError, InputDataError
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import write_volume

AFFINE = np.diag([1.0, 1.0, 2.5, 1.0])


def run_evaluate(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pe-seg")
    evaluate.add_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", *argv])
    return args.handler(args)


def save(array: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(Volume(array, affine), path)
    return path


def no_nan(text: str) -> dict:
    def refuse(token):
        raise AssertionError(f"non-JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def study(tmp_path) -> Path:
    """Four 12x12x10 cases at 1 x 1 x 2.5 mm, predictions and probability maps in one folder.

    c1: two emboli, one found, plus one false-positive blob; c2: one embolus predicted exactly;
    c3: no embolus, empty prediction; c4: no embolus, one false-positive blob.
    """
    shape = (12, 12, 10)
    labels, preds = {}, {}
    for case in ("c1", "c2", "c3", "c4"):
        labels[case], preds[case] = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    labels["c1"][1:4, 1:4, 1:3] = 1
    labels["c1"][7:10, 7:10, 6:8] = 1
    preds["c1"][1:4, 1:4, 1:3] = 1
    preds["c1"][9:11, 1:3, 7:9] = 1
    labels["c2"][4:8, 4:8, 3:6] = 1
    preds["c2"][4:8, 4:8, 3:6] = 1
    preds["c4"][2:4, 2:4, 2:4] = 1
    root = tmp_path / "study"
    for case in labels:
        save(labels[case], root / "labels" / f"{case}_label.nii.gz")
        save(preds[case], root / "out" / f"{case}.nii.gz")
        save(preds[case].astype(np.float32) * 0.8, root / "out" / f"{case}_prob.nii.gz")
    return root


def study_args(study: Path, output: Path) -> list[str]:
    """Arguments evaluating the ``study`` fixture's masks (no probability maps) into ``output``."""
    return [
        "--pred",
        str(study / "out"),
        "--label",
        str(study / "labels"),
        "-o",
        str(output),
        "--no-progress",
    ]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_writes_every_output(study, tmp_path):
    output = tmp_path / "eval"
    code = run_evaluate(
        "--pred",
        str(study / "out"),
        "--label",
        str(study / "labels"),
        "--prob",
        str(study / "out"),
        "--output",
        str(output),
        "--no-progress",
        "--bootstrap",
        "200",
    )
    assert code == 0
    expected = [
        "boxplots.png",
        "emboli.csv",
        "froc.csv",
        "froc.png",
        "per_case.csv",
        "report.md",
        "roc.png",
        "summary.json",
    ]
    assert sorted(p.name for p in output.iterdir()) == expected
    check_tables(output)
    check_summary(no_nan((output / "summary.json").read_text()))
    report = (output / "report.md").read_text()
    for link in re.findall(r"\]\(([^)]+)\)", report):
        assert (output / link).is_file(), link
    assert "| Dice | 2 |" in report


def check_tables(output: Path) -> None:
    """``per_case.csv`` and ``emboli.csv`` of the ``study`` fixture's evaluation."""
    rows = {row["case"]: row for row in read_csv(output / "per_case.csv")}
    assert list(rows) == ["c1", "c2", "c3", "c4"]
    # c1: label 2 x 18 voxels, prediction 18 (exact on embolus 1) + 8 (false positive): Dice = 36 / (36 + 26)
    assert float(rows["c1"]["dice"]) == pytest.approx(36 / 62, rel=1e-5)
    assert (rows["c1"]["emboli"], rows["c1"]["emboli_detected"], rows["c1"]["false_positives"]) == (
        "2",
        "1",
        "1",
    )
    assert float(rows["c1"]["label_volume_ml"]) == pytest.approx(36 * 2.5 / 1000)
    assert rows["c2"]["dice"] == "1"
    assert rows["c2"]["hd95_mm"] == "0"
    assert rows["c3"]["sensitivity"] == ""
    assert rows["c3"]["dice"] == "1"
    assert rows["c4"]["hd95_mm"] == ""
    assert rows["c4"]["false_positives"] == "1"
    emboli = read_csv(output / "emboli.csv")
    assert [(e["case"], e["detected"]) for e in emboli] == [("c1", "1"), ("c1", "0"), ("c2", "1")]


def check_summary(summary: dict) -> None:
    """``summary.json`` of the ``study`` fixture's evaluation with probability maps."""
    assert summary["cases"] == {
        "evaluated": 4,
        "with_emboli": 2,
        "without_emboli": 2,
        "predictions_without_label": [],
        "labels_without_prediction": [],
    }
    dice = summary["voxel"]["dice"]
    assert dice["n"] == 2
    assert dice["mean"] == pytest.approx((36 / 62 + 1) / 2, rel=1e-5)
    assert set(dice) >= {"mean", "median", "std", "ci95_low", "ci95_high"}
    assert summary["cases_without_emboli"]["with_predicted_voxels"] == 1
    # false alarms on normal scans: c4's one blob over c3 and c4
    assert summary["cases_without_emboli"]["false_positive_clots"] == 1
    assert summary["cases_without_emboli"]["fp_clots_per_scan"] == pytest.approx(0.5)
    # no report.json: binary mask scores 1, 1 (c1, c2) against 0, 1 (c3, c4): AUC (1 + 1/2) * 2 / 4
    study = summary["study_level"]
    assert (study["score_source"], study["scores_from_mask"]) == ("mask", 4)
    assert (study["tp"], study["fp"], study["tn"], study["fn"]) == (2, 1, 1, 0)
    assert (study["sensitivity"], study["specificity"], study["auc"]) == pytest.approx((1, 0.5, 0.75))
    detection = summary["detection"]
    assert (detection["emboli"], detection["detected"], detection["false_positives"]) == (3, 2, 2)
    assert detection["sensitivity"] == pytest.approx(2 / 3)
    assert detection["fp_per_scan"] == pytest.approx(0.5)
    froc = summary["froc"]
    # every candidate scores 0.8: one operating point at 2 FP / 4 scans with 2 of 3 emboli
    assert froc["sensitivity"] == pytest.approx([2 / 3] * 5)
    assert froc["max_fp_per_scan"] == pytest.approx(0.5)


def test_without_probability_maps_there_is_no_froc(study, tmp_path):
    output = tmp_path / "eval"
    run_evaluate(
        "--pred", str(study / "out"), "--label", str(study / "labels"), "-o", str(output), "--no-progress"
    )
    summary = no_nan((output / "summary.json").read_text())
    assert "froc" not in summary
    assert not (output / "froc.png").exists()


def test_mismatched_geometry_is_a_clear_error(study, tmp_path):
    save(np.zeros((12, 12, 10), np.uint8), study / "out" / "c2.nii.gz", affine=np.diag([1.0, 1.0, 2.0, 1.0]))
    with pytest.raises(InputDataError) as error:
        run_evaluate(
            "--pred", str(study / "out"), "--label", str(study / "labels"), "-o", str(tmp_path / "e")
        )
    message = str(error.value)
    assert "\n" not in message
    assert error.value.exit_code == 3
    assert "c2.nii.gz" in message
    assert "c2_label.nii.gz" in message
    assert "spacing (1, 1, 2) vs (1, 1, 2.5)" in message
    save(np.zeros((12, 12, 9), np.uint8), study / "out" / "c2.nii.gz")
    with pytest.raises(InputDataError, match="differ in shape: 12x12x9 vs 12x12x10"):
        run_evaluate(
            "--pred", str(study / "out"), "--label", str(study / "labels"), "-o", str(tmp_path / "e")
        )


def test_bad_values_are_clear_errors(study, tmp_path):
    args = study_args(study, tmp_path / "e")
    save(np.full((12, 12, 10), 0.4, np.float32), study / "out" / "c3.nii.gz")
    with pytest.raises(InputDataError, match=r"non-integer values .*--prob"):
        run_evaluate(*args)
    save(np.zeros((12, 12, 10), np.uint8), study / "out" / "c3.nii.gz")
    save(np.full((12, 12, 10), 3.0, np.float32), study / "out" / "c3_prob.nii.gz")
    with pytest.raises(InputDataError, match=r"must lie in \[0, 1\]"):
        run_evaluate(*args, "--prob", str(study / "out"))
    with pytest.raises(ConfigError, match="hit-threshold"):
        run_evaluate(*args, "--hit", "iou", "--hit-threshold", "0")
    with pytest.raises(ConfigError, match="--label"):
        run_evaluate("--pred", str(study / "out"), "-o", str(tmp_path / "e"))


def test_unpaired_files_warn_or_fail_with_strict(study, tmp_path, caplog):
    save(np.zeros((12, 12, 10), np.uint8), study / "out" / "extra.nii.gz")
    args = study_args(study, tmp_path / "e")
    with caplog.at_level(logging.WARNING, logger="pe_segmentation"):
        assert run_evaluate(*args) == 0
    assert "1 prediction(s) without a label: extra" in caplog.text
    summary = no_nan((tmp_path / "e" / "summary.json").read_text())
    assert summary["cases"]["predictions_without_label"] == ["extra"]
    with pytest.raises(InputDataError, match="without a label: extra"):
        run_evaluate(*args, "--strict")


def test_phantom_with_artery_labels(tmp_path, caplog):
    phantom = generate_phantom(PhantomSettings.for_field(shape=(64, 64, 48), vessel_label=True), rng=3)
    embolus = (phantom.label.array == 1).astype(np.uint8)
    write_volume(phantom.label, tmp_path / "labels" / "p.nii.gz")
    write_volume(phantom.label.with_array(embolus), tmp_path / "preds" / "p.nii.gz")
    base = ["--pred", str(tmp_path / "preds"), "--label", str(tmp_path / "labels"), "--no-progress"]
    run_evaluate(*base, "-o", str(tmp_path / "e1"), "--embolus-label", "1")
    exact = no_nan((tmp_path / "e1" / "summary.json").read_text())
    assert exact["voxel"]["dice"]["mean"] == 1.0
    assert exact["detection"]["sensitivity"] == 1.0
    assert exact["detection"]["false_positives"] == 0
    with caplog.at_level(logging.WARNING, logger="pe_segmentation"):
        run_evaluate(*base, "-o", str(tmp_path / "e2"))  # arteries (2) count as embolus by default
    assert "--embolus-label" in caplog.text
    assert no_nan((tmp_path / "e2" / "summary.json").read_text())["voxel"]["dice"]["mean"] < 1.0


def write_run(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.csv").write_text(text)
    return folder


def test_training_run_curves_are_redrawn(tmp_path):
    header = "epoch,iteration,train_loss,lr,val_dice,val_iou,val_sensitivity,val_specificity,val_precision,seconds\n"
    run = write_run(
        tmp_path / "run", header + "1,10,0.9,1e-4,,,,,,2.0\n2,20,0.6,1e-3,0.41,0.3,0.5,0.99,0.4,2.1\n"
    )
    assert run_evaluate("--run", str(run)) == 0
    assert (run / "curves.png").stat().st_size > 1000
    assert (
        run_evaluate("--pred", str(run), "-o", str(tmp_path / "redrawn")) == 0
    )  # a run folder is recognised
    assert (tmp_path / "redrawn" / "curves.png").is_file()
    partial = write_run(tmp_path / "partial", "epoch,train_loss\n1,0.8\n2,\n")  # missing and empty columns
    assert run_evaluate("--run", str(partial)) == 0
    header_only = write_run(tmp_path / "new", header)  # a run that has not finished an epoch yet
    assert run_evaluate("--run", str(header_only)) == 0
    with pytest.raises(InputDataError, match=r"no metrics\.csv"):
        run_evaluate("--run", str(tmp_path))
