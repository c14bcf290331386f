"""The phantom's slab-by-slab volume steps give what the plain whole-volume formulas give."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from pe_segmentation.data.phantom import Tissue, draw_scanner, filters
from pe_segmentation.data.phantom.anatomy import Chest, texture_amplitudes, tissue_hu
from pe_segmentation.data.phantom.filters import add_normal_noise, correlate_first_axis, dilate
from pe_segmentation.data.phantom.geometry import Grid
from pe_segmentation.data.phantom.scanner import acquire, axis_kernels, diaphragm_top_mm, superior_vena_cava
from pe_segmentation.data.phantom.texture import resize_linear, texture_noise, textured_hu

MOVING = [
    Tissue.LUNG,
    Tissue.PULMONARY_ARTERY,
    Tissue.EMBOLUS,
    Tissue.PULMONARY_VEIN,
    Tissue.MUCUS_BRONCHUS,
    Tissue.AIRWAY,
]


@pytest.fixture
def small_slabs(monkeypatch):
    """Slabs of two planes of a 16 x 12 plane: many slabs, some thinner than a filter's radius."""
    monkeypatch.setattr(filters, "SLAB_VOXELS", 2 * 16 * 12)


def test_slabs_cover_the_first_axis_once(small_slabs):
    parts = list(filters.slabs((7, 16, 12)))
    assert [(p.start, p.stop) for p in parts] == [(0, 2), (2, 4), (4, 6), (6, 7)]


@pytest.mark.parametrize(
    "weights",
    [
        np.array([0.25, 0.5, 0.25]),
        np.array([-0.1, 0.05, 0.2, 0.7, 0.2, 0.05, -0.1]),  # symmetric, radius 3 > a slab's 2 planes
        np.array([0.1, 0.2, 0.3, 0.4, -0.5]),  # not symmetric
        np.array([1.5]),
    ],
)
@pytest.mark.parametrize("planes", [1, 2, 9])
def test_correlate_first_axis_matches_scipy(small_slabs, weights, planes):
    volume = np.random.default_rng(planes).normal(0.0, 100.0, (planes, 16, 12)).astype(np.float32)
    expected = ndimage.correlate1d(volume, weights, axis=0, mode="nearest")
    correlate_first_axis(volume, weights)
    np.testing.assert_allclose(volume, expected, rtol=0, atol=1e-3)


def test_correlate_first_axis_needs_odd_weights():
    with pytest.raises(ValueError, match="odd length"):
        correlate_first_axis(np.zeros((3, 3, 3), dtype=np.float32), np.ones(4))


def test_dilate_is_scipys_default_binary_dilation():
    mask = np.random.default_rng(0).random((9, 11, 7)) > 0.93
    mask[0, 0, 0] = mask[-1, -1, -1] = True  # corners: the outside counts as False
    assert np.array_equal(dilate(mask), ndimage.binary_dilation(mask))


@pytest.mark.parametrize(
    "grid",
    [
        Grid((30, 24, 20), (4.0, 5.0, 3.0)),  # the coarse noise (22 x 22 x 12) upsampled
        Grid((30, 24, 50), (4.0, 5.0, 5.76)),  # k already has the coarse noise's 50 samples
    ],
)
def test_textured_hu_is_the_whole_volume_formula_bit_for_bit(small_slabs, grid):
    rng = np.random.default_rng(3)
    tissues = rng.integers(0, len(Tissue), grid.shape).astype(np.uint8)
    table = tissue_hu(rng)
    hu = textured_hu(tissues, table, grid, np.random.default_rng(4))
    coarse = texture_noise(grid, np.random.default_rng(4))
    field = resize_linear(coarse, grid.shape)
    field += np.linspace(-0.8, 0.8, grid.shape[1], dtype=np.float32)[None, :, None]
    field *= texture_amplitudes()[tissues]
    expected = table[tissues]
    expected += field
    assert hu.dtype == np.float32
    assert np.array_equal(hu, expected)


def _whole_volume_acquisition(hu, tissues, grid, draw, top_mm):
    """Motion blur and reconstruction filter of a noise-free scan, on the whole volume at once."""
    z = grid.axis(2)
    region = slice(0, int(np.flatnonzero(z <= top_mm + 60.0)[-1]) + 1)
    sub = hu[:, :, region]
    sigma_mm = draw.motion_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    sigmas = (0.0, 0.5 * sigma_mm / grid.spacing[1], sigma_mm / grid.spacing[2])
    blurred = ndimage.gaussian_filter(sub, sigmas, mode="nearest", truncate=2.5)
    weight = np.clip((top_mm + 60.0 - z[region]) / 60.0, 0.0, 1.0)
    moving = ndimage.binary_dilation(np.isin(tissues[:, :, region], MOVING))
    sub += (blurred - sub) * (moving * weight[None, None, :])
    inplane, along_z = axis_kernels(draw)
    for axis, weights in ((0, inplane), (1, inplane), (2, along_z)):
        ndimage.correlate1d(hu, weights, axis=axis, output=hu, mode="nearest")


def test_acquisition_in_slabs_matches_the_whole_volume(monkeypatch):
    monkeypatch.setattr(filters, "SLAB_VOXELS", 3 * 72 * 56)  # 3 planes a slab
    grid = Grid((72, 72, 56), (5.0, 5.0, 5.7))
    chest = Chest(grid, np.random.default_rng(1))
    tissues = chest.render()
    hu = tissue_hu(np.random.default_rng(2))[tissues]
    top = diaphragm_top_mm(chest)
    draw = draw_scanner(np.random.default_rng(0), grid.shape, grid.spacing)
    for kernel in ("soft", "sharp"):
        noiseless = dataclasses.replace(draw, kernel=kernel, noise_hu=0.0, streaks_hu=0.0, motion_mm=7.0)
        expected = hu.copy()
        _whole_volume_acquisition(expected, tissues, grid, noiseless, top)
        image = hu.copy()
        acquire(image, tissues, grid, noiseless, superior_vena_cava(chest), top, np.random.default_rng(0))
        assert not np.array_equal(image, hu)
        np.testing.assert_allclose(image, expected, rtol=0, atol=2e-3)


@pytest.mark.parametrize("kernel", ["soft", "standard", "sharp"])
def test_acquired_noise_has_the_drawn_sd(kernel):
    grid = Grid((96, 96, 64), (0.7, 0.7, 2.0))
    draw = draw_scanner(np.random.default_rng(5), grid.shape, grid.spacing)
    draw = dataclasses.replace(draw, kernel=kernel, noise_hu=20.0, streaks_hu=0.0, motion_mm=0.0)
    image = np.full(grid.shape, 40.0, dtype=np.float32)
    tissues = np.zeros(grid.shape, dtype=np.uint8)
    chest = Chest(grid, np.random.default_rng(0))
    acquire(image, tissues, grid, draw, superior_vena_cava(chest), 0.0, np.random.default_rng(6))
    inner = image[12:-12, 12:-12, 6:-6]  # clear of the edges, where "nearest" repeats voxels
    assert inner.mean() == pytest.approx(40.0, abs=0.5)
    assert inner.std() == pytest.approx(20.0, rel=0.04)


def test_normal_noise_table_is_a_unit_normal():
    block = np.zeros((64, 64, 64), dtype=np.float32)
    add_normal_noise(block, 3.0, np.random.default_rng(0))
    assert block.mean() == pytest.approx(0.0, abs=0.02)
    assert block.std() == pytest.approx(3.0, rel=0.01)
    # normal tails: P(|z| > 2) = 4.55 %, P(|z| > 3) = 0.27 %
    assert np.mean(np.abs(block) > 6.0) == pytest.approx(0.0455, abs=0.002)
    assert np.mean(np.abs(block) > 9.0) == pytest.approx(0.0027, abs=0.0005)
    again = np.zeros_like(block)
    add_normal_noise(again, 3.0, np.random.default_rng(0))
    assert np.array_equal(block, again)
