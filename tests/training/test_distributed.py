"""DDP on CPU: 2 gloo processes with batch 1 follow one process with batch 2 over the same patches.

What equality holds: each epoch the sampler shuffles the 4 training volumes with ``seed + epoch``; rank r takes
positions r, r+2 of that order, one patch per volume, one patch per iteration. Iteration k of the two ranks
therefore sees volumes ``order[2k]`` and ``order[2k+1]``, exactly the batch of iteration k of the single process.
With whole-volume patches (patch = volume: no random crop), no augmentation, instance norm (per sample) and a
loss that is a mean over patches, the DDP gradient average equals the single-process batch gradient up to
floating-point summation order: final weights agree to ~1e-6, metrics to ~1e-5.
"""

from __future__ import annotations

import csv

import pytest
import torch

from pe_segmentation.runtime import load_checkpoint
from pe_segmentation.training import run_training, train_distributed

pytestmark = pytest.mark.slow

WHOLE_VOLUME = ("patch.patch_size=[16, 16, 16]", "patch.samples_per_volume=1", "training.epochs=2")


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_gloo_processes_match_one_process_with_twice_the_batch(tmp_path, toy_writer, make_config):
    datalist = toy_writer(tmp_path / "data", cases=6, size=16)
    single = run_training(
        make_config(*WHOLE_VOLUME, "training.batch_size=2", run="single", datalist=datalist), progress=False
    )
    config = make_config(
        *WHOLE_VOLUME, "training.batch_size=1", "training.distributed=true", run="ddp", datalist=datalist
    )
    ddp = train_distributed(config, 2, progress=False)

    # each rank saw half of the 4 training volumes per epoch: 2 iterations of 1 patch
    assert (single.iterations, ddp.iterations) == (4, 4)
    a, b = load_checkpoint(single.last_checkpoint), load_checkpoint(ddp.last_checkpoint)
    assert b["rng"]["world_size"] == 2  # every rank's RNG state is in the checkpoint
    difference = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert 0 <= difference < 1e-5
    for row_a, row_b in zip(_rows(single.metrics_csv), _rows(ddp.metrics_csv), strict=True):
        for key in ("train_loss", "lr", "val_dice", "val_sensitivity", "val_precision"):
            assert float(row_b[key]) == pytest.approx(float(row_a[key]), rel=1e-4, abs=1e-6), key
    assert ddp.best_dice == pytest.approx(single.best_dice, rel=1e-4)

    # only rank 0 wrote: one event file, one log
    assert len(list((ddp.run_dir / "tensorboard").glob("events.*"))) == 1
    assert "2 processes" in (ddp.run_dir / "train.log").read_text()
    assert isinstance(b["rng"]["ranks"][1]["torch"], torch.Tensor)
