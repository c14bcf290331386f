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


#: What the demo's figures must at least reach with one epoch of fine-tuning (DEMO_EPOCHS=1): well below what the
#: bundle's weights give on these phantoms (docs/phantoms.md, "The demo model"), far above an untrained or broken
#: pipeline (a network that finds nothing scores 0; the bundle trained on the old uniform phantoms scored Dice
#: 0.36 and 77% at 9.3 false positives per scan on clinical phantoms).
DEMO_FLOOR = {"dice": 0.45, "sensitivity": 0.65, "fp_per_scan": 6.0}


def _printed(pattern: str, text: str) -> tuple[str, ...]:
    found = re.search(pattern, text)
    assert found, f"the demo did not print {pattern!r}"
    return found.groups()


@pytest.mark.slow
def test_demo_fine_tunes_predicts_dicom_and_prints_its_figures(tmp_path):
    """The main job end to end, fine-tuning the bundle's weights for one epoch: the held-out set is as large as
    promised, every held-out DICOM series gets a mask on its own grid, and the printed figures are the evaluation's
    and reach a floor."""
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
    # the minimum held-out set: 12 scans, 40 emboli, 4 scans without emboli
    assert [entry["case"] for entry in heldout] == [f"phantom_{i:03d}" for i in range(16)]
    assert sum(len(entry["emboli"]) for entry in heldout) >= 40
    assert sum(not entry["emboli"] for entry in heldout) >= 4
    assert "series 1 'CTPA pe-seg phantom phantom_000' CT 128 slices" in result.stdout

    metrics = (out / "run" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 2  # header + the one epoch
    assert (out / "run" / "checkpoints" / "last.pt").is_file()

    for entry in heldout:
        case = entry["case"]
        mask = read_volume(out / "predictions" / case / "mask.nii.gz")
        series = read_dicom_series(out / "heldout" / "dicom" / case).volume
        assert mask.shape == series.shape
        np.testing.assert_allclose(mask.affine, series.affine, atol=1e-4)
        report = json.loads((out / "predictions" / case / "report.json").read_text())
        assert report["totals"]["clot_count"] == len(report["clots"])

    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    detection, negatives = summary["detection"], summary["cases_without_emboli"]
    assert detection["emboli"] == sum(len(entry["emboli"]) for entry in heldout)
    # the printed figures are the evaluation's
    dice, scans = _printed(r"Dice (\d\.\d+) \(95% CI .*?\) over (\d+) scans with emboli", result.stderr)
    assert float(dice) == pytest.approx(summary["voxel"]["dice"]["mean"], abs=5e-4)
    assert int(scans) == 12
    found, total, fps = _printed(
        r"per-embolus sensitivity [\d.]+% \((\d+)/(\d+)\) at ([\d.]+) false positives per scan", result.stderr
    )
    assert (int(found), int(total)) == (detection["detected"], detection["emboli"])
    assert float(fps) == pytest.approx(detection["fp_per_scan"], abs=5e-3)
    (by_size,) = _printed(r"emboli found by size: (.*)", result.stderr)
    for size, entry in detection["by_size"].items():
        assert f"{size} {entry['detected']}/{entry['emboli']}" in by_size
    (negative_fps,) = _printed(r"scans without emboli: .*\(([\d.]+) per scan\)", result.stderr)
    assert float(negative_fps) == pytest.approx(negatives["fp_clots_per_scan"], abs=5e-3)
    # and they are those of a model that works
    assert summary["voxel"]["dice"]["mean"] >= DEMO_FLOOR["dice"]
    assert detection["sensitivity"] >= DEMO_FLOOR["sensitivity"]
    assert detection["fp_per_scan"] <= DEMO_FLOOR["fp_per_scan"]
    for png in (
        out / "run" / "curves.png",
        out / "evaluation" / "froc.png",
        out / "data_check" / "patches.png",
    ):
        assert png.read_bytes().startswith(b"\x89PNG")
