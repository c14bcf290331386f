"""UNet++: deep-supervision outputs, pruned inference at a shallower column, and the MONAI counterparts."""

from __future__ import annotations

import pytest
import torch

from pe_segmentation.errors import ConfigError
from pe_segmentation.losses import DeepSupervisionLoss, build_loss
from pe_segmentation.networks import NestedUNet, build_network


def _net(spatial_dims: int = 2, depth: int = 3, **kwargs) -> NestedUNet:
    torch.manual_seed(0)
    # instance norm keeps no running statistics, so training- and eval-mode outputs are comparable
    return NestedUNet(spatial_dims=spatial_dims, base_channels=4, depth=depth, norm="instance", **kwargs)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_deep_supervision_returns_one_full_resolution_output_per_column(spatial_dims):
    net = _net(spatial_dims, depth=3, deep_supervision=True, out_channels=2).train()
    x = torch.randn(2, 1, *([21, 18, 11][:spatial_dims]))
    outputs = net(x)
    assert isinstance(outputs, list)
    assert len(outputs) == 3
    for out in outputs:
        assert out.shape == (2, 2, *x.shape[2:])
    # different heads on different columns: different predictions
    assert not torch.allclose(outputs[0], outputs[1])
    net.eval()
    with torch.no_grad():
        single = net(x)
    assert isinstance(single, torch.Tensor)
    torch.testing.assert_close(single, outputs[0].detach())  # eval returns the deepest (final) column


def test_shallower_inference_level_matches_its_head_and_skips_deep_nodes():
    net = _net(depth=3, deep_supervision=True)
    x = torch.randn(1, 1, 24, 20)
    with torch.no_grad():
        full = net.train()(x)  # [column 3, column 2, column 1]
        net.eval()
        for level in (1, 2, 3):
            net.set_inference_level(level)
            torch.testing.assert_close(net(x), full[3 - level])

    # pruning: at level 1 only X[0][0], X[1][0] and X[0][1] run, so the two deepest encoder stages stay idle
    ran = []
    for i, stage in enumerate(net.encoder):
        stage.register_forward_hook(lambda m, inp, out, i=i: ran.append(i))
    net.set_inference_level(1)
    with torch.no_grad():
        net(x)
    assert ran == [0, 1]


def test_inference_level_is_checked():
    with pytest.raises(ValueError, match="needs deep_supervision=True"):
        _net(depth=3, inference_level=2)
    with pytest.raises(ValueError, match=r"1\.\.3"):
        _net(depth=3, deep_supervision=True, inference_level=4)
    with pytest.raises(ConfigError, match="inference_level"):
        build_network("nested_unet", depth=2, inference_level=1)


def test_without_deep_supervision_there_is_one_head():
    net = _net(depth=3).train()
    assert len(net.heads) == 1
    out = net(torch.randn(1, 1, 16, 16))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 2, 16, 16)


def test_deep_supervision_loss_trains_every_head():
    net = _net(depth=3, deep_supervision=True).train()
    x = torch.randn(2, 1, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.8).long()
    loss = DeepSupervisionLoss(build_loss("dice_ce"))(net(x), target)
    loss.backward()
    for head in net.heads:
        assert head.weight.grad is not None
        assert head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("monai_unetpp", {"base_channels": 4, "deep_supervision": True}, "list4"),
        ("monai_dynunet", {"base_channels": 4, "depth": 3, "deep_supervision": True}, "stacked2"),
    ],
)
def test_monai_deep_supervision_outputs_feed_the_wrapper(name, params, expected):
    torch.manual_seed(0)
    net = build_network(name, spatial_dims=2, **params).train()
    x = torch.randn(2, 1, 23, 17)
    out = net(x)
    if expected == "list4":
        assert isinstance(out, list)
        assert len(out) == 4
        assert all(o.shape == (2, 2, 23, 17) for o in out)
    else:  # DynUNet stacks 1 + deep_supr_num heads: (B, heads, C, *spatial); depth 3 -> deep_supr_num 1
        assert isinstance(out, torch.Tensor)
        assert out.shape == (2, 2, 2, 23, 17)
    target = (torch.rand(2, 1, 23, 17) > 0.8).long()
    loss = DeepSupervisionLoss(build_loss("dice_ce"))(out, target)
    assert torch.isfinite(loss)
    loss.backward()
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 2, 23, 17)
