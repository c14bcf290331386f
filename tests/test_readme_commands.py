"""The README's two commands: exactly two, what CI runs, and the demo producing what it promises."""

from __future__ import annotations

import json
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
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has no bash code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_readme_starts_with_the_demo_and_test_commands_and_ci_runs_the_second():
    assert readme_commands() == ["make demo", "make test"]
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert "make test" in ci_lines


@pytest.mark.slow
def test_demo_synthesizes_converts_and_draws_the_pipeline(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        ["bash", "scripts/demo.sh", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]

    datalist = json.loads((out / "data" / "datalist.json").read_text())
    assert [entry["case"] for entry in datalist["training"]] == [f"phantom_{i:03d}" for i in range(4)]
    assert "series 1 'CTPA pe-seg phantom phantom_000' CT 160 slices" in result.stdout

    converted = read_volume(out / "converted" / "phantom_000.nii.gz")
    series = read_dicom_series(out / "data" / "dicom" / "phantom_000").volume
    np.testing.assert_array_equal(converted.array, series.array)
    np.testing.assert_allclose(converted.affine, series.affine, atol=1e-4)

    check = json.loads((out / "data_check" / "data_check.json").read_text())
    assert len(check["cases"]) == 4
    assert all(case["patches"] == 4 and case["patch_shape"] == [64, 64, 64] for case in check["cases"])
    assert (
        sum(case["patches_with_embolus"] for case in check["cases"]) >= 4
    )  # seeded: half the patches centre on clot
    png = (out / "data_check" / "patches.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert len(png) > 20_000
