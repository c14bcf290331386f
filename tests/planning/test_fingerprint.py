"""The fingerprint of a phantom set whose figures are known (tests/planning/conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pe_segmentation as pe
from pe_segmentation.data.datasets import from_datalist
from pe_segmentation.planning import fingerprint as fingerprint_module
from pe_segmentation.planning import fingerprint_dataset


@pytest.fixture(scope="module")
def found(known_set):
    return fingerprint_dataset(from_datalist(known_set.datalist))


def test_each_case_is_read_along_r_a_s(known_set, found):
    cases = {c.case: c for c in found.cases}
    assert list(cases) == ["a", "b", "c", "d"]
    for name, case in cases.items():
        assert case.spacing == pytest.approx(known_set.spacings[name])
        assert case.shape == known_set.shapes[name]
        assert case.body_shape == known_set.body_shapes[name]
    assert cases["a"].hu_range == (-1000.0, 100.0)


def test_emboli_are_26_connected_components_measured_in_ml(known_set, found):
    for case in found.cases:
        voxel_ml = float(np.prod(known_set.spacings[case.case])) / 1000.0
        expected = [n * voxel_ml for n in known_set.emboli_voxels[case.case]]
        assert case.emboli_ml == pytest.approx(expected)
        assert case.foreground_voxels == sum(known_set.emboli_voxels[case.case])
    summary = found.to_dict()["emboli"]
    assert summary["count"] == 5
    # a: 96, 28.8 and 3.2 mm^3; b: 512 mm^3; d: 30.72 mm^3
    assert {k: v["count"] for k, v in summary["size_classes"].items()} == {
        "central": 1,
        "segmental": 1,
        "small": 3,
    }
    assert summary["per_case"]["median"] == 1.0  # 3, 1, 0, 1
    assert found.cases_without_emboli == 1


def test_labelled_hu_statistics_pool_every_labelled_voxel(known_set, found):
    hu = known_set.labelled_hu
    fg = found.foreground
    assert fg.voxels == hu.size == 408
    low, median, high = np.percentile(hu, [0.5, 50, 99.5])
    assert (fg.percentile_00_5, fg.median, fg.percentile_99_5) == pytest.approx((low, median, high))
    assert fg.mean == pytest.approx(hu.mean())
    assert fg.sd == pytest.approx(hu.std())
    assert (fg.low, fg.high) == (-50.0, 100.0)


def test_oddities_are_listed_not_fatal(found):
    odd = [(o.case, o.kind) for o in found.oddities]
    assert odd == [("d", "spacing_outlier"), ("e", "unreadable")]
    assert found.oddities[0].detail == "S 6 mm vs median 2.5"
    assert "e.nii.gz" in found.oddities[1].detail
    assert found.listed == 5


def test_the_fingerprint_is_json(found):
    data = json.loads(json.dumps(found.to_dict()))
    assert data["cases_read"] == 4
    assert data["spacing_mm"]["median"] == [0.8, 0.8, 2.5]
    assert data["body_shape"]["median"] == [40.0, 32.0, 20.0]
    assert data["foreground_hu"]["voxels"] == 408


def test_large_cases_give_a_seeded_share_of_their_labelled_voxels(known_set, monkeypatch):
    monkeypatch.setattr(fingerprint_module, "FOREGROUND_SAMPLES", 40)  # 5 listed cases: 8 voxels each
    items = from_datalist(known_set.datalist)
    first = fingerprint_dataset(items, seed=3)
    again = fingerprint_dataset(items, seed=3)
    assert first.foreground.voxels == 8 + 8 + 0 + 8  # a (80 labelled), b (320), c (none), d (8: all)
    np.testing.assert_array_equal(first.foreground_hu, again.foreground_hu)
    assert set(first.foreground_hu[:8].tolist()) <= {50.0, 70.0, 100.0}
    assert set(first.foreground_hu[8:16].tolist()) == {20.0}


def test_phantoms_fingerprint_as_the_generator_drew_them(tmp_path):
    """pe-seg synth records each embolus's voxels; the fingerprint finds the same emboli with the same volumes."""
    pe.synth(tmp_path, cases=3, seed=2, shape=(96, 96, 64), profile="uniform", negative_fraction=0.34)
    drawn = json.loads((tmp_path / "datalist.json").read_text())["training"]
    found = fingerprint_dataset(from_datalist(tmp_path / "datalist.json"))
    assert found.cases_without_emboli == sum(entry["negative"] for entry in drawn) >= 1
    for entry, case in zip(drawn, found.cases, strict=True):
        voxel_ml = float(np.prod(entry["spacing"])) / 1000.0
        expected = sorted((e["voxels"] * voxel_ml for e in entry["emboli"]), reverse=True)
        assert case.emboli_ml == pytest.approx(expected, rel=1e-5)
        assert case.spacing == pytest.approx(entry["spacing"], rel=1e-6)
        assert list(case.shape) == entry["shape"]
