"""Fault injection: training and inference processes killed with SIGKILL, and a disk that fills up.

* Training killed at random moments and resumed: the checkpoint on disk always loads, at most the
  checkpoint interval (one epoch: ``last.pt`` is written after every epoch) is lost, and on the CPU with a
  seed the resumed run ends with the same weights as an uninterrupted one.
* Inference killed while it writes: nothing truncated under a final name, and the next run clears the
  dead run's staging folder.
* A full disk (``ENOSPC`` from a write or from ``fsync``): one clear error, no temporary file left.
"""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from inference.helpers import make_ct
from training.conftest import toy_config, write_toy_cases

from pe_segmentation.config import config_to_yaml
from pe_segmentation.errors import EXIT_OUTPUT, OutputError
from pe_segmentation.io.atomic import atomic_write_bytes
from pe_segmentation.io.volume_files import read_volume, write_volume
from pe_segmentation.runtime import load_checkpoint
from pe_segmentation.training import run_training

from .conftest import files_under

EPOCHS = 6
SETTINGS = (
    f"training.epochs={EPOCHS}",
    "validation.every=2",
    "training.augment=true",
    "patch.samples_per_volume=4",
)


def _environment() -> dict[str, str]:
    """One thread, as in the reference run in this process (the same float summation order)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start(*args: object) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pe_segmentation", *[str(a) for a in args]]
    return subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _logged_epochs(run_dir: Path) -> int:
    """The last epoch the run's log says was completed (0 when none)."""
    log = run_dir / "train.log"
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    epochs = [int(m) for m in re.findall(rf"epoch (\d+)/{EPOCHS}:", text)]
    return max(epochs, default=0)


def _log_size(run_dir: Path) -> int:
    log = run_dir / "train.log"
    return log.stat().st_size if log.exists() else -1


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """The toy data set, the recipe file and the weights of one uninterrupted run (in this process)."""
    root = tmp_path_factory.mktemp("fault")
    datalist = write_toy_cases(root / "toy", cases=6)
    recipe = root / "recipe.yaml"
    recipe.write_text(config_to_yaml(toy_config(datalist, root / "unused", *SETTINGS)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = run_training(toy_config(datalist, root / "reference", *SETTINGS), progress=False)
    finally:
        torch.set_num_threads(threads)
    return recipe, _weights(reference.last_checkpoint)


@pytest.mark.slow
def test_training_killed_at_random_moments_resumes_to_the_same_weights(toy_run, tmp_path):
    recipe, reference = toy_run
    run_dir = tmp_path / "run"
    rng = random.Random(20240607)
    kills = 0
    progress: list[int] = []  # the epoch on disk after each kill
    for _attempt in range(6):
        resume = (run_dir / "checkpoints" / "last.pt").exists()
        args = ("--resume", run_dir) if resume else ("--config", recipe, "--run-dir", run_dir)
        logged = _log_size(run_dir)
        process = _start("train", *args, "--no-progress")
        if kills < 3:
            while _log_size(run_dir) == logged and process.poll() is None:  # this process is past its imports
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 2.0))  # the whole run takes about 2 s from here
        if kills < 3 and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        _, stderr = process.communicate(timeout=120)
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, stderr.decode(errors="replace")

        # after each kill: every checkpoint under its final name loads, and at most one epoch is lost
        last = run_dir / "checkpoints" / "last.pt"
        saved_epoch = load_checkpoint(last)["trainer"]["epoch"] if last.exists() else 0
        for path in (run_dir / "checkpoints").glob("*") if last.exists() else ():
            if path.name.startswith("."):  # a write the kill interrupted: a hidden temporary file
                assert ".tmp" in path.name
            else:
                load_checkpoint(path)
        assert _logged_epochs(run_dir) - saved_epoch <= 1
        progress.append(saved_epoch)
    else:
        pytest.fail("the run did not finish")

    assert kills >= 1
    assert progress == sorted(progress)  # a resumed run never falls back behind what was on disk
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer"]["epoch"] == EPOCHS
    weights = _weights(run_dir / "checkpoints" / "last.pt")
    assert weights.keys() == reference.keys()
    assert max(float((weights[k] - reference[k]).abs().max()) for k in weights) == 0.0


def _partial_files(out: Path) -> list[str]:
    return [name for name in files_under(out) if ".tmp" in name or ".partial-" in name]


@pytest.mark.slow
def test_inference_killed_while_writing_leaves_no_truncated_output(tmp_path, tiny_checkpoint, pe_seg):
    image = write_volume(
        make_ct(np.diag([-1.0, -1.0, 1.5, 1.0]), shape=(192, 192, 144)), tmp_path / "big.nii.gz"
    )
    out = tmp_path / "out"
    process = _start(
        "infer",
        "-i",
        image,
        "-o",
        out,
        "--checkpoint",
        tiny_checkpoint,
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--save-probability",
    )
    deadline = time.monotonic() + 120
    while not _partial_files(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    writing = [name for name in _partial_files(out) if ".tmp" in name]
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the process finished before it was killed"

    # killed mid-case: the case's folder does not exist under its final name, only a hidden staging folder
    assert not (out / "big").exists()
    assert all(name.startswith(".big.partial-") for name in files_under(out))
    assert writing, "killed while an output file was being written"

    # the next run finishes the case and clears the dead run's staging folder
    result = pe_seg(
        "infer", "-i", image, "-o", out, "--checkpoint", tiny_checkpoint, "--device", "cpu", "--no-preview"
    )
    assert result.code == 0, result.err
    assert files_under(out) == ["big/mask.nii.gz", "big/report.json"]
    assert read_volume(out / "big" / "mask.nii.gz").shape == (192, 192, 144)


def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_at_fsync_fails_inference_in_one_line(tmp_path, tiny_checkpoint, pe_seg, monkeypatch):
    """Delayed-allocation file systems report ENOSPC when the data is flushed: the first output fails."""
    image = write_volume(make_ct(np.diag([-1.5, -1.5, 2.5, 1.0])), tmp_path / "case.nii.gz")
    out = tmp_path / "out"
    monkeypatch.setattr(os, "fsync", _no_space)

    result = pe_seg("infer", "-i", image, "-o", out, "--checkpoint", tiny_checkpoint, "--device", "cpu")

    assert result.code == EXIT_OUTPUT
    assert len(result.error_lines) == 1, result.err
    assert re.match(r"error: .*/\.?case.*: cannot write \(No space left on device\)", result.error_lines[0])
    assert "Traceback" not in result.err
    assert files_under(out) == []  # neither the case, nor its staging folder, nor a temporary file


def test_full_disk_during_a_write_removes_the_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("previous, whole")
    written = []

    def half_then_full(self: Path, data: bytes) -> int:
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        written.append(self)
        _no_space()
        return 0

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(OutputError, match=r"report\.json: cannot write \(No space left on device\)"):
        atomic_write_bytes(target, b"{" + b"x" * 1000 + b"}")
    assert written  # the write really began in a temporary file ...
    assert not written[0].exists()  # ... which is gone
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    assert target.read_text() == "previous, whole"
