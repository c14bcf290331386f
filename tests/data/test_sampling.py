"""Patch sampling without a background index list: the same indices, the same draws as MONAI's."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms.utils import map_binary_to_indices

from pe_segmentation.data.sampling import (
    BackgroundIndices,
    ForegroundIndicesd,
    RandOffsetPosNegCropd,
    foreground_indices,
)


def _label(shape=(12, 10, 8), fraction=0.05, seed=0, channels=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((channels, *shape)) < fraction).astype(np.float32)


@pytest.mark.parametrize(
    "case",
    ["sparse", "dense", "empty", "full", "first_and_last", "two_channels"],
)
def test_indices_equal_monai_map_binary_to_indices(case):
    label = {
        "sparse": _label(fraction=0.02),
        "dense": _label(fraction=0.7),
        "empty": np.zeros((1, 12, 10, 8), np.float32),
        "full": np.ones((1, 12, 10, 8), np.float32),
        "first_and_last": np.pad(np.ones((1, 1, 1, 1), np.float32), ((0, 0), (0, 11), (0, 9), (0, 7)))
        + np.pad(np.ones((1, 1, 1, 1), np.float32), ((0, 0), (11, 0), (9, 0), (7, 0))),
        "two_channels": _label(fraction=0.05, channels=2),
    }[case]
    fg_monai, bg_monai = (np.asarray(i) for i in map_binary_to_indices(torch.as_tensor(label)))
    fg = foreground_indices(MetaTensor(label))
    np.testing.assert_array_equal(fg, fg_monai)
    bg = BackgroundIndices(fg, label[0].size)
    assert len(bg) == len(bg_monai)
    np.testing.assert_array_equal([bg[k] for k in range(len(bg))], bg_monai)
    if len(bg):
        assert bg[-1] == bg_monai[-1]
    with pytest.raises(IndexError):
        bg[len(bg)]


def test_background_indices_check_their_input():
    with pytest.raises(ValueError, match="sorted"):
        BackgroundIndices(np.array([5, 3]), 10)
    with pytest.raises(ValueError, match="lie in"):
        BackgroundIndices(np.array([3, 10]), 10)


def test_cached_foreground_gives_the_draws_of_monais_index_lists():
    """Seeded, the crop centres are the same whether the sampler gets MONAI's two index arrays, computes the
    indices itself, or takes the foreground cached by ForegroundIndicesd: seeded runs are unchanged."""
    label = MetaTensor(torch.as_tensor(_label(shape=(30, 26, 20), fraction=0.01, seed=3)))
    image = MetaTensor(torch.rand(1, 30, 26, 20))
    fg_monai, bg_monai = map_binary_to_indices(label)
    cached = ForegroundIndicesd("label")({"image": image, "label": label})["label_fg_indices"]
    centres = []
    for fg, bg in ((fg_monai, bg_monai), (None, None), (cached, None)):
        crop = RandOffsetPosNegCropd(("image", "label"), "label", (8, 8, 8), pos=0.5, neg=0.5, num_samples=50)
        crop.set_random_state(11)
        crop.randomize(label, fg, bg)
        centres.append([tuple(int(v) for v in c) for c in crop.cropper.centers])
    assert centres[0] == centres[1] == centres[2]


def test_cached_indices_survive_the_disk_cache_format():
    data = ForegroundIndicesd("label")({"label": MetaTensor(torch.as_tensor(_label(seed=5)))})
    buffer = io.BytesIO()
    torch.save({"label_fg_indices": data["label_fg_indices"]}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["label_fg_indices"]
    assert torch.equal(loaded, data["label_fg_indices"])
    assert loaded.dtype == torch.int64
