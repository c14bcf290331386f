"""The plan rules: memory traced from the network, patch and batch from a GPU's memory, worked out by hand."""

from __future__ import annotations

import pytest
import torch

from pe_segmentation.errors import ConfigError
from pe_segmentation.networks import build_network
from pe_segmentation.planning import (
    Hardware,
    NetworkMemory,
    network_params,
    plan_patch,
    saved_activation_bytes,
)
from pe_segmentation.planning.memory import PEAK_FACTOR
from pe_segmentation.planning.rules import depth_for, initial_patch, round_up, traced_memory


def test_the_trace_counts_each_saved_storage_once_and_no_weights():
    with torch.device("meta"):
        conv_relu = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.ReLU())
        two_convs = torch.nn.Sequential(*conv_relu, torch.nn.Conv3d(2, 3, 3, padding=1))
    # the first convolution saves its input (1 x 8^3 floats), ReLU its output (2 x 8^3)
    assert saved_activation_bytes(conv_relu, (1, 1, 8, 8, 8)) == (512 + 1024) * 4
    # the second convolution saves ReLU's output again: the same storage, counted once; batch 2
    assert saved_activation_bytes(two_convs, (2, 1, 8, 8, 8)) == 2 * (512 + 1024) * 4


def test_traced_activations_grow_with_the_voxels():
    memory = traced_memory(3, 8)
    with torch.device("meta"):
        network = build_network("monai_dynunet", **network_params(3, 8))
    per_voxel = saved_activation_bytes(network, (1, 1, 64, 96, 48)) / (64 * 96 * 48)
    assert per_voxel == pytest.approx(memory.activation_bytes_per_voxel, rel=1e-3)
    assert memory.parameters == sum(p.numel() for p in network.parameters())


def test_depth_halves_while_every_axis_keeps_four_voxels():
    assert depth_for((160, 160, 100)) == 4  # 100 / 16 = 6.25; 100 / 32 < 4
    assert depth_for((288, 288, 224)) == 5  # at most 5
    assert depth_for((24, 40, 40)) == 2  # 24 / 4 = 6; 24 / 8 < 4
    assert depth_for((8, 8, 8)) == 2  # at least 2 (deep supervision)
    assert round_up((200, 200, 100), 4) == (208, 208, 112)


def test_the_first_patch_is_a_cube_in_mm_within_the_median_image():
    # 256^3 voxels at 1 x 1 x 2 mm: 322.5 x 322.5 x 161.3 voxels, a 322.5 mm cube
    assert initial_patch((400, 400, 300), (1.0, 1.0, 2.0), 256**3) == (323, 323, 161)
    assert initial_patch((200, 200, 100), (1.0, 1.0, 2.0), 256**3) == (200, 200, 100)


def _flat(depth: int, width: int) -> NetworkMemory:
    """500 bytes per voxel under mixed precision at any depth, no weights."""
    return NetworkMemory(1000.0 / PEAK_FACTOR, 0)


def test_the_patch_shrinks_along_its_largest_share_until_a_batch_of_two_fits():
    # 4 GB: 3.2 GiB usable less 1 GiB reserved = 2.2 GiB. Start (208, 208, 112): 4.51 GiB for two patches.
    # Shares of the median (200, 200, 100), ties to the longest axis in mm, then the last: S to 96, A to 192,
    # R to 192, S to 80, A to 176, R to 176, A to 160: 500 B x 2 x 176 x 160 x 80 = 2.10 GiB.
    plan = plan_patch((200, 200, 100), (1.0, 1.0, 2.0), Hardware(4.0), cases=100, memory_of=_flat)
    assert plan.start == (208, 208, 112)
    assert plan.patch == (176, 160, 80)
    assert plan.shrunk == 7
    assert plan.depth == 4
    assert plan.batch_size == 2
    assert plan.step_bytes == pytest.approx(500 * 2 * 176 * 160 * 80)
    assert plan.budget_bytes == pytest.approx(2.2 * 2**30)


@pytest.mark.parametrize(("cases", "batch"), [(10, 2), (1000, 27)])
def test_the_batch_fills_the_memory_up_to_five_percent_of_the_set(cases: int, batch: int):
    # 80 GB: 63 GiB usable; a (208, 208, 112) patch takes 500 B x 4,845,568 = 2.257 GiB: 27 fit. Five percent
    # of 10 cases of 200 x 200 x 100 voxels is 0.4 patches (at least 2); of 1000 cases, 41.
    plan = plan_patch((200, 200, 100), (1.0, 1.0, 2.0), Hardware(80.0), cases=cases, memory_of=_flat)
    assert plan.patch == (208, 208, 112)
    assert plan.batch_size == batch


def test_the_cpu_plan_is_a_smaller_cube_without_a_memory_check():
    # 96^3 voxels at 1 x 1 x 2 mm: 121 x 121 x 60 voxels; depth 3 (60 / 8 >= 4); multiples of 8
    plan = plan_patch((400, 400, 300), (1.0, 1.0, 2.0), Hardware(None), cases=10, memory_of=_flat)
    assert plan.patch == (128, 128, 64)
    assert plan.batch_size == 2
    assert plan.width == 16
    assert plan.budget_bytes is None


def test_a_gpu_too_small_for_the_smallest_patch_is_refused():
    with pytest.raises(ConfigError, match=r"--gpu-memory 1.2: too small for a batch of 2 patches of 16\^3"):
        plan_patch((200, 200, 100), (1.0, 1.0, 2.0), Hardware(1.2), cases=10, memory_of=_flat)


@pytest.mark.parametrize("memory", [0, -8, float("nan")])
def test_gpu_memory_must_be_positive(memory: float):
    with pytest.raises(ConfigError, match="--gpu-memory: expected a positive number of GB"):
        Hardware(memory)
