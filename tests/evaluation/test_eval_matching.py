"""Pairing predictions, labels and probability maps by case name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pe_segmentation.errors import InputDataError
from pe_segmentation.evaluation.matching import collect_cases, match_cases


def touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_folders_pair_by_case_name_across_tags(tmp_path):
    labels = touch(tmp_path / "labels", "pe01_label.nii.gz", "pe02_seg.nii.gz", "pe03.nrrd", "notes.txt")
    preds = touch(tmp_path / "preds", "pe01.nii.gz", "pe02_pred.nii.gz", "pe09.nii.gz", "pe01_prob.nii.gz")
    matching = match_cases(preds, labels)  # pe01_prob is a probability map, not a prediction of "pe01_prob"
    assert [p.case for p in matching.pairs] == ["pe01", "pe02"]
    first = matching.pairs[0]
    assert (first.pred.name, first.label.name, first.prob) == ("pe01.nii.gz", "pe01_label.nii.gz", None)
    assert matching.predictions_without_label == ["pe09"]
    assert matching.labels_without_prediction == ["pe03"]
    problems = matching.problems()
    assert any("pe09" in line for line in problems)
    assert any("pe03" in line for line in problems)


def test_probability_maps_are_required_for_every_pair(tmp_path):
    labels = touch(tmp_path / "labels", "a.nii.gz", "b.nii.gz")
    preds = touch(tmp_path / "preds", "a.nii.gz", "b.nii.gz", "a_prob.nii.gz")
    with pytest.raises(InputDataError, match=r"no probability map for case\(s\) b"):
        match_cases(preds, labels, prob=preds)
    probs = touch(tmp_path / "probs", "a.nii.gz", "b.nii.gz", "z.nii.gz")  # untagged maps in their own folder
    matching = match_cases(preds, labels, prob=probs)
    assert [p.prob.name for p in matching.pairs] == ["a.nii.gz", "b.nii.gz"]
    assert matching.unused_probabilities == ["z"]


def test_no_pair_and_ambiguous_names_are_errors(tmp_path):
    labels = touch(tmp_path / "labels", "a.nii.gz")
    preds = touch(tmp_path / "preds", "b.nii.gz")
    with pytest.raises(InputDataError, match="no case has both"):
        match_cases(preds, labels)
    touch(preds, "b_seg.nii.gz")
    with pytest.raises(InputDataError, match="both belong to case 'b'"):
        collect_cases(preds, "pred")
    with pytest.raises(InputDataError, match="no volume files"):
        collect_cases(touch(tmp_path / "empty"), "label")
    with pytest.raises(InputDataError, match="no such file"):
        collect_cases(tmp_path / "missing", "label")


def test_datalist_and_single_files(tmp_path):
    touch(tmp_path / "labels", "x_label.nii.gz", "y_label.nii.gz")
    touch(tmp_path / "preds", "x.nii.gz", "y.nii.gz")
    datalist = {
        "testing": [
            {"case": "x", "pred": "preds/x.nii.gz", "label": "labels/x_label.nii.gz"},
            {"pred": "preds/y.nii.gz", "label": "labels/y_label.nii.gz"},
        ]
    }
    path = tmp_path / "list.json"
    path.write_text(json.dumps(datalist))
    matching = match_cases(path, path, section="testing")
    assert [(p.case, p.pred.name, p.label.name) for p in matching.pairs] == [
        ("x", "x.nii.gz", "x_label.nii.gz"),
        ("y", "y.nii.gz", "y_label.nii.gz"),
    ]
    mixed = match_cases(tmp_path / "preds", path, section="testing")  # a folder against a datalist
    assert len(mixed.pairs) == 2
    with pytest.raises(InputDataError, match="'prob'"):
        match_cases(path, path, prob=path, section="testing")
    single = match_cases(tmp_path / "preds" / "x.nii.gz", tmp_path / "labels" / "y_label.nii.gz")
    assert [p.case for p in single.pairs] == ["y"]  # two single files pair whatever their names


def test_infer_output_folder_pairs_by_case_subfolder(tmp_path):
    """``pe-seg infer`` writes OUTPUT/<case>/mask.nii.gz and probability.nii.gz; both roles read it."""
    for case in ("pe01", "pe02"):
        (tmp_path / "out" / case).mkdir(parents=True)
        (tmp_path / "out" / case / "mask.nii.gz").write_bytes(b"")
        (tmp_path / "out" / case / "probability.nii.gz").write_bytes(b"")
    (tmp_path / "out" / "pe03").mkdir()  # a failed case: no mask, not a case
    assert collect_cases(tmp_path / "out", "pred") == {
        "pe01": tmp_path / "out/pe01/mask.nii.gz",
        "pe02": tmp_path / "out/pe02/mask.nii.gz",
    }
    assert collect_cases(tmp_path / "out", "prob")["pe02"] == tmp_path / "out/pe02/probability.nii.gz"
