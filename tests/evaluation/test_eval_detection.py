"""Per-embolus detection and FROC on constructed cases with hand-counted answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pe_segmentation.evaluation.detection import (
    CaseCandidates,
    HitCriterion,
    detect_emboli,
    froc_candidates,
    froc_curve,
    label_components,
    sensitivity_at,
    threshold_at,
)


def grid(shape=(20, 20, 20)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def test_components_are_26_connected():
    mask = grid((5, 5, 5))
    mask[1, 1, 1] = mask[2, 2, 2] = True  # touching only at a corner: one embolus
    mask[4, 4, 4] = True  # two voxels away: another
    _, count = label_components(mask)
    assert count == 2


def test_several_emboli_one_missed_one_false_positive():
    label, pred = grid(), grid()
    label[1:4, 1:4, 1:4] = True  # embolus 1
    label[10:12, 10:12, 10:12] = True  # embolus 2
    label[16:19, 2:4, 2:4] = True  # embolus 3, missed
    pred[2:5, 2:5, 2:5] = True  # overlaps embolus 1
    pred[11, 11, 11] = True  # a single voxel inside embolus 2 is enough
    pred[15:18, 15:18, 15:18] = True  # nowhere near an embolus: false positive
    result = detect_emboli(pred, label, voxel_volume_mm3=2.5)
    assert (result.n_emboli, result.n_detected, result.false_positives) == (3, 2, 1)
    assert result.predicted_components == 3
    assert result.sensitivity == pytest.approx(2 / 3)
    first, second, third = result.emboli
    # embolus 1: 27 voxels, 8 of them covered (the 2x2x2 overlap); the component has 27 voxels:
    # IoU = 8 / (27 + 27 - 8) = 8 / 46
    assert (first.voxels, first.detected) == (27, True)
    assert first.volume_mm3 == pytest.approx(27 * 2.5)
    assert first.size_class == "segmental"  # 67.5 mm^3
    assert first.coverage == pytest.approx(8 / 27)
    assert first.best_iou == pytest.approx(8 / 46)
    assert first.centroid == (2.0, 2.0, 2.0)
    assert second.coverage == pytest.approx(1 / 8)
    assert second.size_class == "small"
    assert (third.detected, third.coverage, third.best_iou) == (False, 0.0, 0.0)


def test_a_prediction_merging_two_emboli_detects_both():
    label, pred = grid(), grid()
    label[2:5, 2:5, 2:5] = True
    label[8:11, 2:5, 2:5] = True  # 3 voxels of gap along i
    pred[2:11, 2:5, 2:5] = True  # one component spanning both and the gap
    result = detect_emboli(pred, label)
    assert (result.n_emboli, result.n_detected, result.predicted_components, result.false_positives) == (
        2,
        2,
        1,
        0,
    )
    # Under an IoU rule the merged component matches neither: IoU = 27 / 81 = 1/3 each.
    strict = detect_emboli(pred, label, HitCriterion("iou", 0.5))
    assert (strict.n_detected, strict.false_positives) == (0, 1)
    assert strict.emboli[0].best_iou == pytest.approx(1 / 3)
    lenient = detect_emboli(pred, label, HitCriterion("iou", 1 / 3))
    assert (lenient.n_detected, lenient.false_positives) == (2, 0)


def test_a_prediction_splitting_one_embolus_detects_it_once_without_false_positives():
    label, pred = grid(), grid()
    label[2:12, 4:6, 4:6] = True  # a bar of 40 voxels
    pred[2:5, 4:6, 4:6] = True  # 12 voxels at one end
    pred[8:12, 4:6, 4:6] = True  # 16 voxels at the other: a separate component
    result = detect_emboli(pred, label)
    assert (result.n_emboli, result.n_detected, result.predicted_components, result.false_positives) == (
        1,
        1,
        2,
        0,
    )
    assert result.emboli[0].coverage == pytest.approx(28 / 40)
    assert result.emboli[0].best_iou == pytest.approx(16 / 40)
    # Coverage rule: 70% covered in total, but no single component covers half.
    assert detect_emboli(pred, label, HitCriterion("overlap", 0.4)).n_detected == 1  # 16/40 = 40%
    half = detect_emboli(pred, label, HitCriterion("overlap", 0.5))
    assert (half.n_detected, half.false_positives) == (0, 2)


def test_empty_cases():
    nothing = detect_emboli(grid(), grid())
    assert (nothing.n_emboli, nothing.false_positives) == (0, 0)
    assert math.isnan(nothing.sensitivity)
    pred = grid()
    pred[1, 1, 1] = pred[5, 5, 5] = True
    only_fp = detect_emboli(pred, grid())
    assert (only_fp.n_emboli, only_fp.false_positives) == (0, 2)
    label = grid()
    label[3:5, 3:5, 3:5] = True
    missed = detect_emboli(grid(), label)
    assert (missed.n_emboli, missed.n_detected, missed.sensitivity) == (1, 0, 0.0)


def test_hit_criterion_checks_its_arguments():
    with pytest.raises(ValueError, match="one of"):
        HitCriterion("dice", 0.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        HitCriterion("iou", 0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        HitCriterion("overlap", 1.5)
    assert "one voxel" in HitCriterion().describe()


# ------------------------------------------------------------------------------------------------- FROC


def froc_scans() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two scans of emboli and constant-probability candidates (scores written next to each).

    Scan A, emboli E1 (a bar), E2, E3 (never found); candidates: 0.9 on E1, 0.8 false, 0.6 on E2, 0.4 false,
    0.3 on the other end of E1 (a split: no effect). Scan B, embolus E4; candidates: 0.95 false, 0.5 on E4,
    0.2 false, and 0.05 false (below the 0.1 candidate level: ignored).
    """
    label_a, prob_a = grid(), np.zeros((20, 20, 20), np.float32)
    label_a[2:12, 2:4, 2:4] = True  # E1
    label_a[2:4, 10:12, 2:4] = True  # E2
    label_a[15:17, 15:17, 15:17] = True  # E3
    prob_a[2:4, 2:4, 2:4] = 0.9  # on E1
    prob_a[9:12, 2:4, 2:4] = 0.3  # on E1 again, separate component
    prob_a[10:12, 10:12, 10:12] = 0.8  # false
    prob_a[2:4, 10:12, 2:4] = 0.6  # on E2
    prob_a[6:8, 15:17, 6:8] = 0.4  # false
    label_b, prob_b = grid(), np.zeros((20, 20, 20), np.float32)
    label_b[5:8, 5:8, 5:8] = True  # E4
    prob_b[15:17, 2:4, 2:4] = 0.95  # false
    prob_b[6, 6, 6] = 0.5  # on E4
    prob_b[2:4, 15:17, 15:17] = 0.2  # false
    prob_b[12, 12, 2] = 0.05  # below the candidate level
    return [label_a, label_b], [prob_a, prob_b]


def candidates(labels, probs, **kwargs) -> list[CaseCandidates]:
    result = []
    for label, prob in zip(labels, probs, strict=True):
        cc, n = label_components(label)
        result.append(froc_candidates(prob, cc, n, **kwargs))
    return result


def test_froc_points_of_a_constructed_case():
    labels, probs = froc_scans()
    cases = candidates(labels, probs)
    assert sorted(cases[0].scores.tolist()) == pytest.approx([0.3, 0.4, 0.6, 0.8, 0.9])
    assert cases[1].scores.size == 3  # the 0.05 voxel is not a candidate
    curve = froc_curve(cases)
    assert (curve.n_scans, curve.n_emboli) == (2, 4)
    # Sweep, strictest first (FP counted over 2 scans, sensitivity over 4 emboli):
    #   inf (0, 0) | 0.95 false -> (0.5, 0) | 0.9 E1 -> (0.5, 0.25) | 0.8 false -> (1.0, 0.25)
    #   0.6 E2 -> (1.0, 0.5) | 0.5 E4 -> (1.0, 0.75) | 0.4 false -> (1.5, 0.75) | 0.3 E1 again -> (1.5, 0.75)
    #   0.2 false -> (2.0, 0.75)
    assert curve.thresholds[0] == np.inf
    assert curve.thresholds[1:] == pytest.approx([0.95, 0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2])
    assert curve.fp_per_scan.tolist() == [0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 1.5, 2.0]
    assert curve.sensitivity.tolist() == [0, 0, 0.25, 0.25, 0.5, 0.75, 0.75, 0.75, 0.75]
    # CAD-PE rates: step reading = best sensitivity with at most that many FP per scan.
    assert sensitivity_at(curve).tolist() == [0.25, 0.75, 0.75, 0.75, 0.75]
    # Between operating points the readings differ: at 0.75 FP/scan the step reading keeps 0.25 (the point
    # at 0.5), linear interpolation gives the midpoint of (0.5, 0.25) and (1.0, 0.75).
    assert sensitivity_at(curve, [0.25, 0.75]).tolist() == [0.0, 0.25]
    assert sensitivity_at(curve, [0.25, 0.75], "linear") == pytest.approx([0.125, 0.5])


def test_froc_operating_points_as_peak_thresholds():
    # the same sweep: the last point with at most 0.5 FP/scan is (0.5, 0.25) at 0.9; with 1.0, (1.0, 0.75) at
    # 0.5; 2.0 and more reach the last point, 0.2; under 0.5 FP/scan only the empty point (inf) qualifies
    curve = froc_curve(candidates(*froc_scans()))
    assert threshold_at(curve).tolist() == pytest.approx([0.9, 0.5, 0.2, 0.2, 0.2])
    assert threshold_at(curve, [0.25]).tolist() == [np.inf]


def test_froc_points_match_thresholded_detection():
    # Candidates hold constant probabilities, so cutting the maps at a score reproduces the operating point.
    labels, probs = froc_scans()
    curve = froc_curve(candidates(labels, probs))
    for threshold, fps, sens in zip(
        curve.thresholds[1:], curve.fp_per_scan[1:], curve.sensitivity[1:], strict=True
    ):
        results = [detect_emboli(p >= threshold, lab) for lab, p in zip(labels, probs, strict=True)]
        assert sum(r.false_positives for r in results) / 2 == pytest.approx(fps)
        assert sum(r.n_detected for r in results) / 4 == pytest.approx(sens)


def test_froc_candidate_level_and_hit_rule():
    labels, probs = froc_scans()
    high = froc_curve(candidates(labels, probs, min_probability=0.5))
    assert high.fp_per_scan[-1] == pytest.approx(1.0)  # the 0.4 and 0.2 false candidates are gone
    assert high.sensitivity[-1] == pytest.approx(0.75)
    # With IoU >= 0.5, the 0.9 candidate (8 voxels) on E1 (40 voxels) no longer hits: it becomes false.
    strict = froc_curve(candidates(labels, probs, criterion=HitCriterion("iou", 0.5)))
    assert strict.fp_per_scan[2] == pytest.approx(1.0)  # 0.95 and 0.9 both false


def test_froc_edge_cases():
    no_emboli = CaseCandidates(np.array([0.7]), np.array([True]), np.zeros(0))
    curve = froc_curve([no_emboli])
    assert np.isnan(curve.sensitivity).all()
    assert curve.fp_per_scan.tolist() == [0.0, 1.0]
    nothing = CaseCandidates(np.zeros(0), np.zeros(0, bool), np.array([-np.inf]))
    flat = froc_curve([nothing])
    assert flat.fp_per_scan.tolist() == [0.0]
    assert sensitivity_at(flat).tolist() == [0.0] * 5
    with pytest.raises(ValueError, match="at least one scan"):
        froc_curve([])
    with pytest.raises(ValueError, match="interpolation"):
        sensitivity_at(flat, interpolation="cubic")
