"""The README's two commands: exactly two, what CI runs, and the demo producing what it promises."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.volume_files import read_volume

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """Commands of the README's first code block, comments stripped."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert block, "README.md has no bash code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_readme_starts_with_the_demo_and_test_commands_and_ci_runs_the_second():
    assert readme_commands() == ["make demo", "make test"]
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert "make test" in ci_lines


@pytest.mark.slow
def test_demo_runs_synthesis_training_inference_and_evaluation(tmp_path):
    """The main job end to end, with training cut to one epoch (quality is the demo's own business)."""
    out = tmp_path / "demo"
    result = subprocess.run(
        ["bash", "scripts/demo.sh", str(out)],
        cwd=ROOT,
        capture_output=True,
        encoding="utf-8",  # progress bars draw with Unicode blocks, whatever the locale
        errors="replace",
        check=False,
        timeout=900,
        env={**os.environ, "DEMO_EPOCHS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]

    training = json.loads((out / "data" / "datalist.json").read_text())["training"]
    heldout = json.loads((out / "heldout" / "datalist.json").read_text())["training"]
    assert len(training) == 12
    assert [entry["case"] for entry in heldout] == [f"phantom_{i:03d}" for i in range(4)]
    assert "series 1 'CTPA pe-seg phantom phantom_000' CT 128 slices" in result.stdout

    metrics = (out / "run" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 2  # header + the one epoch
    assert (out / "run" / "checkpoints" / "best.pt").is_file()

    for entry in heldout:
        case = entry["case"]
        mask = read_volume(out / "predictions" / case / "mask.nii.gz")
        series = read_dicom_series(out / "heldout" / "dicom" / case).volume
        assert mask.shape == series.shape
        np.testing.assert_allclose(mask.affine, series.affine, atol=1e-4)
        report = json.loads((out / "predictions" / case / "report.json").read_text())
        assert report["totals"]["clot_count"] == len(report["clots"])

    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["detection"]["emboli"] == sum(len(entry["emboli"]) for entry in heldout)
    assert "per-embolus sensitivity" in result.stderr
    for png in (
        out / "run" / "curves.png",
        out / "evaluation" / "froc.png",
        out / "data_check" / "patches.png",
    ):
        assert png.read_bytes().startswith(b"\x89PNG")
