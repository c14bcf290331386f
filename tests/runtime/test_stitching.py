"""The slab stitcher against MONAI's sliding window: the same windows, weights and order, so the same numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.inferers import SlidingWindowInferer

from pe_segmentation.runtime.stitching import SlabSlidingWindowInferer, open_slab_bytes


class Smooth(nn.Module):
    """A fixed 3x3x3 convolution with two output channels: window edges would show if stitching were off."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x)
        if condition is not None:  # a window's output depends on its condition, as the territory's does
            out = out + condition.float().mean()
        return out


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "batch"),
    [
        ((37, 29, 23), (16, 12, 10), 0.25, 1),
        ((37, 29, 23), (16, 12, 10), 0.5, 3),  # overlap 0.5: the slab carries over more planes than it closes
        ((10, 29, 23), (16, 12, 10), 0.25, 2),  # thinner than a window along the slab axis: padded like MONAI
        ((16, 12, 10), (16, 12, 10), 0.25, 2),  # one window
    ],
)
def test_equals_monai_bit_for_bit(shape, roi, overlap, batch):
    torch.manual_seed(1)
    image = torch.rand(1, 1, *shape)
    network = Smooth().eval()
    with torch.no_grad():
        expected = SlidingWindowInferer(roi, batch, overlap, mode="gaussian")(image, network)
        got = SlabSlidingWindowInferer(roi, batch, overlap)(image, network)
    assert got.shape == expected.shape == (1, 2, *shape)
    assert torch.equal(got, torch.as_tensor(expected))


def test_condition_activation_and_a_float16_view_as_output():
    torch.manual_seed(2)
    image = torch.rand(1, 1, 30, 20, 20)
    condition = (torch.rand(1, 1, 30, 20, 20) > 0.7).to(torch.uint8)
    network = Smooth().eval()
    with torch.no_grad():
        expected = SlidingWindowInferer((12, 12, 12), 2, 0.25, mode="gaussian")(
            image, network, condition=condition
        )
        big = torch.full((1, 2, 34, 20, 20), 7.0, dtype=torch.float16)
        SlabSlidingWindowInferer((12, 12, 12), 2, 0.25, activation=torch.sigmoid, output_dtype=torch.float16)(
            image, network, condition=condition, out=big[:, :, 2:32]
        )
    assert torch.equal(big[:, :, :2], torch.full((1, 2, 2, 20, 20), 7.0, dtype=torch.float16))  # untouched
    # float16 holds a probability to 2^-11 relative: within 5e-4 of the float32 result
    assert (big[:, :, 2:32].float() - torch.sigmoid(torch.as_tensor(expected))).abs().max() < 5e-4


def test_open_slab_is_one_window_thick():
    # one float32 sum and one weight per voxel of a 96-plane slab of a 335 x 245 x 400 grid
    assert open_slab_bytes((335, 245, 400), (96, 96, 96), 1) == 96 * 245 * 400 * 4 * 2
    assert open_slab_bytes((50, 40, 30), (96, 96, 96), 2) == 96 * 96 * 96 * 4 * 3  # padded to a window


def test_refuses_a_batch_of_volumes():
    with pytest.raises(ValueError, match="expected one volume"):
        SlabSlidingWindowInferer((8, 8, 8))(torch.zeros(2, 1, 8, 8, 8), nn.Identity())
