"""The lean preprocessing gives the whole chain's image bit for bit, from slabs of the resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_affine
from monai.utils import convert_to_numpy

from pe_segmentation.data.transforms import build_inference_transforms
from pe_segmentation.inference import preprocessing
from pe_segmentation.inference.preloaded import PreloadedReader
from pe_segmentation.inference.preprocessing import preprocess_volume, split_at_resampling

from .helpers import make_ct, tiny_config

GEOMETRIES = {
    "axial": make_affine((0.9, 1.1, 2.0)),
    "oblique": make_affine((0.9, 1.1, 2.0), euler_deg=(10.0, 20.0, 5.0)),
    "permuted": make_affine((0.9, 1.1, 2.0), euler_deg=(90.0, 0.0, 30.0)),
    "dicom-like": np.diag([-0.7, -0.7, 1.0, 1.0]),  # LPS: reorientation flips two axes
}


def whole_chain(config, volume):
    """The chain as it ran before, whole: float32 voxels from the reader, one Spacingd over everything."""
    chain = build_inference_transforms(config.preprocessing, reader=PreloadedReader(volume))
    before, after = split_at_resampling(chain)
    image = after(before({"image": "ct"}))["image"]
    return image.as_tensor(), convert_to_numpy(image.affine, dtype=np.float64)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("spacing", [(1.5, 1.5, 2.5), (0.7, 0.8, 1.0)])
def test_equals_the_whole_chain_bit_for_bit(monkeypatch, geometry, spacing):
    monkeypatch.setattr(preprocessing, "SLAB_PLANES", 7)  # several slabs, the last one short
    rows = []
    original = preprocessing._grid_rows
    monkeypatch.setattr(preprocessing, "_grid_rows", lambda *args: rows.append(args[2]) or original(*args))
    config = tiny_config(spacing)
    volume = make_ct(GEOMETRIES[geometry], shape=(60, 50, 40))
    expected, affine = whole_chain(config, volume)

    prepared = preprocess_volume(config.preprocessing, volume)

    assert prepared.tensor.dtype == torch.float32
    assert torch.equal(prepared.tensor, expected)
    np.testing.assert_array_equal(prepared.network_affine, affine)
    assert rows == list(range(0, expected.shape[1], 7))  # it ran slab by slab


def test_a_grid_left_as_it_is_runs_whole():
    config = tiny_config((1.0, 1.0, 1.0))
    volume = make_ct(np.eye(4), shape=(30, 28, 26))
    expected, _ = whole_chain(config, volume)
    assert torch.equal(preprocess_volume(config.preprocessing, volume).tensor, expected)
