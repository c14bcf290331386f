"""The clinical phantom profile: scanner variety, PE mimics (label 0), normal scans; the uniform profile unchanged."""

from __future__ import annotations

import hashlib
import statistics

import numpy as np
import pytest

from pe_segmentation.data.phantom import (
    LABEL_VEIN,
    MIMIC_KINDS,
    PhantomSettings,
    Tissue,
    case_seed,
    draw_scanner,
    generate_phantom,
    is_negative,
)
from pe_segmentation.data.phantom.scanner import KERNELS, PHASES
from pe_segmentation.errors import ConfigError

SMALL_CLINICAL = PhantomSettings(shape=(64, 64, 48), profile="clinical", vessel_label=True)
_MIMIC_TISSUE = {
    "dark_pulmonary_veins": Tissue.PULMONARY_VEIN,
    "mixing_artefact": Tissue.UNOPACIFIED_BLOOD,
    "lymph_node": Tissue.LYMPH_NODE,
    "mucus_bronchus": Tissue.MUCUS_BRONCHUS,
}


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def clinical_cases():
    return [generate_phantom(SMALL_CLINICAL, case_seed(2, i)) for i in range(16)]


def test_uniform_profile_is_unchanged():
    # the uniform profile's output, seed 7, as of the FUMPE-calibrated emboli (issue 16), for the default
    # 256x256x200 grid and a 64x64x48 one: the clinical profile's code paths (scanner, mimics) must not change it
    expected = {
        (256, 256, 200): (
            "67476b44fb42dfbf87c5bc5fc669f182206d893124f18d1c559193310a0ed67d",
            "9bccf58abaa556445241ddefd7194ad18105a63fab969f1988d191e6de0f0cd3",
        ),
        (64, 64, 48): (
            "9005895a00565336b183695b83a5712624b504f45ec48c2dc27521255f95e862",
            "e2b3cfd3c56d2ab1170b852b0cce637cffbd7a15acc0a23d51f433da91e9a733",
        ),
    }
    for settings in (PhantomSettings(), PhantomSettings.for_field((64, 64, 48))):
        assert settings.profile == "uniform"
        phantom = generate_phantom(settings, 7)
        assert (_sha(phantom.image.array), _sha(phantom.label.array)) == expected[settings.shape]
        assert phantom.scanner is None
        assert phantom.mimics == []
        assert not phantom.negative


def test_scanner_draws_stay_in_the_documented_ranges():
    rng = np.random.default_rng(0)
    draws = [draw_scanner(rng) for _ in range(400)]
    inplane = [d.spacing[0] for d in draws]
    slices = [d.spacing[2] for d in draws]
    assert all(0.49 <= s <= 1.09 for s in inplane)
    assert all(d.spacing[0] == d.spacing[1] for d in draws)
    assert all(0.5 <= s <= 5.0 for s in slices)
    assert statistics.median(inplane) == pytest.approx(0.74, abs=0.04)
    assert statistics.median(slices) == pytest.approx(2.5, abs=0.25)
    assert min(inplane) < 0.6
    assert max(inplane) > 1.0
    assert min(slices) < 1.0
    assert max(slices) > 4.5
    for d in draws:
        assert 150.0 <= d.trunk_hu <= 600.0
        assert d.thickness_mm >= d.spacing[2]
        assert 315.0 <= d.field_mm[0] <= 405.0
        assert 245.0 <= d.field_mm[2] <= 355.0
        assert d.shape == tuple(round(f / s) for f, s in zip(d.field_mm, d.spacing, strict=True))
        assert 8.0 <= d.noise_hu <= 45.0
        assert (d.vein_hu < 61.0) == (d.phase == "early")
        assert d.streaks_hu == 0.0 or d.svc_hu >= 600.0
    assert {d.kernel for d in draws} == set(KERNELS)
    assert {d.phase for d in draws} == set(PHASES)
    assert any(d.streaks for d in draws)
    assert any(d.motion_mm > 0 for d in draws)
    assert any(d.motion_mm == 0 for d in draws)
    assert any(d.svc_hu == 0 for d in draws)


def test_shape_and_spacing_override_the_drawn_grid():
    rng = np.random.default_rng(1)
    fixed_shape = draw_scanner(rng, shape=(64, 64, 48))
    assert fixed_shape.shape == (64, 64, 48)
    assert fixed_shape.spacing[0] == pytest.approx(fixed_shape.field_mm[0] / 64)
    fixed_spacing = draw_scanner(rng, spacing=(0.8, 0.8, 2.0))
    assert fixed_spacing.spacing == (0.8, 0.8, 2.0)
    assert 400 <= fixed_spacing.shape[0] <= 500
    assert 125 <= fixed_spacing.shape[2] <= 175
    both = draw_scanner(rng, shape=(64, 64, 48), spacing=(5.6, 5.6, 6.6))
    assert (both.shape, both.spacing) == ((64, 64, 48), (5.6, 5.6, 6.6))
    settings = PhantomSettings(profile="clinical")
    assert (settings.shape, settings.spacing, settings.fixed_grid) == (None, None, False)
    with pytest.raises(ConfigError, match="draws each case's grid"):
        _ = settings.grid
    with pytest.raises(ConfigError, match="profile must be one of"):
        PhantomSettings(profile="mixed")


def test_clinical_cases_are_reproducible_per_seed():
    first = generate_phantom(SMALL_CLINICAL, case_seed(9, 3))
    again = generate_phantom(SMALL_CLINICAL, case_seed(9, 3))
    other = generate_phantom(SMALL_CLINICAL, case_seed(9, 4))
    assert np.array_equal(first.image.array, again.image.array)
    assert np.array_equal(first.label.array, again.label.array)
    assert first.scanner == again.scanner
    assert first.mimics == again.mimics
    assert first.scanner != other.scanner
    assert first.image.array.shape == (64, 64, 48)
    assert np.allclose(first.grid.spacing, first.scanner.spacing)


def test_every_mimic_appears_and_is_not_embolus(clinical_cases):
    seen = {m.kind for case in clinical_cases for m in case.mimics}
    assert seen == set(MIMIC_KINDS)
    for case in clinical_cases:
        label = case.label.array
        for kind in {m.kind for m in case.mimics}:
            voxels = case.tissues == _MIMIC_TISSUE[kind]
            assert voxels.sum() == sum(m.voxels for m in case.mimics if m.kind == kind) > 0
            # background, except the veins, which vessel_label marks as a class of their own
            expected = LABEL_VEIN if kind == "dark_pulmonary_veins" else 0
            assert (label[voxels] == expected).all(), kind
            assert not case.vessels[voxels].any(), kind
        assert not case.vessels[case.tissues == Tissue.PULMONARY_VEIN].any()
        if case.scanner.phase == "early":
            assert "dark_pulmonary_veins" in {m.kind for m in case.mimics}


def test_vessel_label_marks_the_veins_three_and_changes_nothing_else():
    plain_settings = PhantomSettings(shape=(64, 64, 48), profile="clinical")
    for index in range(4):
        plain = generate_phantom(plain_settings, case_seed(5, index))
        labelled = generate_phantom(SMALL_CLINICAL, case_seed(5, index))
        np.testing.assert_array_equal(labelled.image.array, plain.image.array)
        veins = labelled.tissues == Tissue.PULMONARY_VEIN
        assert veins.sum() > 100  # every clinical chest has its four pulmonary veins
        np.testing.assert_array_equal(labelled.label.array == LABEL_VEIN, veins)
        np.testing.assert_array_equal(labelled.label.array == 1, plain.label.array == 1)
        assert not plain.label.array[veins].any()


def test_mimic_hu_ranges(clinical_cases):
    ranges = {
        "dark_pulmonary_veins": (35.0, 60.0),
        "mixing_artefact": (50.0, 130.0),
        "lymph_node": (30.0, 60.0),
        "mucus_bronchus": (10.0, 40.0),
    }
    for case in clinical_cases:
        for mimic in case.mimics:
            low, high = ranges[mimic.kind]
            assert low <= mimic.hu <= high, mimic
        for node in (m for m in case.mimics if m.kind == "lymph_node"):
            assert 5.0 <= node.size_mm <= 20.0


def test_negative_fraction_is_exact_over_forty_cases_and_per_case():
    for fraction, expected in ((0.25, 10), (0.5, 20), (0.0, 0), (1.0, 40)):
        flags = [is_negative(4, i, fraction) for i in range(40)]
        assert sum(flags) == expected
    assert [is_negative(4, i, 0.25) for i in range(40)] != [is_negative(5, i, 0.25) for i in range(40)]
    with pytest.raises(ConfigError, match="negative fraction"):
        is_negative(0, 0, 1.5)


def test_a_negative_case_has_no_embolus():
    for settings in (SMALL_CLINICAL, PhantomSettings.for_field((64, 64, 48))):
        phantom = generate_phantom(settings, case_seed(0, 0), negative=True)
        assert phantom.negative
        assert phantom.emboli == []
        assert not (phantom.label.array == 1).any()
        assert not phantom.instances.any()
