"""``pe_segmentation.infer(...)`` from Python is ``pe-seg infer``: the same library function under both, the same
files out."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

import pe_segmentation
from pe_segmentation.io.volume_files import write_volume

from .helpers import make_ct

AFFINE = np.diag([-1.5, -1.5, 2.5, 1.0])


def _without_timings(report: dict) -> dict:
    """A report.json less what differs between any two runs: wall times and the output folder."""
    return {key: value for key, value in report.items() if key not in ("seconds", "created")}


def test_library_infer_writes_what_the_command_writes(tmp_path, checkpoint, run_infer):
    inputs = tmp_path / "inputs"
    for index in range(2):
        write_volume(make_ct(AFFINE, seed=index), inputs / f"case_{index}.nii.gz")

    code = run_infer(
        "-i",
        inputs,
        "-o",
        tmp_path / "cli",
        "--checkpoint",
        checkpoint,
        "--device",
        "cpu",
        "--threshold",
        "0.3",
        "--save-probability",
        "--no-preview",
        "--no-territory",  # these CTs are not chests
    )
    run = pe_segmentation.infer(
        inputs,
        tmp_path / "api",
        checkpoint,
        device="cpu",
        threshold=0.3,
        save_probability=True,
        preview=False,
        territory=False,
    )

    assert code == 0
    assert [r.name for r in run.results] == ["case_0", "case_1"]
    assert run.failed == []
    assert (
        sum(r.clot_count for r in run.results) > 0
    )  # masks with clots, so that comparing them means something
    assert len(run.model["sha256"]) == 64
    for result in run.results:
        cli, api = tmp_path / "cli" / result.name, tmp_path / "api" / result.name
        assert sorted(p.name for p in cli.iterdir()) == sorted(p.name for p in api.iterdir())
        assert sorted(p.name for p in api.iterdir()) == ["mask.nii.gz", "probability.nii.gz", "report.json"]
        for name in ("mask.nii.gz", "probability.nii.gz"):
            a, b = nib.load(cli / name), nib.load(api / name)
            np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())
            np.testing.assert_array_equal(a.affine, b.affine)
        cli_report = json.loads((cli / "report.json").read_text())
        api_report = json.loads((api / "report.json").read_text())
        assert _without_timings(cli_report) == _without_timings(api_report)
        assert api_report["totals"]["clot_count"] == result.clot_count
