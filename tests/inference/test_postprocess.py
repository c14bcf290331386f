"""Post-processing: component removal, and thresholding on the original grid by resampling only around clots."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pe_segmentation.inference.postprocess import (
    GridMapping,
    bounding_box,
    probability_to_mask,
    remove_small_components,
)


def test_small_components_go_and_a_component_of_exactly_the_minimum_stays():
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[1:3, 1:3, 1:3] = 1  # 8 voxels
    mask[10:13, 10:13, 10:13] = 1  # 27 voxels
    spacing = (0.5, 1.0, 2.0)  # 1 mm^3 per voxel

    assert remove_small_components(mask, spacing, 0).sum() == 35
    assert remove_small_components(mask, spacing, 8.0).sum() == 35  # 8 mm^3 is kept
    kept = remove_small_components(mask, spacing, 8.5)
    assert kept.sum() == 27
    assert kept[11, 11, 11] == 1
    assert kept[1, 1, 1] == 0
    assert remove_small_components(mask, spacing, 28.0).sum() == 0
    assert remove_small_components(mask, (1.0, 1.0, 1.0), 8.5).sum() == 27
    with pytest.raises(ValueError, match="min_volume_mm3"):
        remove_small_components(mask, spacing, -1)


def test_voxels_touching_by_a_corner_are_one_clot():
    mask = np.zeros((6, 6, 6), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = 1  # corner contact: 26-connectivity makes one 2-voxel clot
    assert remove_small_components(mask, (1, 1, 1), 2.0).sum() == 2
    assert remove_small_components(mask, (1, 1, 1), 2.5).sum() == 0


def test_bounding_box():
    mask = np.zeros((5, 6, 7), bool)
    assert bounding_box(mask) is None
    mask[1, 2, 3] = mask[3, 4, 3] = True
    assert bounding_box(mask) == (slice(1, 4), slice(2, 5), slice(3, 4))


def _mapping(original_shape, network_shape, axes, scale, offset, body=None) -> GridMapping:
    """A mapping built from affines: original grid 1 mm, network grid along permuted/flipped axes."""
    original_affine = np.eye(4)
    to_network = np.zeros((4, 4))
    to_network[3, 3] = 1
    for axis, (net_axis, s, o) in enumerate(zip(axes, scale, offset, strict=True)):
        to_network[net_axis, axis] = s
        to_network[net_axis, 3] = o
    network_affine = original_affine @ np.linalg.inv(to_network)
    body = body or tuple(slice(0, n) for n in original_shape)
    cropped_affine = original_affine.copy()
    cropped_affine[:3, 3] = [b.start for b in body]
    cropped_shape = [b.stop - b.start for b in body]
    return GridMapping.from_affines(
        original_affine, original_shape, cropped_affine, cropped_shape, network_affine, network_shape
    )


def test_mapping_reads_axes_scale_offset_and_body_box_from_the_affines():
    body = (slice(2, 30), slice(0, 20), slice(5, 17))
    mapping = _mapping((32, 20, 18), (10, 12, 9), (2, 0, 1), (0.5, -0.7, 0.6), (-1.0, 13.0, -3.0), body)
    assert mapping.axes == (2, 0, 1)
    assert mapping.scale == pytest.approx((0.5, -0.7, 0.6))
    assert mapping.offset == pytest.approx((-1.0, 13.0, -3.0))
    assert mapping.body_box == body


@pytest.mark.parametrize(
    ("axes", "scale", "offset"),
    [
        ((0, 1, 2), (0.7, 0.7, 0.4), (0.0, 0.0, 0.0)),  # coarser network grid
        ((2, 0, 1), (1.3, -0.8, 0.5), (-2.2, 30.1, 1.7)),  # permuted, flipped, finer along one axis
        ((1, 2, 0), (-0.45, 0.6, 1.0), (16.0, -0.3, 0.0)),
    ],
)
def test_resampling_only_around_clots_gives_the_full_resampling_mask(axes, scale, offset):
    rng = np.random.default_rng(0)
    original_shape, network_shape = (36, 30, 26), (20, 24, 18)
    body = (slice(3, 33), slice(0, 28), slice(2, 26))
    mapping = _mapping(original_shape, network_shape, axes, scale, offset, body)
    probability = ndimage.gaussian_filter(rng.random(network_shape), 1.5).astype(np.float32)
    probability = (probability - probability.min()) / np.ptp(probability)
    probability[-1, :, :] = 0.95  # clots touching the network grid's edge reach voxels beyond it
    probability[:, 0, :] = 0.95

    full = mapping.sample_all(probability)
    assert full[: body[0].start].max() == 0
    assert full[:, :, : body[2].start].max() == 0
    for threshold in (0.5, 0.65, 0.9):
        result = probability_to_mask(probability, mapping, threshold)
        expected = (full >= threshold).astype(np.uint8)
        assert expected.sum() > 100
        np.testing.assert_array_equal(result.mask, expected)
        assert result.roi == bounding_box(expected)
        inside = expected[result.roi].astype(bool)
        np.testing.assert_allclose(result.roi_probability[inside], full[result.roi][inside], atol=1e-6)

    complete = probability_to_mask(probability, mapping, 0.5, full_probability=True)
    np.testing.assert_allclose(complete.probability, full, atol=1e-6)
    # Fortran order, as DICOM frames and NIfTI voxels lie: the writers then need no 3D transpose
    assert result.mask.flags.f_contiguous
    assert complete.mask.flags.f_contiguous
    assert complete.probability.flags.f_contiguous


def test_voxels_beyond_the_network_grid_take_its_edge_value_inside_the_body_box():
    body = (slice(0, 33), slice(0, 30), slice(0, 26))
    mapping = _mapping((36, 30, 26), (20, 21, 11), (0, 1, 2), (0.7, 0.7, 0.4), (0.0, 0.0, 0.0), body)
    probability = np.zeros(mapping.network_shape, np.float32)
    probability[-1] = 0.95  # the last network plane lies at original i = 19 / 0.7 = 27.1
    mask = probability_to_mask(probability, mapping, 0.9).mask
    assert mask[28:33].all()  # clamped to the edge: as MONAI's border padding
    assert not mask[33:].any()  # cropped away: 0 as after the inverse crop
    assert not mask[:27].any()


def test_linear_maps_are_reproduced_exactly_inside_the_grid():
    mapping = _mapping((24, 20, 16), (17, 9, 12), (1, 2, 0), (0.35, 0.7, -0.6), (0.5, 1.0, 11.0))
    index = np.indices(mapping.network_shape).astype(np.float32)
    values = 0.1 * index[0] - 0.2 * index[1] + 0.05 * index[2]
    sampled = mapping.sample_all(values)
    original = np.indices(mapping.original_shape).astype(np.float64)
    coords = [mapping.scale[a] * original[a] + mapping.offset[a] for a in range(3)]
    net = [None, None, None]
    for a in range(3):
        net[mapping.axes[a]] = coords[a]
    expected = 0.1 * net[0] - 0.2 * net[1] + 0.05 * net[2]
    inside = np.all(
        [(c >= 0) & (c <= mapping.network_shape[mapping.axes[a]] - 1) for a, c in enumerate(coords)], axis=0
    )
    assert inside.mean() > 0.5
    np.testing.assert_allclose(sampled[inside], expected[inside], atol=1e-5)


def test_no_voxel_at_threshold_means_no_resampling_and_an_empty_mask():
    mapping = _mapping((10, 10, 10), (5, 5, 5), (0, 1, 2), (0.5, 0.5, 0.5), (0, 0, 0))
    result = probability_to_mask(np.full((5, 5, 5), 0.2, np.float32), mapping, 0.5)
    assert result.mask.shape == (10, 10, 10)
    assert result.mask.sum() == 0
    assert result.roi is None
    assert result.roi_probability is None
    with pytest.raises(ValueError, match="threshold"):
        probability_to_mask(np.zeros((5, 5, 5), np.float32), mapping, 0.0)
