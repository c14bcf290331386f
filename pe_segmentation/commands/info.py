"""``pe-seg info``: what is in an input (series, geometry, HU range, warnings, the scan quality checks that
``pe-seg infer`` runs): the first thing users check.

The report goes to stdout; a refusal's one ``error:`` line goes to stderr, as with every other command, so that
``pe-seg info ... > report.txt`` keeps the report and still shows why the input is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pe_segmentation.errors import EXIT_INPUT, PESegError
from pe_segmentation.inference.scan_quality import assess_scan
from pe_segmentation.io.dicom_reader import series_geometry
from pe_segmentation.io.dicom_scan import SeriesInfo, scan_dicom_folder
from pe_segmentation.io.loader import input_kind, load_volume
from pe_segmentation.io.series_choice import choose_series
from pe_segmentation.io.volume import Volume


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="describe a CT input: series, geometry, HU range, warnings")
    parser.add_argument(
        "--input", "-i", required=True, type=Path, help="DICOM folder/file or NIfTI/NRRD/MHA file"
    )
    parser.add_argument("--series-uid", help="describe this DICOM series instead of the automatic choice")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=run)


def describe_volume(volume: Volume) -> dict[str, Any]:
    """Geometry and value range of a volume, JSON-friendly."""
    array = volume.array
    return {
        "shape": list(volume.shape),
        "spacing_mm": [round(float(s), 6) for s in volume.spacing],
        "orientation": volume.orientation_code,
        "origin_ras_mm": [round(float(v), 4) for v in volume.origin_ras],
        "dtype": str(array.dtype),
        "value_range": [float(array.min()), float(array.max())],
        "warnings": list(volume.metadata.get("warnings", [])),
    }


def _choice_reason(chosen: SeriesInfo, candidates: list[SeriesInfo], series_uid: str | None) -> str:
    if series_uid is not None:
        return "named by --series-uid"
    if len(candidates) == 1:
        return "the only usable CT series"
    return (
        f"best of {len(candidates)} usable CT series by the rule: ORIGINAL before DERIVED, axial first, "
        "most slices, thinnest spacing, lowest series number"
    )


def describe_input(path: Path, series_uid: str | None = None) -> dict[str, Any]:
    """Everything ``pe-seg info`` reports about ``path``; a failed read is reported under ``error``."""
    report: dict[str, Any] = {"input": str(path), "kind": input_kind(path)}
    if report["kind"] == "dicom" and path.is_dir():
        scan = scan_dicom_folder(path)
        report["series"] = [s.summary() for s in scan.series]
        report["non_dicom_files"] = len(scan.non_dicom_files)
        report["unreadable_files"] = [f"{p}: {why}" for p, why in scan.unreadable_files]
        try:
            chosen = choose_series(scan, series_uid)
            series_geometry(chosen, path)  # validate before decoding pixels
        except PESegError as err:
            report["error"] = str(err)
            return report
        candidates = [s for s in scan.series if s.rejection_reason() is None]
        report["chosen_series"] = chosen.series_uid
        report["chosen_because"] = _choice_reason(chosen, candidates, series_uid)
        series_uid = chosen.series_uid
    try:
        volume = load_volume(path, series_uid)
    except PESegError as err:
        report["error"] = str(err)
        return report
    report.update(describe_volume(volume))
    report["qc"] = assess_scan(volume).to_dict()
    return report


def format_report(report: dict[str, Any]) -> str:
    """The text form of :func:`describe_input`'s report, without its ``error`` (:func:`run` prints that)."""
    lines = [f"input: {report['input']} ({report['kind']})"]
    for series in report.get("series", []):
        mark = "*" if series["key"] == report.get("chosen_series") else " "
        status = f"skipped: {series['rejected']}" if series["rejected"] else "usable"
        spacing = series["slice_spacing_mm"]
        lines.append(
            f" {mark} series {series['series_number']} '{series['description']}' {series['modality']} "
            f"{series['slices']} slices" + (f" @ {spacing:.3g} mm" if spacing else "") + f" [{status}]"
        )
        if series["series_uid"] is not None:
            lines.append(f"     uid {series['series_uid']}")
        else:
            lines.append(f"     no SeriesInstanceUID; pe-seg key {series['key']} (pass it to --series-uid)")
    if "chosen_because" in report:
        lines.append(f"chosen: {report['chosen_series']} ({report['chosen_because']})")
    if "shape" in report:
        spacing = " x ".join(f"{s:.4g}" for s in report["spacing_mm"])
        origin = ", ".join(f"{v:.2f}" for v in report["origin_ras_mm"])
        low, high = report["value_range"]
        lines += [
            f"shape: {' x '.join(map(str, report['shape']))} voxels",
            f"spacing: {spacing} mm",
            f"orientation: {report['orientation']} (voxel axes i, j, k point to these patient directions)",
            f"origin (RAS): {origin} mm",
            f"values: {low:g} to {high:g} ({report['dtype']})",
        ]
    if "qc" in report:
        lines.append(f"scan quality: {report['qc']['verdict'].upper()}")
        for name, check in report["qc"]["checks"].items():
            lines.append(f"  {name}: {check['verdict']} - {check['reason']}")
    for warning in report.get("warnings", []) + report.get("unreadable_files", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    io_log = logging.getLogger("pe_segmentation.io")
    level = io_log.level
    io_log.setLevel(logging.ERROR)  # warnings are part of the report
    try:
        report = describe_input(args.input, args.series_uid)
    finally:  # only for this command: later calls in the same process warn as usual
        io_log.setLevel(level)
    print(json.dumps(report, indent=2, default=_json_default) if args.json else format_report(report))
    if "error" in report:
        print(f"error: {report['error']}", file=sys.stderr)
        return EXIT_INPUT
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
