"""configs/multi_gpu_train.yaml under torchrun: 2 processes on the CPU (gloo), as on GPUs (NCCL)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pe_segmentation.runtime.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def test_multi_gpu_config_trains_with_two_gloo_processes(bundle_copy, phantoms, tmp_path):
    run_dir = tmp_path / "run"
    configs = [str(bundle_copy / "configs" / name) for name in ("train.yaml", "multi_gpu_train.yaml")]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(configs),
        "--bundle_root",
        str(bundle_copy),
        "--dataset_dir",
        str(phantoms),
        "--output_dir",
        str(run_dir),
        "--max_epochs",
        "1",
        "--progress",
        "False",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env=env, cwd=Path(__file__).parent
    )
    assert done.returncode == 0, done.stderr[-3000:]

    # one process group of 2: each rank trained on 1 of the 2 training phantoms (1 iteration of 2 patches)
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["rng"]["world_size"] == 2
    assert last["trainer"]["epoch"] == 1
    assert last["trainer"]["iteration"] == 1
    assert "2 processes" in (run_dir / "train.log").read_text()
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]  # rank 0 alone wrote the run folder
    # rank 0 exported the best weights into the bundle
    exported = load_checkpoint(bundle_copy / "models" / "model.pt")
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert exported["kind"] == "bundle"
    assert all((exported["model"][k] == best["model"][k]).all() for k in best["model"])
