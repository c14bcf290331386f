"""Shared blocks: attention gates gate, recurrent units recur, padding round-trips, norms resolve."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pe_segmentation.networks import AttentionGate, AttentionUNet, R2UNet, RecurrentConv, UNet
from pe_segmentation.networks.blocks import ConvBlock, InstanceNorm, RecurrentResidualBlock, make_norm
from pe_segmentation.networks.padding import check_divisible, crop_to, pad_to_multiple


def _hand_set_gate() -> AttentionGate:
    """A 2D gate with coefficients ``sigmoid(relu(g) - 2)`` on g's grid: W_x = 0, W_g = 1, psi = 1, b = -2."""
    gate = AttentionGate(spatial_dims=2, x_channels=1, g_channels=1, inter_channels=1)
    with torch.no_grad():
        gate.theta_x.weight.zero_()
        gate.phi_g.weight.fill_(1.0)
        gate.phi_g.bias.zero_()
        gate.psi.weight.fill_(1.0)
        gate.psi.bias.fill_(-2.0)
    return gate


def test_attention_coefficients_follow_the_gating_signal():
    gate = _hand_set_gate()
    x = torch.full((1, 1, 8, 8), 3.0)
    g = torch.full((1, 1, 4, 4), -10.0)
    g[..., :2] = 10.0  # left half of the coarse grid "attends", right half does not
    alpha = gate.coefficients(x, g)
    assert alpha.shape == (1, 1, 8, 8)
    high, low = 1 / (1 + math.exp(-8.0)), 1 / (1 + math.exp(2.0))  # sigmoid(10 - 2), sigmoid(0 - 2)
    # columns far from the boundary keep the coarse value exactly; bilinear resampling blends only at the edge
    torch.testing.assert_close(alpha[..., :3], torch.full((1, 1, 8, 3), high))
    torch.testing.assert_close(alpha[..., 5:], torch.full((1, 1, 8, 3), low))
    coarse = torch.where(g > 0, torch.tensor(high), torch.tensor(low))
    torch.testing.assert_close(
        alpha, F.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    )
    # the gate's output is the skip scaled by its coefficients: attended voxels pass, others are suppressed
    out = gate(x, g)
    torch.testing.assert_close(out, x * alpha)
    assert out[..., 0].min() > 2.99
    assert out[..., -1].max() < 0.36


def test_attention_gate_can_close_completely():
    gate = _hand_set_gate()
    with torch.no_grad():
        gate.psi.bias.fill_(-40.0)
    x = torch.randn(1, 1, 6, 6)
    assert gate(x, torch.randn(1, 1, 3, 3)).abs().max() < 1e-12


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gates_inside_attention_unet_scale_the_skips(spatial_dims):
    torch.manual_seed(0)
    net = AttentionUNet(spatial_dims=spatial_dims, base_channels=4, depth=2).eval()
    gates = [m for m in net.modules() if isinstance(m, AttentionGate)]
    assert len(gates) == 2  # one per skip connection
    seen = []

    def record(module, inputs, output):
        seen.append((module, inputs[0], inputs[1], output))

    handles = [gate.register_forward_hook(record) for gate in gates]
    with torch.no_grad():
        net(torch.randn(1, 1, *([16] * spatial_dims)))
    for handle in handles:
        handle.remove()
    assert len(seen) == 2
    for gate, skip, signal, output in seen:
        assert signal.shape[2:] == tuple(
            s // 2 for s in skip.shape[2:]
        )  # gating signal from one level coarser
        alpha = gate.coefficients(skip, signal)
        assert alpha.shape == (1, 1, *skip.shape[2:])
        assert alpha.min() > 0
        assert alpha.max() < 1
        assert alpha.std() > 1e-4  # spatially varying, not a constant scale
        torch.testing.assert_close(output, skip * alpha)
        # the coefficients depend on the gating signal, not only on the skip
        assert not torch.allclose(gate.coefficients(skip, torch.randn_like(signal)), alpha)


def test_recurrent_conv_applies_shared_weights_t_plus_one_times():
    torch.manual_seed(0)
    rcl = RecurrentConv(spatial_dims=2, channels=3, recurrence=2, norm="batch").eval()
    calls = []
    rcl.conv.register_forward_hook(lambda m, i, o: calls.append(1))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out = rcl(x)
        f = rcl.conv
        expected = f(x + f(x + f(x)))  # h0 = f(x), h1 = f(x + h0), h2 = f(x + h1)
    assert len(calls) == 3 + 3  # three in forward, three in the hand unrolling
    torch.testing.assert_close(out, expected)


def test_recurrence_adds_no_parameters_and_r2unet_uses_recurrent_blocks():
    def count(module):
        return sum(p.numel() for p in module.parameters())

    t1 = RecurrentResidualBlock(3, 4, 8, recurrence=1)
    t3 = RecurrentResidualBlock(3, 4, 8, recurrence=3)
    assert count(t1) == count(t3)
    r2 = R2UNet(spatial_dims=2, base_channels=4, depth=2, recurrence=3)
    plain = UNet(spatial_dims=2, base_channels=4, depth=2)
    assert sum(isinstance(m, RecurrentResidualBlock) for m in r2.modules()) == 5  # 3 encoder + 2 decoder
    assert not any(isinstance(m, ConvBlock) for m in r2.modules())
    assert all(m.recurrence == 3 for m in r2.modules() if isinstance(m, RecurrentConv))
    assert sum(isinstance(m, ConvBlock) for m in plain.modules()) == 5


def test_default_width_is_half_the_seed_unet():
    net = UNet(spatial_dims=3)
    widths = [stage.block.conv_0.conv.out_channels for stage in net.encoder]
    assert widths == [32, 64, 128, 256, 512]


def test_pad_and_crop_round_trip():
    x = torch.randn(1, 2, 9, 16, 5)
    padded = pad_to_multiple(x, 8)
    assert padded.shape == (1, 2, 16, 16, 8)
    assert torch.equal(padded[..., :9, :, :5], x)
    assert padded[..., 9:, :, :].abs().sum() == 0
    assert padded[..., 5:].abs().sum() == 0
    assert torch.equal(crop_to(padded, [9, 16, 5]), x)
    assert pad_to_multiple(x, 1) is x  # nothing to pad: the input itself, no copy
    # stacked deep-supervision output (B, N, C, *spatial): only the trailing dims are cropped
    assert crop_to(torch.zeros(1, 3, 2, 16, 16, 8), [9, 16, 5]).shape == (1, 3, 2, 9, 16, 5)


def test_unpadded_network_names_the_sizes_that_work():
    net = UNet(spatial_dims=2, base_channels=4, depth=3, pad_input=False)
    assert net(torch.randn(1, 1, 16, 24)).shape == (1, 2, 16, 24)
    with pytest.raises(ValueError, match=r"multiple of 8 .* e\.g\. 16 or 24 instead of 17"):
        net(torch.randn(1, 1, 17, 24))
    with pytest.raises(ValueError, match="pad_input=True"):
        check_divisible([32, 30], 4)


@pytest.mark.parametrize(
    ("norm", "channels", "kind", "groups"),
    [
        ("batch", 16, torch.nn.BatchNorm3d, None),
        ("instance", 16, InstanceNorm, 16),  # one channel per group
        ("group", 32, torch.nn.GroupNorm, 8),
        ("group", 12, torch.nn.GroupNorm, 4),  # gcd(8, 12): tiny widths stay valid
        (("group", {"num_groups": 2}), 8, torch.nn.GroupNorm, 2),  # a MONAI spec passes through
    ],
)
def test_make_norm(norm, channels, kind, groups):
    layer = make_norm(norm, 3, channels)
    assert type(layer) is kind
    if groups is not None:
        assert layer.num_groups == groups
    assert make_norm("none", 3, channels) is None


@pytest.mark.parametrize(
    ("norm", "kind"),
    [("batch", torch.nn.BatchNorm3d), ("instance", InstanceNorm), ("group", torch.nn.GroupNorm)],
)
def test_norm_choice_reaches_the_layers(norm, kind):
    net = UNet(spatial_dims=3, base_channels=8, depth=1, norm=norm)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d | torch.nn.GroupNorm)]
    assert len(norms) == 6  # two per block; two encoder blocks and one decoder block
    assert all(type(m) is kind for m in norms)
    # the convolution before a norm has no bias (the norm's shift makes it redundant)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3, 3, 3)]
    assert all(c.bias is None for c in convs)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_instance_norm_equals_torch_instance_norm_on_both_paths(requires_grad):
    torch.manual_seed(0)
    norm = InstanceNorm(6)
    reference = torch.nn.InstanceNorm3d(6, affine=True)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    reference.load_state_dict(norm.state_dict())  # the same parameters, no extra buffers
    x = (torch.randn(2, 6, 5, 6, 7) * 3 + 1).requires_grad_(requires_grad)  # grad: instance_norm path
    torch.testing.assert_close(norm(x), reference(x), rtol=1e-5, atol=1e-5)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        out = norm(x_cl)  # inference path keeps the channels-last layout that torch's InstanceNorm gives up
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out, reference(x_cl), rtol=1e-5, atol=1e-5)


def test_unknown_norm_is_rejected():
    with pytest.raises(ValueError, match="batch, instance, group, none"):
        make_norm("layer", 3, 8)
