"""Summary statistics and bootstrap intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pe_segmentation.evaluation.summary import bootstrap_ci, describe, json_ready


def test_describe_known_values_and_undefined_count():
    stats = describe([1.0, 2.0, 3.0, 4.0, math.nan], n_resamples=500, seed=1)
    assert (stats["n"], stats["n_undefined"]) == (4, 1)
    assert stats["mean"] == pytest.approx(2.5)
    assert stats["median"] == pytest.approx(2.5)
    assert stats["std"] == pytest.approx(math.sqrt(5 / 3))  # sample SD: sum of squares 5 over n - 1 = 3
    assert (stats["min"], stats["max"]) == (1.0, 4.0)
    assert 1.0 <= stats["ci95_low"] < 2.5 < stats["ci95_high"] <= 4.0


def test_bootstrap_is_reproducible_from_its_seed():
    values = np.random.default_rng(3).normal(size=30)
    assert describe(values, seed=7) == describe(values, seed=7)
    assert describe(values, seed=7)["ci95_low"] != describe(values, seed=8)["ci95_low"]


def test_degenerate_inputs():
    none = describe([math.nan, math.nan])
    assert (none["n"], none["n_undefined"]) == (0, 2)
    assert all(math.isnan(none[k]) for k in ("mean", "median", "std", "ci95_low", "ci95_high"))
    one = describe([0.7])
    assert one["mean"] == 0.7
    assert math.isnan(one["std"])
    assert (one["ci95_low"], one["ci95_high"]) == (0.7, 0.7)
    low, high = bootstrap_ci(5, lambda i: 1.0, n_resamples=0)
    assert math.isnan(low)
    assert math.isnan(high)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(3, lambda i: 1.0, n_resamples=-1)


def test_ratio_and_vector_statistics():
    detected, emboli = np.array([1, 2, 0, 3]), np.array([2, 2, 0, 4])
    low, high = bootstrap_ci(
        4, lambda i: detected[i].sum() / emboli[i].sum() if emboli[i].sum() else math.nan
    )
    assert 0 <= low <= 6 / 8 <= high <= 1
    low_v, high_v = bootstrap_ci(4, lambda i: np.array([detected[i].mean(), 5.0]))
    assert low_v.shape == (2,)
    assert (low_v[1], high_v[1]) == (5.0, 5.0)


def test_json_ready_is_strict_json():
    data = {
        "a": math.nan,
        "b": np.float32(0.5),
        "c": np.int64(3),
        "d": [np.inf, 1],
        "e": np.array([1.0, np.nan]),
    }
    text = json.dumps(json_ready(data), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": 0.5, "c": 3, "d": [None, 1], "e": [1.0, None]}
