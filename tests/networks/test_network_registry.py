"""The network registry: names, aliases, parameter translation to MONAI, and one-line errors."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DynUNet, SegResNet, SwinUNETR
from monai.networks.nets import UNet as MonaiUNet

from pe_segmentation.errors import ConfigError
from pe_segmentation.networks import (
    AttentionUNet,
    MonaiNetwork,
    NestedUNet,
    R2AttentionUNet,
    R2UNet,
    UNet,
    available_networks,
    build_network,
    network_parameters,
)

REQUIRED = {
    "unet",
    "r2unet",
    "attention_unet",
    "r2_attention_unet",
    "nested_unet",
    "monai_unet",
    "monai_attention_unet",
    "monai_unetpp",
    "monai_segresnet",
    "monai_dynunet",
    "monai_swinunetr",
}


def test_registry_lists_our_networks_and_monais():
    assert set(available_networks()) == REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_network_takes_the_common_parameters(name):
    params = network_parameters(name)
    assert {"spatial_dims", "in_channels", "out_channels", "base_channels", "dropout"} <= set(params)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("unet", UNet),
        ("r2unet", R2UNet),
        ("attention_unet", AttentionUNet),
        ("r2_attention_unet", R2AttentionUNet),
        ("nested_unet", NestedUNet),
        ("UNet++", NestedUNet),
        ("unetpp", NestedUNet),
        ("R2-Attention-UNet", R2AttentionUNet),
    ],
)
def test_names_and_aliases(name, cls):
    net = build_network(name, base_channels=4, depth=1)
    assert type(net) is cls


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_defaults_are_3d_one_input_two_classes(name):
    net = build_network(name)
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert first_conv.in_channels == 1
    last_conv = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)][-1]
    assert last_conv.out_channels == 2


def test_our_defaults_are_base_32_depth_4():
    net = build_network("unet")
    assert net.depth == 4
    assert net.multiple == 16
    assert net.head.in_channels == 32


def test_monai_unet_translation():
    net = build_network("monai_unet", spatial_dims=2, in_channels=3, out_channels=4, base_channels=8, depth=3)
    assert isinstance(net, MonaiNetwork)
    assert isinstance(net.net, MonaiUNet)
    assert list(net.net.channels) == [8, 16, 32, 64]
    assert list(net.net.strides) == [2, 2, 2]
    assert (net.net.in_channels, net.net.out_channels, net.net.dimensions) == (3, 4, 2)
    assert net.multiple == 8


def test_monai_dynunet_kernels_and_strides_from_depth():
    net = build_network("monai_dynunet", depth=4, base_channels=32)
    assert isinstance(net.net, DynUNet)
    assert net.net.kernel_size == [3] * 5
    assert net.net.strides == [1, 2, 2, 2, 2]
    assert net.net.upsample_kernel_size == [2] * 4
    assert net.net.filters == [32, 64, 128, 256, 320]  # capped at 320, as nnU-Net does


def test_monai_segresnet_and_swinunetr_translation():
    seg = build_network("monai_segresnet", base_channels=8, depth=3, norm="group")
    assert isinstance(seg.net, SegResNet)
    assert seg.net.init_filters == 8
    assert seg.net.blocks_down == (1, 2, 2, 4)
    swin = build_network("monai_swinunetr", spatial_dims=2, base_channels=12)
    assert isinstance(swin.net, SwinUNETR)
    assert swin.multiple == 32


def test_native_monai_parameters_pass_through():
    net = build_network("monai_unet", base_channels=4, depth=2, num_res_units=0, kernel_size=5)
    assert net.net.num_res_units == 0
    assert net.net.kernel_size == 5


def test_unknown_name_suggests_and_lists():
    with pytest.raises(ConfigError) as info:
        build_network("unte")
    message = str(info.value)
    assert "did you mean 'unet'?" in message
    assert "available: unet, r2unet, attention_unet" in message
    assert "monai_swinunetr" in message
    assert "\n" not in message


def test_unknown_parameter_lists_accepted_ones():
    with pytest.raises(ConfigError) as info:
        build_network("r2unet", dropuot=0.1)
    message = str(info.value)
    assert "unknown parameter(s) dropuot (did you mean 'dropout'?)" in message
    assert "accepted: act, base_channels, depth, dropout" in message
    assert "recurrence" in message


def test_translated_monai_arguments_are_not_accepted_twice():
    with pytest.raises(ConfigError, match=r"unknown parameter.*channels"):
        build_network("monai_unet", channels=(4, 8))


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("unet", {"depth": 0}, "depth"),
        ("unet", {"spatial_dims": 4}, "spatial_dims must be 2 or 3"),
        ("unet", {"norm": "layer"}, "norm must be one of batch, instance, group, none"),
        ("unet", {"upsample": "nearest"}, "upsample must be one of deconv, nontrainable, pixelshuffle"),
        ("unet", {"dropout": 1.5}, "dropout must be in"),
        ("r2unet", {"recurrence": 0}, "recurrence"),
        ("monai_swinunetr", {"base_channels": 16}, "divisible by 12"),
        ("monai_unet", {"norm": "none"}, "need a normalisation"),
    ],
)
def test_bad_values_raise_config_error(name, params, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        build_network(name, **params)
    assert str(info.value).startswith(f"network '{name}': ")
    assert "\n" not in str(info.value)
