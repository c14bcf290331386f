"""Coarse chest regions from HU: lungs, opacified blood, the embolus territory, axes from the affine, grids."""

from __future__ import annotations

import numpy as np
import pytest

from pe_segmentation.data.chest_regions import chest_regions, patient_axes
from pe_segmentation.data.phantom import LABEL_EMBOLUS, Phantom, PhantomSettings, Tissue, generate_phantom
from pe_segmentation.io.volume import Volume

# 3.75 x 3.75 x 2.9 mm: stride 1 at the default 3 mm target, so coarse voxels are the phantom's own
SETTINGS = PhantomSettings(shape=(96, 96, 110), spacing=(3.75, 3.75, 2.9))


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return generate_phantom(SETTINGS, rng=1)


def _reoriented(volume: Volume) -> Volume:
    """The same CT with its array permuted (k, i, j) and two axes reversed, the affine following."""
    array = volume.array.transpose(2, 0, 1)[::-1, :, ::-1]
    n0, _, n2 = array.shape
    # new index (a, b, c) holds old (i, j, k) = (b, n2 - 1 - c, n0 - 1 - a)
    new_to_old = np.array(
        [[0, 1, 0, 0], [0, 0, -1, n2 - 1], [-1, 0, 0, n0 - 1], [0, 0, 0, 1]], dtype=np.float64
    )
    return Volume(np.ascontiguousarray(array), volume.affine @ new_to_old)


def test_axes_and_stride_come_from_the_affine():
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])  # the phantom's frame: i to the left, j posterior, k superior
    regions = chest_regions(Volume(np.full((40, 40, 30), -1000, dtype=np.int16), affine))
    assert regions.stride == (4, 4, 3)
    assert regions.spacing_mm == pytest.approx((2.8, 2.8, 3.0))
    assert (regions.superior_axis, regions.superior_sign) == (2, 1)
    assert (regions.anterior_axis, regions.anterior_sign) == (1, -1)
    assert regions.lungs.shape == (10, 10, 10)
    assert not regions.lungs.any()
    assert not regions.territory.any()

    # a sagittal grid stored feet first: superior is array axis 0 running down
    sagittal = np.array([[0, 0, -1.0, 0], [0, 1.0, 0, 0], [-1.0, 0, 0, 0], [0, 0, 0, 1]])
    axes, signs = patient_axes(sagittal)
    assert axes[2] == 0
    assert signs[2] == -1
    assert axes == (2, 1, 0)
    assert signs == (1, -1, -1)


def test_lungs_are_the_lungs(phantom: Phantom):
    regions = chest_regions(phantom.image)
    tissues = phantom.tissues
    lung = tissues == Tissue.LUNG
    found = regions.lungs
    assert np.count_nonzero(found & lung) >= 0.95 * np.count_nonzero(lung)
    assert np.count_nonzero(found & ~lung & (tissues != Tissue.AIRWAY)) <= 0.02 * np.count_nonzero(found)
    assert not (found & (tissues == Tissue.ABDOMEN)).any()
    assert 2000 < regions.lung_volume_ml < 6000
    assert regions.body[tissues != Tissue.AIR].mean() > 0.99
    assert not regions.body[tissues == Tissue.AIR].any()


def test_opacified_is_blood_between_the_lungs_not_bone(phantom: Phantom):
    regions = chest_regions(phantom.image)
    tissues = phantom.tissues
    bone = np.isin(tissues, [Tissue.BONE, Tissue.CORTICAL_BONE, Tissue.DISC])
    assert not (regions.opacified & bone).any()
    blood = np.isin(tissues, [Tissue.PULMONARY_ARTERY, Tissue.RIGHT_HEART_BLOOD, Tissue.SYSTEMIC_BLOOD])
    opacified = np.count_nonzero(regions.opacified)
    assert np.count_nonzero(regions.opacified & blood) >= 0.8 * opacified
    # the rest is the heart wall (60-90 HU, over 100 with noise and partial volume) and clot edges
    wall = blood | np.isin(tissues, [Tissue.MYOCARDIUM, Tissue.EMBOLUS])
    assert np.count_nonzero(regions.opacified & wall) >= 0.99 * opacified
    trunk = (tissues == Tissue.PULMONARY_ARTERY) & regions.mediastinum
    assert np.count_nonzero(regions.opacified & trunk) >= 0.5 * np.count_nonzero(trunk) > 0


def test_territory_holds_every_embolus(phantom: Phantom):
    regions = chest_regions(phantom.image)
    clots = np.argwhere(phantom.label.array == LABEL_EMBOLUS)
    assert len(clots) > 0
    assert regions.territory_at(clots).all()
    assert regions.territory[phantom.vessels].mean() > 0.98  # the whole artery tree, trunk included


def test_territory_leaves_out_abdomen_outside_air_and_chest_wall(phantom: Phantom):
    regions = chest_regions(phantom.image)
    tissues, territory = phantom.tissues, regions.territory
    assert not territory[tissues == Tissue.AIR].any()
    abdomen = tissues == Tissue.ABDOMEN
    assert territory[abdomen].mean() < 0.1
    lowest_lung = int(np.flatnonzero((tissues == Tissue.LUNG).any(axis=(0, 1)))[0])
    below = 4  # slices, 11.6 mm
    assert not territory[:, :, : lowest_lung - below].any()
    assert territory[tissues == Tissue.MUSCLE].mean() < 0.15
    assert territory[tissues == Tissue.FAT].mean() < 0.35  # mediastinal fat is in, subcutaneous fat is not


@pytest.mark.parametrize("kind", ["lungs as soft tissue", "soft-tissue block"])
def test_no_lungs_gives_an_empty_territory(phantom: Phantom, kind: str):
    if kind == "lungs as soft tissue":
        array = phantom.image.array.copy()
        array[phantom.tissues == Tissue.LUNG] = 45
    else:
        rng = np.random.default_rng(0)
        array = np.full(SETTINGS.shape, -1000, dtype=np.int16)
        array[15:-15, 20:-20, 10:-10] = rng.normal(45, 15, (66, 56, 90)).astype(np.int16)
    regions = chest_regions(Volume(array, phantom.image.affine))
    assert not regions.lungs.any()
    assert not regions.territory.any()
    assert not regions.opacified.any()
    assert not regions.territory_at(np.argwhere(phantom.label.array == LABEL_EMBOLUS)).any()


def test_regions_do_not_depend_on_the_array_order(phantom: Phantom):
    regions = chest_regions(phantom.image)
    turned = chest_regions(_reoriented(phantom.image))
    assert turned.superior_axis == 0
    assert turned.superior_sign == -1
    assert turned.anterior_axis == 2
    assert turned.anterior_sign == 1
    for name in ("body", "lungs", "mediastinum", "opacified", "territory"):
        expected = getattr(regions, name).transpose(2, 0, 1)[::-1, :, ::-1]
        assert np.array_equal(getattr(turned, name), expected), name


def test_territory_on_other_grids(phantom: Phantom):
    image = phantom.image
    regions = chest_regions(image, target_spacing_mm=7.5)  # stride 2 x 2 x 3
    assert regions.stride == (2, 2, 3)
    same = regions.territory_on_grid(image.affine, image.shape, image.affine)
    every = np.indices(image.shape).reshape(3, -1).T
    assert same.dtype == bool
    assert same.shape == image.shape
    assert np.array_equal(same.ravel(), regions.territory_at(every))

    # a grid with its axes permuted and reversed: the same territory, turned
    turned = _reoriented(image)
    on_turned = regions.territory_on_grid(turned.affine, turned.shape, image.affine)
    assert np.array_equal(on_turned, same.transpose(2, 0, 1)[::-1, :, ::-1])

    # an oblique (rotated) grid takes the general path and agrees away from the territory's edge
    angle = np.deg2rad(0.3)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    oblique = regions.territory_on_grid(rotation @ image.affine, image.shape, image.affine)
    assert oblique.shape == image.shape
    assert np.mean(oblique == same) > 0.98
    assert oblique.sum() == pytest.approx(same.sum(), rel=0.05)
