"""The artery territory in the predictor's steps: candidate clots outside it are dropped, windows without it
are not run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer

from pe_segmentation.inference.postprocess import drop_outside_territory
from pe_segmentation.inference.window_network import SKIPPED_LOG_ODDS, EmbolusLogit


def test_candidates_mostly_outside_the_territory_are_dropped_and_counted():
    probability = np.zeros((20, 20, 20), np.float32)
    territory = np.zeros((20, 20, 20), np.uint8)
    territory[:, :10] = 1
    probability[2:4, 2:4, 2:4] = 0.9  # 8 voxels, all inside: kept
    probability[2:4, 14:16, 2:4] = 0.8  # 8 voxels, all outside: dropped
    probability[10:12, 8:13, 10:12] = 0.95  # 20 voxels, 8 inside (40%): dropped
    probability[15:17, 7:12, 15:17] = 0.95  # 20 voxels, 12 inside (60%): kept
    probability[17, 17, 17] = 0.4  # below the threshold: no candidate, left alone
    dropped = drop_outside_territory(probability, territory, threshold=0.5)
    assert (dropped.count, dropped.voxels) == (2, 28)
    assert probability[2:4, 2:4, 2:4].min() == pytest.approx(0.9)
    assert probability[15:17, 7:12, 15:17].min() == pytest.approx(0.95)
    assert probability[2:4, 14:16, 2:4].max() == 0.0
    assert probability[10:12, 8:13, 10:12].max() == 0.0
    assert probability[17, 17, 17] == pytest.approx(0.4)
    assert drop_outside_territory(probability, territory, threshold=0.5).count == 0  # nothing left to drop


def test_territory_filter_checks_its_arguments():
    with pytest.raises(ValueError, match="shape"):
        drop_outside_territory(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), 0.5)
    with pytest.raises(ValueError, match="min_inside"):
        drop_outside_territory(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), 0.5, min_inside=0.0)


class _Counting(torch.nn.Module):
    """Two-class logits from the intensity; counts the windows it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return torch.cat([-x, x], dim=1)


def test_windows_without_territory_are_not_run_and_territory_voxels_keep_their_value():
    image = torch.linspace(-2, 2, 48 * 40 * 32).reshape(1, 1, 48, 40, 32)
    territory = torch.zeros_like(image, dtype=torch.uint8)
    territory[..., 4:14, 5:15, 3:12] = 1
    inferer = SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=3, overlap=0.25, mode="gaussian")

    every = EmbolusLogit(_Counting())
    reference = inferer(image, every)
    skipping_net = _Counting()
    skipping = EmbolusLogit(skipping_net)
    out = inferer(image, skipping, condition=territory)

    total = every.windows_run
    assert skipping.windows_run + skipping.windows_skipped == total
    assert skipping_net.seen == skipping.windows_run < total
    assert skipping.windows_skipped > total // 2
    inside = territory.bool()
    # a territory voxel lies only in windows that were run, so it is blended exactly as before
    torch.testing.assert_close(out[inside], reference[inside])
    far = (slice(None), slice(None), slice(36, 48), slice(28, 40), slice(24, 32))
    assert out[far].max() == pytest.approx(SKIPPED_LOG_ODDS)


def test_embolus_logit_with_an_empty_condition_runs_nothing():
    net = _Counting()
    wrapped = EmbolusLogit(net)
    x = torch.ones(2, 1, 4, 4, 4)
    out = wrapped(x, condition=torch.zeros(2, 1, 4, 4, 4, dtype=torch.uint8))
    assert net.seen == 0
    assert wrapped.windows_skipped == 2
    assert torch.all(out == SKIPPED_LOG_ODDS)
    wrapped.reset_counts()
    assert (wrapped.windows_run, wrapped.windows_skipped) == (0, 0)
