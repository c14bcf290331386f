"""configs/ctpa_real.yaml: the plan rules applied to the published nnU-Net PE figures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pe_segmentation.config import load_config
from pe_segmentation.networks import build_network
from pe_segmentation.planning import Hardware, network_params, plan_patch
from pe_segmentation.planning.recipe import NOISE_HU, SHIFT_HU, TARGET_ITERATIONS, iterations_per_epoch
from pe_segmentation.planning.rules import NETWORK
from pe_segmentation.training.builders import build_loss_function

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "ctpa_real.yaml"


@pytest.fixture(scope="module")
def config():
    return load_config(RECIPE)


def test_it_holds_the_published_spacing_and_normalisation(config):
    pre = config.preprocessing
    assert pre.spacing == (0.74, 0.74, 1.0)  # nnU-Net's 1.0 x 0.74 x 0.74 (z, y, x) along R, A, S
    norm = pre.normalization
    assert (norm.scheme, norm.clip, norm.mean, norm.std) == ("ct_foreground", (-195.0, 305.0), 37.0, 92.0)
    assert config.augmentation.shift_intensity == pytest.approx(SHIFT_HU / 92, abs=1e-4)
    assert config.augmentation.noise_std == pytest.approx(NOISE_HU / 92, abs=1e-4)
    assert (config.schedule.decay, config.optimizer.name) == ("poly", "sgd")


def test_its_patch_batch_and_network_are_the_rules_on_an_80_gb_gpu(config):
    planned = plan_patch((473, 351, 350), config.preprocessing.spacing, Hardware(80.0), cases=430)
    assert config.patch.patch_size == planned.patch == (288, 288, 224)
    assert config.training.batch_size == planned.batch_size == 2
    assert config.model.name == NETWORK
    assert dict(config.model.params) == network_params(planned.depth, planned.width)
    assert config.training.epochs == math.ceil(TARGET_ITERATIONS / iterations_per_epoch(430, 2))


def test_its_network_builds_and_its_loss_takes_every_deep_supervision_output(config):
    network = build_network(config.model.name, **config.model.params)
    assert sum(p.numel() for p in network.parameters()) > 30_000_000
    kinds = [type(m).__name__ for m in network.modules()]
    # a residual encoder (the input level, 4 downsampling levels, the bottleneck) and a plain decoder of 5
    # levels, as nnU-Net's ResEnc U-Net (which stacks 1 to 6 residual blocks per level where DynUNet has one)
    assert kinds.count("UnetResBlock") == 6
    assert kinds.count("UnetUpBlock") == 5
    with torch.device("meta"):  # shapes only: a real pass at this width takes seconds
        shapes = build_network(config.model.name, **config.model.params)
    x = torch.zeros(1, 1, 64, 64, 64, device="meta")  # instance norm needs 2 voxels at the deepest level
    assert shapes.eval()(x).shape == (1, 2, 64, 64, 64)
    # in training, the final output and 3 deep-supervision heads (depth - 2), stacked
    assert shapes.train()(x).shape == (1, 4, 2, 64, 64, 64)
    outputs = torch.randn(1, 4, 2, 16, 16, 16)
    target = (torch.rand(1, 1, 16, 16, 16) > 0.9).float()
    loss_fn = build_loss_function(config)
    every = loss_fn(outputs, target)
    heads = [loss_fn.loss(outputs[:, i], target) for i in range(4)]
    assert every == pytest.approx(
        sum(w * h for w, h in zip([8 / 15, 4 / 15, 2 / 15, 1 / 15], heads, strict=True))
    )
