"""Learning-rate schedule: warmup from lr/10, cosine / poly / constant decay, per-iteration stepping, resume."""

from __future__ import annotations

import math

import pytest
import torch

from pe_segmentation.config import ScheduleConfig
from pe_segmentation.errors import ConfigError
from pe_segmentation.training.schedule import WarmupDecayLR, build_scheduler, lr_at

LR = 1e-3
CURVE = {"base_lr": LR, "total_iterations": 110, "warmup_iterations": 10, "warmup_start_factor": 0.1}


@pytest.mark.parametrize(
    ("iteration", "expected"),
    [(0, 1e-4), (5, 5.5e-4), (9, 1e-4 + 0.9e-3 * 0.9), (10, 1e-3), (60, 5e-4), (110, 0.0), (500, 0.0)],
)
def test_warmup_then_cosine_at_chosen_iterations(iteration, expected):
    assert lr_at(iteration, decay="cosine", **CURVE) == pytest.approx(expected, abs=1e-12)


def test_poly_and_constant_decay_and_min_lr():
    assert lr_at(60, decay="poly", poly_power=0.9, **CURVE) == pytest.approx(LR * 0.5**0.9)
    assert lr_at(85, decay="poly", poly_power=2.0, **CURVE) == pytest.approx(LR * 0.25**2)
    assert lr_at(100, decay="constant", **CURVE) == LR
    assert lr_at(3, decay="constant", **CURVE) == pytest.approx(LR * (0.1 + 0.9 * 0.3))
    assert lr_at(60, decay="cosine", min_lr=1e-4, **CURVE) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert lr_at(110, decay="cosine", min_lr=1e-4, **CURVE) == pytest.approx(1e-4)
    no_warmup = {**CURVE, "warmup_iterations": 0}
    assert lr_at(0, decay="cosine", **no_warmup) == LR


def _optimizer(lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_scheduler_steps_per_iteration_along_lr_at():
    optimizer = _optimizer()
    scheduler = WarmupDecayLR(optimizer, total_iterations=110, warmup_iterations=10, decay="cosine")
    used = []
    for _ in range(110):
        used.append(optimizer.param_groups[0]["lr"])  # the rate this iteration's optimizer step uses
        optimizer.step()
        scheduler.step()
    assert used == pytest.approx([lr_at(i, decay="cosine", **CURVE) for i in range(110)], abs=1e-15)
    assert used[0] == pytest.approx(LR / 10)


def test_scheduler_state_resumes_the_same_curve():
    optimizer = _optimizer()
    scheduler = WarmupDecayLR(optimizer, total_iterations=50, warmup_iterations=7, decay="poly")
    for _ in range(13):
        optimizer.step()
        scheduler.step()
    saved_opt, saved_sched = optimizer.state_dict(), scheduler.state_dict()
    expected = []
    for _ in range(20):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    fresh_opt = _optimizer(lr=0.5)  # a different configured rate: the saved state wins
    fresh = WarmupDecayLR(fresh_opt, total_iterations=50, warmup_iterations=7, decay="poly")
    fresh_opt.load_state_dict(saved_opt)
    fresh.load_state_dict(saved_sched)
    resumed = []
    for _ in range(20):
        resumed.append(fresh_opt.param_groups[0]["lr"])
        fresh_opt.step()
        fresh.step()
    assert resumed == expected


def test_build_scheduler_from_config_counts_warmup_in_epochs():
    optimizer = _optimizer()
    schedule = ScheduleConfig.from_dict({"warmup_epochs": 1.5, "warmup_start_factor": 0.1, "decay": "cosine"})
    scheduler = build_scheduler(optimizer, schedule, epochs=4, iterations_per_epoch=10)
    assert (scheduler.warmup_iterations, scheduler.total_iterations) == (15, 40)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(LR / 10)
    with pytest.raises(ConfigError, match=r"schedule.min_lr"):
        build_scheduler(
            _optimizer(), ScheduleConfig.from_dict({"min_lr": 0.1}), epochs=1, iterations_per_epoch=1
        )


def test_scheduler_refuses_bad_settings():
    with pytest.raises(ValueError, match="total_iterations"):
        WarmupDecayLR(_optimizer(), total_iterations=0)
    with pytest.raises(ValueError, match="decay"):
        WarmupDecayLR(_optimizer(), total_iterations=5, decay="step")
    with pytest.raises(ValueError, match="warmup_iterations"):
        WarmupDecayLR(_optimizer(), total_iterations=5, warmup_iterations=6)
    assert math.isclose(lr_at(-3, decay="constant", **CURVE), LR / 10)


def test_resume_with_a_longer_run_follows_the_longer_curve():
    optimizer = _optimizer()
    short = WarmupDecayLR(optimizer, total_iterations=20, warmup_iterations=5, decay="cosine")
    for _ in range(20):
        optimizer.step()
        short.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
    longer_opt = _optimizer()
    longer = WarmupDecayLR(longer_opt, total_iterations=40, warmup_iterations=5, decay="cosine")
    longer_opt.load_state_dict(optimizer.state_dict())
    longer.load_state_dict(short.state_dict())
    assert longer.last_epoch == 20
    expected = lr_at(20, base_lr=LR, total_iterations=40, warmup_iterations=5, decay="cosine")
    assert longer_opt.param_groups[0]["lr"] == pytest.approx(expected)
