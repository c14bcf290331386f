"""``pe-seg info``, ``convert`` and ``infer`` on a multi-frame CT object: the same results as on its original.

The object is the single-frame phantom series converted to Legacy Converted Enhanced CT by highdicom, with its
frames stored in shuffled order (:mod:`enhanced_ct`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import make_affine
from enhanced_ct import convert_to_multiframe, drop_frame, edit_multiframe
from inference.helpers import make_ct

from pe_segmentation.errors import EXIT_INPUT
from pe_segmentation.io.volume_files import read_volume

from .conftest import CliResult, files_under

OBLIQUE = make_affine((0.9, 1.1, 2.0), euler_deg=(10.0, 20.0, 5.0))
SLICES = 14


@pytest.fixture
def sources(tmp_path: Path, series_writer: Callable[..., Path]) -> tuple[Path, Path]:
    """A single-frame series (folder ``single/ct``) and its multi-frame conversion (``multi/ct/ct.dcm``)."""
    original = series_writer(make_ct(OBLIQUE, shape=(32, 28, SLICES)), "single/ct")
    order = list(np.random.default_rng(3).permutation(SLICES))
    converted = convert_to_multiframe(original, tmp_path / "multi" / "ct" / "ct.dcm", frame_order=order)
    return original, converted


def _json(result: CliResult) -> dict:
    assert result.code == 0, result.err
    return json.loads(result.out)


GEOMETRY = ("shape", "spacing_mm", "orientation", "origin_ras_mm", "dtype", "value_range", "warnings")


def test_info_describes_the_object_like_its_original(sources, pe_seg):
    original, converted = sources
    reference = _json(pe_seg("info", "-i", original, "--json"))

    for source in (converted.parent, converted):  # the folder, and the file itself
        report = _json(pe_seg("info", "-i", source, "--json"))
        assert {k: report[k] for k in GEOMETRY} == {k: reference[k] for k in GEOMETRY}
    (series,) = _json(pe_seg("info", "-i", converted.parent, "--json"))["series"]
    assert (series["slices"], series["rejected"]) == (SLICES, None)
    assert series["slice_spacing_mm"] == pytest.approx(2.0)


def test_convert_writes_the_same_nifti(sources, pe_seg, tmp_path):
    original, converted = sources
    for name, source in (("single", original), ("multi", converted.parent)):
        assert pe_seg("convert", "-i", source, "-o", tmp_path / "nifti" / f"{name}.nii.gz").code == 0
    single, multi = (read_volume(tmp_path / "nifti" / f"{name}.nii.gz") for name in ("single", "multi"))
    np.testing.assert_array_equal(multi.array, single.array)
    np.testing.assert_allclose(multi.affine, single.affine, atol=1e-4)


def test_infer_gives_the_same_mask_and_clots(sources, pe_seg, tiny_checkpoint, tmp_path):
    original, converted = sources
    common = [
        "--checkpoint",
        tiny_checkpoint,
        "--device",
        "cpu",
        "--no-preview",
        "--no-territory",
    ]  # not a chest
    for name, source in (("single", original), ("multi", converted.parent)):
        result = pe_seg("infer", "-i", source, "-o", tmp_path / "out" / name, *common)
        assert result.code == 0, result.err

    single, multi = (tmp_path / "out" / name / "ct" for name in ("single", "multi"))
    mask, reference = read_volume(multi / "mask.nii.gz"), read_volume(single / "mask.nii.gz")
    assert reference.array.any()  # a real comparison: the tiny network finds "clots" in this CT
    np.testing.assert_array_equal(mask.array, reference.array)
    np.testing.assert_allclose(mask.affine, reference.affine, atol=1e-4)
    report, reference_report = (json.loads((case / "report.json").read_text()) for case in (multi, single))
    assert report["clots"] == reference_report["clots"]
    assert report["totals"] == reference_report["totals"]
    assert report["input"]["affine"] == reference_report["input"]["affine"]
    assert report["input"]["instances"] == 1
    # the SEG of the multi-frame source references the one enhanced object, frame by frame
    seg = pydicom.dcmread(multi / "seg.dcm")
    source = pydicom.dcmread(converted, stop_before_pixels=True)
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {source.SOPInstanceUID}
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID


def test_a_damaged_object_fails_in_one_line_and_writes_nothing(sources, pe_seg, tiny_checkpoint, tmp_path):
    original, _ = sources
    converted = convert_to_multiframe(original, tmp_path / "gap" / "ct.dcm")  # frames in order: 5 is inside
    edit_multiframe(converted, drop_frame(5))
    out = tmp_path / "out"

    result = pe_seg(
        "infer", "-i", converted.parent, "-o", out, "--checkpoint", tiny_checkpoint, "--device", "cpu"
    )

    assert result.code == EXIT_INPUT
    (line,) = result.error_lines
    assert line.startswith(f"error: {converted}: multi-frame series")
    assert "missing slices" in line
    assert "Traceback" not in result.err
    assert files_under(out) == []
