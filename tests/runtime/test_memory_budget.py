"""The memory budget's parts: parsing, the activation measurement, the estimates and the planner's choices."""

from __future__ import annotations

import pytest
import torch

from pe_segmentation.errors import ConfigError, MemoryBudgetError
from pe_segmentation.runtime import memory_budget
from pe_segmentation.runtime.memory_budget import (
    GIB,
    OVERHEAD_SHARE,
    MemoryEstimate,
    budget_bytes,
    default_budget_bytes,
    network_stage_bytes,
    plan_memory,
)
from pe_segmentation.runtime.window_memory import (
    WindowActivation,
    measure_call_bytes,
    measure_window_activation,
    probe_sizes,
)


def test_budget_in_gigabytes_and_refusals():
    assert budget_bytes(1.5) == int(1.5 * 2**30)
    for bad in (0, -1, float("nan"), "lots"):
        with pytest.raises(ConfigError, match="--memory-budget"):
            budget_bytes(bad)


@pytest.mark.parametrize(("available", "margin"), [(20 * GIB, 2 * GIB), (2 * GIB, GIB // 2)])
def test_default_budget_is_what_is_held_plus_available_less_a_margin(monkeypatch, available, margin):
    # the margin: 10% of the available memory, at least 0.5 GB
    monkeypatch.setattr(memory_budget, "available_memory_bytes", lambda: available)
    monkeypatch.setattr(memory_budget, "process_rss_bytes", lambda: GIB)
    assert budget_bytes(None) == default_budget_bytes() == GIB + available - margin


def test_live_bytes_counts_what_ops_make_and_free():
    x = torch.zeros(1000)  # 4000 bytes, made before: not counted

    def call(t):
        a = t.repeat(10)  # 40000 bytes
        b = a + 1  # 40000 more while a lives
        del a
        return b.sum()

    assert measure_call_bytes(call, x) == 80000


def test_window_activation_fits_fixed_and_per_voxel_bytes():
    weights = torch.zeros(250)  # stands for what a call keeps whatever the window: 1000 bytes

    def call(x):
        copy = weights * 2  # 1000 bytes, fixed
        wide = x.repeat(1, 10, 1, 1, 1)  # 10 float32 channels: 40 bytes per voxel
        return wide.sum() + copy.sum()

    measured = measure_window_activation(call, 1, (96, 96, 96), torch.device("cpu"))
    assert measured.fixed_bytes == pytest.approx(1000, abs=64)
    assert measured.bytes_per_voxel == pytest.approx(40.0, rel=1e-3)
    tensors = 1000 + 40 * 2 * 96**3
    assert measured.for_batch(2, (96, 96, 96)) == pytest.approx(tensors * measured.rss_factor, rel=1e-3)


def test_probe_sizes_are_small_multiples_of_16():
    assert probe_sizes((96, 96, 96)) == [(32, 32, 32), (48, 48, 48)]
    assert probe_sizes((64, 128, 64)) == [(32, 48, 32), (32, 64, 32)]
    assert probe_sizes((16, 16, 16)) == []  # too small to scale down: measured whole


def test_network_stage_of_the_shipped_recipe_on_a_ctpa_grid():
    activation = WindowActivation(45 * 2**20, 420.0, 1.0)
    stage = network_stage_bytes((335, 245, 400), (96, 96, 96), 1, activation, 2)
    grid = 335 * 245 * 400
    assert stage.parts["output map"] == 4 * grid
    assert stage.parts["territory"] == grid
    assert stage.parts["open slab"] == 96 * 245 * 400 * 8  # one float32 sum and one weight, 96 planes
    assert stage.parts["activations"] == int(45 * 2**20 + 420.0 * 2 * 96**3)
    half = network_stage_bytes((335, 245, 400), (96, 96, 96), 1, activation, 2, torch.float16)
    assert half.parts["output map"] == 2 * grid
    assert "activations" not in network_stage_bytes((335, 245, 400), (96, 96, 96), 1, None, 2).parts


def test_estimate_total_adds_the_allocator_share_to_buffers_only():
    estimate = MemoryEstimate("network", {"output map": 1000, "activations": 5000})
    assert estimate.total == int(6000 + OVERHEAD_SHARE * 1000)
    assert estimate.largest().startswith("activations")


def _stages(batch, dtype):
    # 1 GB per window in the batch, 1 GB for a float32 map, 0.5 GB for a float16 one
    output = GIB if dtype == torch.float32 else GIB // 2
    return [
        MemoryEstimate("network", {"activations": batch * GIB, "output map": 0}),
        MemoryEstimate("postprocess", {"output map": output}),
    ]


def _peak(batch, dtype):
    return max(e.total for e in _stages(batch, dtype))


@pytest.mark.parametrize(
    ("budget", "batch", "dtype"),
    [
        (10 * GIB, 4, torch.float32),  # everything fits: the batch asked for, exact stitching
        (2 + 2 * GIB + _peak(2, torch.float32), 2, torch.float32),  # a smaller batch first
        (2 * GIB + _peak(1, torch.float32) - 1, 1, torch.float16),  # then float16 stitching
    ],
)
def test_plan_takes_the_largest_batch_then_float16(budget, batch, dtype):
    plan = plan_memory(2 * GIB, budget, 4, _stages)
    assert (plan.sw_batch_size, plan.output_dtype) == (batch, dtype)
    assert plan.peak_bytes <= budget
    assert plan.summary() == {"sw_batch_size": batch, "stitch_dtype": str(dtype).replace("torch.", "")}


def test_plan_refuses_in_one_line_when_nothing_fits():
    with pytest.raises(MemoryBudgetError, match=r"too small for case_7: it needs about 3\.00 GB") as error:
        plan_memory(2 * GIB, 3 * GIB - 1, 4, _stages, what="case_7")
    assert "\n" not in str(error.value)
    assert error.value.exit_code == 7
