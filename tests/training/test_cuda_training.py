"""Training on a CUDA GPU: fp16 autocast with gradient scaling, bf16, resume, and torchrun (DDP over NCCL).

Skipped without a GPU (CI has none); run on a GPU machine with ``pytest tests/training/test_cuda_training.py``.
cuDNN's convolution kernels are not bit-reproducible run to run, so where the CPU tests demand equal weights
these demand equal counters and learning rates and weights equal to a small tolerance.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pe_segmentation.runtime import load_checkpoint
from pe_segmentation.training import run_training

from .helpers import LEARNS_THE_TOY_SET, Crash

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA_RUN = ("training.device=cuda", "training.epochs=3", "validation.every=2", "training.augment=true")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest difference of any weight tensor, relative to that tensor's largest magnitude."""
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in b)


def test_fp16_autocast_scales_gradients_and_resumes_on_cuda(make_config):
    reference = run_training(make_config(*CUDA_RUN, "training.precision=auto", run="ref"), progress=False)
    saved = load_checkpoint(reference.last_checkpoint)
    # auto on CUDA is fp16 with a gradient scaler whose state travels in every checkpoint
    assert saved["scaler"] is not None
    assert saved["scaler"]["scale"] > 0
    assert all(v.device.type == "cpu" for v in saved["model"].values())  # loadable on a CPU-only machine
    assert "cuda" in (reference.run_dir / "train.log").read_text()
    rows = _rows(reference.metrics_csv)
    assert all(torch.isfinite(torch.tensor(float(r["train_loss"]))) for r in rows)
    assert 0.0 <= reference.best_dice <= 1.0

    config = make_config(*CUDA_RUN, "training.precision=auto", run="interrupted")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(config, progress=False, handlers=[Crash(epoch=1)])
    resumed = run_training(config, resume=config.output.run_dir, progress=False)
    a, b = load_checkpoint(resumed.last_checkpoint), load_checkpoint(reference.last_checkpoint)
    assert a["trainer"] == b["trainer"]
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 12
    assert [r["lr"] for r in _rows(resumed.metrics_csv)] == [r["lr"] for r in rows]
    assert _relative_difference(a["model"], b["model"]) < 0.05


def test_bf16_training_on_cuda_has_no_scaler(make_config):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    result = run_training(
        make_config("training.device=cuda", "training.precision=bf16", *LEARNS_THE_TOY_SET, run="bf16"),
        progress=False,
    )
    assert load_checkpoint(result.last_checkpoint)["scaler"] is None
    losses = [float(r["train_loss"]) for r in _rows(result.metrics_csv)]
    assert losses[-1] < 0.85 * losses[0], losses  # learns the toy set as the CPU run does
    assert result.best_dice > 0.6


def test_torchrun_on_the_visible_gpus(make_config, tmp_path):
    """One process per visible GPU under torchrun. With two or more GPUs that is DDP over NCCL
    (DistributedSampler, rank 0 writes); with one, torchrun's single process trains as a plain run does."""
    nprocs = torch.cuda.device_count()
    config = make_config("training.device=auto", "training.epochs=2", "validation.every=2", run="ddp")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nprocs}",
        "--master_port=29533",
    ]
    command += ["-m", "pe_segmentation", "--debug", "train", "--config", str(recipe)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = Path(config.output.run_dir)
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["rng"]["world_size"] == nprocs
    assert checkpoint["trainer"]["epoch"] == 2
    assert len(list((run_dir / "tensorboard").glob("events.*"))) == 1
    log = (run_dir / "train.log").read_text()
    expected = f"on cuda:0 (fp32, {nprocs} processes over nccl)" if nprocs > 1 else "on cuda:0 (fp32)"
    assert expected in log
