"""``pe-seg info`` and ``pe-seg convert`` as users run them: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pe_segmentation.cli import main
from pe_segmentation.errors import EXIT_INPUT
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import read_volume


def test_info_reports_series_choice_and_geometry_as_json(hu_volume, series_writer, capsys, tmp_path):
    series_writer(hu_volume, "study/ct", series_number=2, series_description="CTPA 1mm")
    series_writer(
        Volume(hu_volume.array[:, :, :1], hu_volume.affine),
        "study/scout",
        series_number=1,
        extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
    )

    assert main(["info", "--input", str(tmp_path / "study"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert [s["description"] for s in report["series"]] == ["CTPA pe-seg phantom", "CTPA 1mm"]
    assert report["series"][0]["rejected"] == "localizer/scout"
    chosen = next(s for s in report["series"] if s["series_uid"] == report["chosen_series"])
    assert chosen["description"] == "CTPA 1mm"
    assert report["chosen_because"] == "the only usable CT series"
    assert report["shape"] == [24, 20, 8]
    assert report["spacing_mm"] == pytest.approx([0.7, 0.8, 2.0])
    assert report["orientation"] == "LPS"
    assert report["value_range"] == [-1000.0, 4493.0]  # i=j=k=0 and 23 + 30 * 19 + 700 * 7 - 1000


def test_info_text_names_the_problem_and_exits_with_input_code(hu_volume, series_writer, capsys):
    folder = series_writer(hu_volume)
    sorted(folder.iterdir())[3].unlink()
    assert main(["info", "--input", str(folder)]) == EXIT_INPUT
    printed = capsys.readouterr()
    # the report on stdout, the refusal on stderr, like every other command
    assert "series 1 'CTPA pe-seg phantom' CT 7 slices" in printed.out
    assert "error" not in printed.out
    (line,) = printed.err.strip().splitlines()
    assert line.startswith(f"error: {folder}: series 1")
    assert "missing slices" in line


def test_info_json_keeps_the_error_in_the_report_and_prints_the_line_on_stderr(
    hu_volume, series_writer, capsys
):
    folder = series_writer(hu_volume)
    sorted(folder.iterdir())[3].unlink()
    assert main(["info", "--input", str(folder), "--json"]) == EXIT_INPUT
    printed = capsys.readouterr()
    report = json.loads(printed.out)
    assert "missing slices" in report["error"]
    assert printed.err.strip() == f"error: {report['error']}"


def test_convert_writes_nifti_with_the_series_geometry(hu_volume, series_writer, tmp_path):
    folder = series_writer(hu_volume)
    output = tmp_path / "out" / "ct.nii.gz"
    assert main(["convert", "--input", str(folder), "--output", str(output)]) == 0
    converted = read_volume(output)
    np.testing.assert_array_equal(converted.array, hu_volume.array)
    np.testing.assert_allclose(converted.affine, hu_volume.affine, atol=1e-4)


def test_convert_of_a_bad_series_fails_in_one_line_and_writes_nothing(hu_volume, series_writer, tmp_path):
    folder = series_writer(hu_volume)
    sorted(folder.iterdir())[3].unlink()
    out_dir = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pe_segmentation",
            "convert",
            "-i",
            str(folder),
            "-o",
            str(out_dir / "ct.nii.gz"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_INPUT
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "missing slices" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_debug_flag_shows_the_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pe_segmentation", "--debug", "info", "-i", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_INPUT
    assert "Traceback" in result.stderr
    assert "no such file or folder" in result.stderr
