"""Study level (PE in the scan or not): hand-worked AUC, sensitivity and specificity, the report.json rule and
its mask fallback, "not defined" without negatives, the ROC figure, and ``evaluate`` end to end."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from matplotlib import pyplot

from pe_segmentation import evaluate
from pe_segmentation.commands import evaluate as evaluate_command
from pe_segmentation.errors import InputDataError
from pe_segmentation.evaluation import (
    StudyCall,
    find_report,
    plot_roc,
    read_study_call,
    roc_auc,
    roc_curve,
    study_summary,
)
from pe_segmentation.evaluation.study_level import MASK_SCORE_RULE
from pe_segmentation.evaluation.summary import json_ready
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import write_volume

# five scans: three with emboli scored 0.9, 0.8, 0.4 and two without scored 0.6, 0.2. Of the 3 x 2 pairs the
# scan with emboli scores higher in 5 (0.4 < 0.6 is the one miss): AUC 5/6.
SCORES = [0.9, 0.8, 0.4, 0.6, 0.2]
TRUTH = [True, True, True, False, False]
# the calls: 0.4 is missed, 0.6 is a false alarm: TP 2, FN 1, FP 1, TN 1
CALLS = [True, True, False, True, False]


def calls(scores=SCORES, present=CALLS, source="report") -> list[StudyCall]:
    return [StudyCall(s, p, source, "highest clot probability") for s, p in zip(scores, present, strict=True)]


def pairwise_auc(scores, truth) -> float:
    """AUC by counting every (with, without) pair, ties 1/2: what the rank formula must equal."""
    pos = [s for s, t in zip(scores, truth, strict=True) if t]
    neg = [s for s, t in zip(scores, truth, strict=True) if not t]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_by_hand_and_ties_count_half():
    assert roc_auc(SCORES, TRUTH) == pytest.approx(5 / 6)
    assert roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    # binary scores: with emboli 1, 1, 0; without 1, 0: pairs (1,1) 1/2, (1,0) 1, twice, (0,1) 0, (0,0) 1/2
    assert roc_auc([1, 1, 0, 1, 0], TRUTH) == pytest.approx(3.5 / 6)
    rng = np.random.default_rng(3)
    scores, truth = rng.integers(0, 4, 30) / 4, rng.random(30) < 0.4
    assert roc_auc(scores, truth) == pytest.approx(pairwise_auc(scores.tolist(), truth.tolist()))
    assert np.isnan(roc_auc([0.3, 0.7], [True, True]))


def test_roc_curve_points_by_hand():
    curve = roc_curve(SCORES, TRUTH)
    assert curve.thresholds[1:].tolist() == [0.9, 0.8, 0.6, 0.4, 0.2]
    assert curve.tpr.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert curve.fpr.tolist() == pytest.approx([0, 0, 0, 0.5, 0.5, 1])
    # trapezoid area of the curve equals the rank AUC
    area = np.sum(np.diff(curve.fpr) * (curve.tpr[1:] + curve.tpr[:-1]) / 2)
    assert area == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="with and without"):
        roc_curve([0.1, 0.2], [False, False])


def test_study_summary_by_hand():
    summary = study_summary(calls(), TRUTH, n_resamples=200, seed=1)
    assert (summary["tp"], summary["fp"], summary["tn"], summary["fn"]) == (2, 1, 1, 1)
    assert summary["sensitivity"] == pytest.approx(2 / 3)
    assert summary["specificity"] == pytest.approx(1 / 2)
    assert summary["auc"] == pytest.approx(5 / 6)
    assert (summary["scans"], summary["with_emboli"], summary["without_emboli"]) == (5, 3, 2)
    assert summary["not_defined"] == {}
    assert (summary["score_source"], summary["scores_from_report"]) == ("report.json", 5)
    assert summary["score_rules"] == {"highest clot probability": 5}
    for name in ("sensitivity", "specificity", "auc"):
        low, high = summary[f"{name}_ci95"]
        assert 0 <= low <= summary[name] <= high <= 1
    assert study_summary(calls(), TRUTH, n_resamples=200, seed=1) == summary  # the seed fixes the intervals


def test_without_negatives_specificity_and_auc_are_not_defined():
    summary = study_summary(calls(SCORES[:3], CALLS[:3]), TRUTH[:3], n_resamples=50)
    assert summary["sensitivity"] == pytest.approx(2 / 3)
    assert summary["specificity"] is None
    assert summary["specificity_ci95"] is None
    assert summary["auc"] is None
    assert summary["auc_ci95"] is None
    assert summary["not_defined"] == {
        "specificity": "not defined: no scan without emboli",
        "auc": "not defined: needs scans with and without emboli",
    }
    json.dumps(json_ready(summary), allow_nan=False)  # no NaN anywhere
    without_positives = study_summary(calls(SCORES[3:], CALLS[3:]), TRUTH[3:], n_resamples=50)
    assert without_positives["specificity"] == pytest.approx(0.5)
    assert set(without_positives["not_defined"]) == {"sensitivity", "auc"}


def write_report(path: Path, study: dict | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"report_version": 1, "case": path.parent.name, "totals": {"clot_count": 1}}
    if study is not None:
        report["study"] = study
    path.write_text(json.dumps(report))
    return path


def test_report_is_found_beside_the_mask(tmp_path):
    infer_mask = tmp_path / "out" / "pe01" / "mask.nii.gz"
    report = write_report(infer_mask.parent / "report.json", None)
    assert find_report(infer_mask) == report
    flat = tmp_path / "flat"
    write_report(flat / "report.json", None)  # a flat folder's report.json belongs to no one mask
    assert find_report(flat / "pe01.nii.gz") is None
    assert find_report(flat / "pe02_seg.nii.gz") is None
    renamed = write_report(flat / "pe02_seg_report.json", None)
    assert find_report(flat / "pe02_seg.nii.gz") == renamed


def test_score_from_the_report_else_from_the_mask(tmp_path):
    mask = tmp_path / "pe01" / "mask.nii.gz"
    assert read_study_call(mask, True) == StudyCall(1.0, True, "mask", MASK_SCORE_RULE)  # no report
    assert read_study_call(mask, False).score == 0.0
    write_report(mask.parent / "report.json", None)  # an older report: no study section
    assert read_study_call(mask, True).source == "mask"
    report = write_report(
        mask.parent / "report.json", {"pe_present": False, "score": 0.31, "score_rule": "highest probability"}
    )
    call = read_study_call(mask, True)  # the report wins over the mask
    assert call == StudyCall(0.31, False, "report", "highest probability", report)


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ({"pe_present": True, "score": 1.2}, "study.score must be a number in"),
        ({"pe_present": True, "score": True}, "study.score must be a number in"),
        ({"pe_present": True}, "study.score must be a number in"),
        ({"pe_present": "yes", "score": 0.9}, "study.pe_present must be true or false"),
    ],
)
def test_a_bad_study_section_is_a_clear_error(tmp_path, study, message):
    report = write_report(tmp_path / "pe01" / "report.json", study)
    with pytest.raises(InputDataError, match=message) as error:
        read_study_call(tmp_path / "pe01" / "mask.nii.gz", True)
    assert str(report) in str(error.value)
    report.write_text("{not json")
    with pytest.raises(InputDataError, match="cannot read"):
        read_study_call(tmp_path / "pe01" / "mask.nii.gz", True)


def test_roc_png_is_a_valid_image(tmp_path):
    curve = roc_curve(SCORES, TRUTH)
    path = plot_roc(curve.fpr, curve.tpr, tmp_path / "roc.png", auc=5 / 6, operating_point=(0.5, 2 / 3))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = pyplot.imread(path)
    assert image.ndim == 3
    assert min(image.shape[:2]) > 100


AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(Volume(array, AFFINE), path)


def infer_output(root: Path, truth=TRUTH, scores=SCORES, present=CALLS, with_report=None) -> None:
    """``root/labels/<case>.nii.gz`` and a ``pe-seg infer`` output ``root/out/<case>/mask.nii.gz`` with its
    ``report.json`` (only for the cases in ``with_report`` when given)."""
    for index, (is_pe, score, call) in enumerate(zip(truth, scores, present, strict=True)):
        case = f"c{index + 1}"
        label, mask = np.zeros((8, 8, 6), np.uint8), np.zeros((8, 8, 6), np.uint8)
        if is_pe:
            label[2:5, 2:5, 2:4] = 1
        if call:
            mask[2:4, 2:4, 2:4] = 1
        save(label, root / "labels" / f"{case}.nii.gz")
        save(mask, root / "out" / case / "mask.nii.gz")
        if with_report is None or case in with_report:
            study = {"pe_present": call, "score": score, "score_rule": "highest clot probability"}
            write_report(root / "out" / case / "report.json", study)


def test_evaluate_end_to_end_with_reports(tmp_path, caplog):
    infer_output(tmp_path)
    with caplog.at_level(logging.INFO, logger="pe_segmentation"):
        result = evaluate(tmp_path / "out", tmp_path / "labels", tmp_path / "eval")
    study = json.loads((tmp_path / "eval" / "summary.json").read_text())["study_level"]
    assert (study["tp"], study["fp"], study["tn"], study["fn"]) == (2, 1, 1, 1)
    assert (study["sensitivity"], study["specificity"], study["auc"]) == pytest.approx((2 / 3, 0.5, 5 / 6))
    assert study["score_source"] == "report.json"
    assert result.files["roc_png"] == tmp_path / "eval" / "roc.png"
    assert pyplot.imread(result.files["roc_png"]).ndim == 3
    with open(tmp_path / "eval" / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["study_score"] for r in rows] == ["0.9", "0.8", "0.4", "0.6", "0.2"]
    assert [r["study_score_source"] for r in rows] == ["report"] * 5
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Study level (PE in the scan or not)" in report
    assert "| 5 | 2 | 1 | 1 | 1 | 66.7% (" in report
    assert "![study-level ROC](roc.png)" in report
    assert "False alarms: 1 false-positive clot(s)" in report
    assert "study level (5 scans, scores from report.json): TP 2, FP 1, TN 1, FN 1" in caplog.text
    assert "auc 0.833" in caplog.text


def test_evaluate_command_mixes_reports_with_the_mask_fallback(tmp_path):
    infer_output(tmp_path, with_report={"c1", "c2", "c3"})  # c4 (called yes) and c5 (no): the mask's 1 and 0
    output = tmp_path / "eval"
    parser = argparse.ArgumentParser(prog="pe-seg")
    evaluate_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["evaluate", "--pred", str(tmp_path / "out"), "--label", str(tmp_path / "labels"), "-o", str(output)]
    )
    assert args.handler(args) == 0
    study = json.loads((output / "summary.json").read_text())["study_level"]
    assert study["score_source"] == "report.json and mask"
    assert (study["scores_from_report"], study["scores_from_mask"]) == (3, 2)
    # with emboli 0.9, 0.8, 0.4; without 1 (mask), 0 (mask): 0.9, 0.8 and 0.4 each beat only the 0: AUC 3/6
    assert study["auc"] == pytest.approx(3 / 6)
    assert study["score_rules"] == {"highest clot probability": 3, MASK_SCORE_RULE: 2}
    assert "3 from report.json, 2 from the mask" in (output / "report.md").read_text()


def test_evaluate_without_negatives_says_not_defined(tmp_path, caplog):
    infer_output(tmp_path, TRUTH[:3], SCORES[:3], CALLS[:3])
    with caplog.at_level(logging.INFO, logger="pe_segmentation"):
        result = evaluate(tmp_path / "out", tmp_path / "labels", tmp_path / "eval")
    text = (tmp_path / "eval" / "summary.json").read_text()
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}"))
    study = json.loads(text)["study_level"]
    assert study["specificity"] is None
    assert study["auc"] is None
    assert study["not_defined"]["specificity"] == "not defined: no scan without emboli"
    assert "roc_png" not in result.files
    assert not (tmp_path / "eval" / "roc.png").exists()
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "- specificity: not defined: no scan without emboli." in report
    assert "- auc: not defined: needs scans with and without emboli." in report
    assert "specificity not defined" in caplog.text
