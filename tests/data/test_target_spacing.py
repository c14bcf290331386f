"""The target spacing rule (nnU-Net's), on spacings whose answer is worked out by hand, and header reading."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pe_segmentation.data.target_spacing import case_grid, target_spacing, training_set_spacing
from pe_segmentation.errors import InputDataError

CT_SHAPE = (512, 512, 300)


def test_isotropic_set_takes_the_median_of_each_axis():
    # medians by hand: x of (0.6, 0.7, 0.9) is 0.7; y of (0.6, 0.8, 0.9) 0.8; z of (0.8, 1.0, 1.25) 1.0
    spacings = [(0.7, 0.6, 1.0), (0.6, 0.8, 1.25), (0.9, 0.9, 0.8)]
    result = target_spacing(spacings, [CT_SHAPE] * 3)
    assert result.mm == pytest.approx((0.7, 0.8, 1.0))
    assert result.anisotropic_axis is None
    assert result.cases == 3


def test_even_count_takes_the_mean_of_the_middle_two():
    result = target_spacing([(1, 1, 1), (1, 1, 2), (1, 1, 3), (1, 1, 5)], [CT_SHAPE] * 4)
    assert result.mm == pytest.approx((1.0, 1.0, 2.5))


def test_anisotropic_set_takes_the_10th_percentile_of_the_slice_spacing():
    # 10 thick-slice series (few slices) and one thin: the z median 5.0 is > 3 x 0.7 and 100 x 3 < 512, so z takes
    # the 10th percentile of (1, 5 x 10): numpy's linear percentile at rank 0.1 x 10 = 1 -> the 2nd value, 5.0 ...
    spacings = [(0.7, 0.7, 1.0)] + [(0.7, 0.7, 5.0)] * 10
    shapes = [(512, 512, 400)] + [(512, 512, 100)] * 10
    assert target_spacing(spacings, shapes).mm == pytest.approx((0.7, 0.7, 5.0))
    # ... with 3 thin of 11 the 10th percentile is the 2nd smallest, 1.0 mm (the median stays 5.0)
    spacings = [(0.7, 0.7, 1.0)] * 3 + [(0.7, 0.7, 5.0)] * 8
    shapes = [(512, 512, 400)] * 3 + [(512, 512, 100)] * 8
    result = target_spacing(spacings, shapes)
    assert result.mm == pytest.approx((0.7, 0.7, 1.0))
    assert result.median_mm == pytest.approx((0.7, 0.7, 5.0))
    assert result.anisotropic_axis == 2
    assert "axis S takes the 10th percentile" in result.describe()


def test_anisotropic_spacing_without_few_slices_keeps_the_median():
    # z median 2.5 > 3 x 0.7, but 300 slices x 3 = 900 is not below 512: not anisotropic in voxels
    spacings = [(0.7, 0.7, 1.0), (0.7, 0.7, 2.5), (0.7, 0.7, 2.5)]
    result = target_spacing(spacings, [CT_SHAPE] * 3)
    assert result.mm == pytest.approx((0.7, 0.7, 2.5))
    assert result.anisotropic_axis is None


def test_threshold_is_strictly_more_than_three_times():
    # z median 1.5 = 3 x 0.5 exactly: the median is kept
    spacings = [(0.5, 0.5, 0.5), (0.5, 0.5, 1.5), (0.5, 0.5, 1.5)]
    assert target_spacing(spacings, [(512, 512, 100)] * 3).mm == pytest.approx((0.5, 0.5, 1.5))


def test_anisotropic_axis_never_finer_than_the_other_axes():
    # mixed: in-plane medians 0.8 (x) and 0.9 (y); z median 4.0 > 3 x 0.9; numpy's 10th percentile of
    # (0.5, 4, 4, 4) sits at rank 0.1 x 3 = 0.3: 0.5 + 0.3 x (4 - 0.5) = 1.55
    spacings = [(0.8, 0.9, 0.5)] + [(0.8, 0.9, 4.0)] * 3
    shapes = [(512, 512, 100)] * 4
    assert target_spacing(spacings, shapes).mm == pytest.approx((0.8, 0.9, 1.55))
    # a 10th percentile below the other axes' coarsest median (0.9) is raised to it
    spacings = [(0.8, 0.9, 0.3)] * 2 + [(0.8, 0.9, 4.0)] * 3
    result = target_spacing(spacings, [(512, 512, 100)] * 5)
    assert result.mm == pytest.approx((0.8, 0.9, 0.9))


def test_coarse_in_plane_axis_is_found_too():
    spacings = [(4.0, 0.5, 0.5), (4.0, 0.5, 0.5), (2.0, 0.5, 0.5)]
    result = target_spacing(spacings, [(40, 400, 400)] * 3)
    assert result.anisotropic_axis == 0
    assert result.mm == pytest.approx((2.0 + 0.2 * 2.0, 0.5, 0.5))  # 10th pct of (2, 4, 4): 2 + 0.2 x (4 - 2)


@pytest.mark.parametrize(
    ("spacings", "shapes", "message"),
    [
        ([], [], "one spacing of 3 values"),
        ([(1.0, 1.0)], [(1, 1)], "one spacing of 3 values"),
        ([(1.0, 1.0, 0.0)], [(1, 1, 1)], "positive"),
        ([(1.0, 1.0, 1.0)], [], "one shape per spacing"),
    ],
)
def test_refuses_bad_input(spacings, shapes, message):
    with pytest.raises(ValueError, match=message):
        target_spacing(spacings, shapes)


def _nifti(path: Path, affine: np.ndarray, shape: tuple[int, int, int]) -> str:
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=np.int16), affine), path)
    return str(path)


def test_case_grid_reads_the_header_in_ras_order(tmp_path):
    # voxel axes i, j, k run along S, R, A (a permuted, flipped grid): spacing 3, 1, 2 mm
    affine = np.array([[0, -1.0, 0, 0], [0, 0, 2.0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    spacing, shape = case_grid(_nifti(tmp_path / "p.nii.gz", affine, (4, 5, 6)))
    assert spacing == pytest.approx((1.0, 2.0, 3.0))
    assert shape == (5, 6, 4)


def test_training_set_spacing_of_files(tmp_path):
    items = [
        {"image": _nifti(tmp_path / f"c{i}.nii.gz", np.diag([s, s, z, 1.0]), (8, 8, 6))}
        for i, (s, z) in enumerate([(0.5, 1.0), (0.75, 2.0), (1.0, 1.5)])
    ]
    result = training_set_spacing(items)
    assert result.mm == pytest.approx((0.75, 0.75, 1.5))
    with pytest.raises(InputDataError):
        training_set_spacing([])
