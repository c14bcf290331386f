"""Every registered network, 2D and 3D: shapes (odd sizes too), gradients, determinism, TorchScript export."""

from __future__ import annotations

import pytest
import torch

from pe_segmentation.networks import available_networks, export_torchscript, load_torchscript

NAMES = available_networks()
DIMS = [2, 3]
# MONAI's SwinUNETR does not compile with torch.jit.script (keyword-only args, einops); it is traced instead
TRACED = {"monai_swinunetr"}
# odd sizes, a multiple of no network's 2**depth; the first axis pads to 64 so that SwinUNETR's 1/32
# bottleneck keeps more than one voxel (instance norm refuses a single voxel in training mode)
ODD = {2: (33, 19), 3: (33, 17, 19)}


def _input(spatial_dims: int, batch: int = 1, size: tuple[int, ...] | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, 1, *(size or ODD[spatial_dims]), generator=generator)


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_matches_odd_input(tiny_network, name, spatial_dims):
    net = tiny_network(name, spatial_dims, out_channels=3).eval()
    x = _input(spatial_dims, batch=2)
    with torch.no_grad():
        y = net(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == (2, 3, *x.shape[2:])
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(tiny_network, name, spatial_dims):
    net = tiny_network(name, spatial_dims).train()
    x = _input(spatial_dims)
    y = net(x)
    # a non-trivial target so that no part of the output is ignored by the loss
    (y * torch.randn_like(y)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    nonfinite = [n for n, p in net.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not nonfinite
    if not name.startswith("monai_"):
        # ours put no bias before a normalisation, so every gradient is non-zero somewhere
        zero = [n for n, p in net.named_parameters() if p.grad.abs().sum() == 0]
        assert not zero, f"all-zero gradient for {zero}"


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("name", ["unet", "r2unet", "attention_unet", "r2_attention_unet", "nested_unet"])
def test_eval_mode_is_deterministic_despite_dropout(tiny_network, name, spatial_dims):
    net = tiny_network(name, spatial_dims, dropout=0.5)
    x = _input(spatial_dims)
    with torch.no_grad():
        train_a, train_b = net.train()(x), net(x)
        eval_a, eval_b = net.eval()(x), net(x)
    assert not torch.equal(train_a, train_b)  # dropout is active in training mode ...
    assert torch.equal(eval_a, eval_b)  # ... and off in eval mode


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_repeats_exactly(tiny_network, name, spatial_dims):
    net = tiny_network(name, spatial_dims).eval()
    x = _input(spatial_dims)
    with torch.no_grad():
        assert torch.equal(net(x), net(x.clone()))


@pytest.mark.parametrize("name", NAMES)
def test_torchscript_export_reload_gives_same_output(tiny_network, name, tmp_path):
    spatial_dims = 3
    net = tiny_network(name, spatial_dims).eval()
    x = _input(spatial_dims)
    path = tmp_path / f"{name}.pt"
    method = export_torchscript(net, path, example_input=x)
    assert method == ("trace" if name in TRACED else "script")
    loaded = load_torchscript(path)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)
        if method == "script":
            # a scripted network keeps its padding logic: another odd size still works after reloading
            other = _input(spatial_dims, size=(35, 18, 21))
            torch.testing.assert_close(loaded(other), net(other), rtol=1e-5, atol=1e-5)
