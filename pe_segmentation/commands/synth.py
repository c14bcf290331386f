"""``pe-seg synth``: write a folder of synthetic CTPA phantoms and print their emboli size distribution."""

from __future__ import annotations

import argparse

from pe_segmentation.api import synth
from pe_segmentation.data.phantom import DEFAULT_SHAPE, DEFAULT_SPACING, PROFILES, format_summary

_FORMATS = {"nifti": ("nifti",), "dicom": ("dicom",), "both": ("nifti", "dicom")}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``synth`` sub-command to ``pe-seg``'s sub-parsers."""
    parser = subparsers.add_parser(
        "synth",
        help="generate synthetic CTPA phantoms with emboli",
        description=(
            "Generate synthetic CT pulmonary angiography phantoms (HU, int16) with embolus labels and an "
            "MSD-style datalist.json: OUTPUT/images, OUTPUT/labels, OUTPUT/dicom (with --format dicom|both). "
            "Emboli follow FUMPE's 35 expert masks (1-15 per case, median 2; about 65% central > 500 mm^3, 25% "
            "segmental 50-500 mm^3, 10% small < 50 mm^3); OUTPUT/calibration.png shows them beside FUMPE's; "
            "--negative-fraction of the cases are normal scans without any. "
            "--profile clinical (default) draws per case a scanner (in-plane spacing 0.49-1.09 mm, slices "
            "0.5-5 mm over a 320-400 x 250-350 mm field; slice thickness, kernel, noise, trunk 150-600 HU and "
            "phase, dense SVC contrast with streaks, lower-lobe motion) and PE mimics labelled 0 (dark "
            "pulmonary veins, mixing artefacts, hilar lymph nodes, mucus-filled bronchi); there --shape fixes "
            "the voxel counts (the field is still drawn), --spacing the spacing, both the grid. --profile "
            "uniform keeps one fixed grid and look: give --shape or --spacing alone to keep its field of view "
            f"({DEFAULT_SHAPE[0]}x{DEFAULT_SHAPE[1]}x{DEFAULT_SHAPE[2]} at "
            f"{DEFAULT_SPACING[0]}x{DEFAULT_SPACING[1]}x{DEFAULT_SPACING[2]} mm)."
        ),
    )
    parser.add_argument("--output", "-o", required=True, help="dataset folder to write (created)")
    parser.add_argument("--cases", type=int, default=4, help="number of cases (default: 4)")
    parser.add_argument(
        "--seed", type=int, default=0, help="dataset seed; case i derives from (seed, i) (default: 0)"
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="voxels along i, j, k (default: uniform 256 256 200; clinical: field of view / drawn spacing)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="voxel size in mm (default: uniform 1.4 1.4 1.6; clinical: drawn per case)",
    )
    parser.add_argument(
        "--format",
        choices=sorted(_FORMATS),
        default="nifti",
        help="image format(s) to write (default: nifti)",
    )
    parser.add_argument(
        "--vessel-label",
        action="store_true",
        help="also label patent pulmonary artery lumen as 2 and (clinical profile) pulmonary veins as 3 (emboli are 1)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=None,
        metavar="HU",
        help="noise standard deviation, uniform profile only (default: 15; clinical draws it per case)",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="clinical",
        help="clinical: scanner variety and PE mimics per case; uniform: one fixed grid and look "
        "(default: clinical)",
    )
    parser.add_argument(
        "--negative-fraction",
        type=float,
        default=0.25,
        metavar="F",
        help="share of normal scans without any embolus, chosen per case from the seed (default: 0.25)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Handler of ``pe-seg synth``: :func:`pe_segmentation.synth`, then the dataset's summary."""
    summary = synth(
        args.output,
        args.cases,
        args.seed,
        shape=args.shape,
        spacing=args.spacing,
        vessel_label=args.vessel_label,
        noise_hu=args.noise,
        formats=_FORMATS[args.format],
        progress=not args.no_progress,
        profile=args.profile,
        negative_fraction=args.negative_fraction,
    )
    print(format_summary(summary))
    return 0
