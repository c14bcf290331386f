"""``pe-seg convert``: a DICOM series (or any readable volume) to NIfTI/NRRD/MHA, with the same validation."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pe_segmentation.io.loader import load_volume
from pe_segmentation.io.volume_files import write_volume

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("convert", help="convert a DICOM series to NIfTI (or NRRD/MHA)")
    parser.add_argument("--input", "-i", required=True, type=Path, help="DICOM folder/file or a volume file")
    parser.add_argument(
        "--output", "-o", required=True, type=Path, help="output file: .nii.gz, .nii, .nrrd or .mha"
    )
    parser.add_argument("--series-uid", help="convert this DICOM series instead of the automatic choice")
    parser.set_defaults(handler=run)


def convert(input_path: Path, output_path: Path, series_uid: str | None = None) -> Path:
    """Read ``input_path`` (validated) and write it to ``output_path`` atomically; returns the output path."""
    volume = load_volume(input_path, series_uid)
    write_volume(volume, output_path)
    return output_path


def run(args: argparse.Namespace) -> int:
    output = convert(args.input, args.output, args.series_uid)
    log.info("wrote %s", output)
    return 0
