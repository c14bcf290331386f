"""Phantom emboli calibrated to real data: FUMPE's counts, burdens and volumes, casts and saddle emboli, and
the HU of labelled voxels against the nnU-Net fingerprint (partial volume at the clot's edge)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from pe_segmentation import synth
from pe_segmentation.data.phantom import PhantomSettings, case_seed, generate_phantom
from pe_segmentation.data.phantom.anatomy import Chest
from pe_segmentation.data.phantom.calibration import compare_to_fumpe, format_calibration
from pe_segmentation.data.phantom.emboli import EMBOLUS_HU, EmbolusInfo, place_emboli
from pe_segmentation.data.phantom.fumpe_figures import (
    BURDEN_ML_PER_PATIENT,
    COMPONENT_VOLUME_QUANTILES_MM3,
    EMBOLI_PER_PATIENT,
)
from pe_segmentation.data.phantom.vessels import branch_region, build_tree, render_lumen

# the default field of view (the chest's real size) at the demo's 2.24 x 2.24 x 2.5 mm: 12.5 mm^3 voxels
DEMO = PhantomSettings.for_field(shape=(160, 160, 128))
CASES = 200
NEIGHBOURS_26 = np.ones((3, 3, 3), dtype=bool)


def _fumpe_volume(q: float) -> float:
    return dict(COMPONENT_VOLUME_QUANTILES_MM3)[q]


@pytest.fixture(scope="module")
def placed():
    """200 cases' artery trees and emboli, placed as the generator does (without rendering the image)."""
    grid = DEMO.grid
    cases = []
    for index in range(CASES):
        rng = np.random.default_rng(case_seed(21, index))
        branches = build_tree(Chest(grid, rng), rng)
        lumen = render_lumen(grid, branches)
        instances, emboli = place_emboli(grid, branches, lumen, rng)
        cases.append((branches, lumen, instances, emboli))
    return cases


def test_counts_burdens_and_volumes_match_fumpe_over_two_hundred_cases(placed):
    comparison = compare_to_fumpe([emboli for *_, emboli in placed])
    ours = comparison["phantoms"]
    counts = np.array(ours["counts"])
    real_counts = [c for c in EMBOLI_PER_PATIENT if c > 0]
    assert ours["cases_with_emboli"] == CASES
    assert np.median(counts) == np.median(real_counts) == 2
    assert abs(counts.mean() - np.mean(real_counts)) < 0.6  # 2.9 in FUMPE; a few clots find no room
    assert counts.max() <= 15
    # per-case burden (mL): FUMPE's 33 positive patients give quantiles known to within a few mL
    burden = np.percentile(ours["burdens_ml"], [25, 50, 75])
    real = np.percentile([b for b in BURDEN_ML_PER_PATIENT if b > 0], [25, 50, 75])
    assert 0.3 * real[0] <= burden[0] <= 2.0 * real[0], (burden, real)
    assert 0.6 * real[1] <= burden[1] <= 1.6 * real[1], (burden, real)
    assert 0.6 * real[2] <= burden[2] <= 1.8 * real[2], (burden, real)
    # component volumes: quantiles within FUMPE's sampling error (95 components), class shares within 10 points
    volumes = np.percentile(ours["volumes_mm3"], [25, 50, 75, 95])
    for got, q in zip(volumes, (0.25, 0.5, 0.75, 0.95), strict=True):
        assert 0.6 * _fumpe_volume(q) <= got <= 1.6 * _fumpe_volume(q), (q, got)
    assert np.percentile(ours["volumes_mm3"], 5) < 50.0
    for size, share in comparison["fumpe"]["class_shares"].items():
        assert abs(ours["class_shares"][size] - share) < 0.1, (size, ours["class_shares"])


def test_each_embolus_is_one_component_in_the_lumen_and_they_do_not_touch(placed):
    voxel = DEMO.grid.voxel_volume_mm3
    for _, lumen, instances, emboli in placed[:60]:
        components, count = ndimage.label(instances > 0, structure=NEIGHBOURS_26)
        assert count == len(emboli)  # touching emboli would merge into one component
        assert not np.any((instances > 0) & ~lumen)
        for info in emboli:
            voxels = instances == info.index
            assert np.count_nonzero(voxels) == info.voxels
            assert len(np.unique(components[voxels])) == 1
            assert info.volume_mm3 == pytest.approx(info.voxels * voxel)


def test_large_emboli_are_casts_into_child_branches(placed):
    emboli = [e for *_, case in placed for e in case]
    casts = [e for e in emboli if e.cast]
    assert all(e.target_volume_mm3 >= 500 for e in casts)
    assert sum(e.branches >= 2 for e in casts) > 0.5 * len(casts)  # they follow the tree
    assert max(e.branches for e in casts) >= 6
    central = [e for e in casts if e.volume_mm3 > 5000]
    assert central
    assert np.median([e.vessel_generation for e in central]) <= 2  # trunk, main or lobar
    small = [e for e in emboli if e.volume_mm3 < 50]
    assert small
    assert min(e.vessel_generation for e in small) >= 3  # segmental or subsegmental


def test_saddle_emboli_cross_the_trunk_bifurcation(placed):
    grid = DEMO.grid
    saddles = 0
    for branches, _, instances, emboli in placed:
        for info in (e for e in emboli if e.saddle):
            saddles += 1
            trunk = branches[0]
            assert trunk.parent is None
            assert info.vessel == trunk.name
            assert info.cast
            mains = [b for b in branches if b.parent == trunk.index]
            assert len(mains) == 2
            for artery in [trunk, *mains]:
                region = branch_region(grid, artery)
                assert region is not None
                beyond = region.inside & (region.axial > 3.0) & (region.axial < artery.tube.length - 3.0)
                assert np.any(instances[region.box][beyond] == info.index), artery.name
    assert saddles >= 3  # about 4% of the cases hold one


@pytest.fixture(scope="module")
def rendered():
    return [generate_phantom(PhantomSettings(), case_seed(5, i)) for i in range(3)]


def test_labelled_hu_matches_the_fingerprint_by_partial_volume(rendered):
    values = np.concatenate([p.image.array[p.label.array == 1] for p in rendered]).astype(float)
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    assert abs(median - 47.0) <= 30.0, median
    assert p5 >= -195.0, p5
    assert p95 <= 305.0, p95
    # the clots themselves stay clot: the tails come from the boundary voxels' contrast and lung
    emboli = [e for p in rendered for e in p.emboli]
    assert all(EMBOLUS_HU[0] <= e.hu <= EMBOLUS_HU[1] for e in emboli)
    assert p5 < EMBOLUS_HU[0] - 40
    assert p95 > EMBOLUS_HU[1] + 40
    # the records' percentiles pool to about the same figures
    pooled = compare_to_fumpe([p.emboli for p in rendered])["phantoms"]["label_hu"]
    assert pooled[2] == pytest.approx(median, abs=10.0)
    assert pooled[1] == pytest.approx(p5, abs=25.0)
    assert pooled[3] == pytest.approx(p95, abs=25.0)


def test_synth_prints_the_calibration_and_writes_its_figure(tmp_path: Path):
    summary = synth(tmp_path / "set", cases=2, shape=(64, 64, 48))
    assert (tmp_path / "set" / "calibration.png").stat().st_size > 10_000
    datalist = json.loads(summary.datalist.read_text())
    per_case = [[EmbolusInfo.from_dict(e) for e in case["emboli"]] for case in datalist["training"]]
    assert [len(c) for c in per_case] == [len(c.emboli) for c in summary.cases]
    table = format_calibration(compare_to_fumpe(per_case))
    for row in ("emboli per case", "burden mL", "embolus mm^3", "central / segmental / small", "labelled HU"):
        assert row in table
    assert "2 (1-15)" in table  # FUMPE's column
