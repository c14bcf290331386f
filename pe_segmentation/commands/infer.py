"""``pe-seg infer``: segment emboli in new CTs with a trained checkpoint (or a pe-seg MONAI bundle).

Writes, per case, into ``OUTPUT/<case>/``: ``mask.nii.gz`` (uint8, 1 = embolus, the input's own grid),
``seg.dcm`` (DICOM SEG referencing the source series and filed into its study, for DICOM input; skipped
with the reason when the source lacks what a SEG needs), ``report.json`` (each clot's voxels,
volume in mL, centroid in patient mm, bounding box and probabilities; totals; timings; model file hash),
``preview.png`` (axial slices through the largest clots with the mask overlaid) and, with
``--save-probability``, ``probability.nii.gz``. A case appears whole or not at all. With several cases, a
case that fails is reported in one line, the others are finished, and the exit code is non-zero.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pe_segmentation.api import infer
from pe_segmentation.errors import EXIT_INPUT, EXIT_OK


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``infer`` sub-command to ``pe-seg``'s sub-parsers."""
    parser = subparsers.add_parser(
        "infer",
        help="predict clot masks for CT series or volumes",
        description=(
            "Segment pulmonary emboli with a trained checkpoint. INPUT is a DICOM series folder, a study folder "
            "(the CT series is chosen by the series rule, see 'pe-seg info'), a NIfTI/NRRD/MHA file, or a folder "
            "or quoted glob of many such inputs; each case is written into OUTPUT/<case>/."
        ),
    )
    parser.add_argument("--input", "-i", required=True, help="DICOM folder/file, volume file, folder or glob")
    parser.add_argument(
        "--output", "-o", required=True, type=Path, help="output folder (one subfolder per case)"
    )
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, help="a pe-seg checkpoint (e.g. best.pt)")
    weights.add_argument(
        "--bundle",
        type=Path,
        help="a pe-seg MONAI bundle folder (bundles/pe_segmentation): its weights and the settings of its "
        "configs/inference.yaml; flags given here win",
    )
    weights.add_argument(
        "--nnunet",
        type=Path,
        metavar="MODEL_DIR",
        help="an nnU-Net v2 trained-model folder (plans.json, dataset.json, fold_N/checkpoint_final.pth), run "
        "with nnU-Net's preprocessing, windows and resampling (needs the nnunet extra; docs/inference.md)",
    )
    parser.add_argument("--series-uid", help="for one DICOM input with several series: the series to read")
    nnunet = parser.add_argument_group("nnU-Net models (--nnunet)")
    nnunet.add_argument(
        "--folds", nargs="+", metavar="N", help="folds to average (default: every fold_N with the checkpoint)"
    )
    nnunet.add_argument(
        "--label",
        metavar="NAME",
        help="the embolus label in dataset.json (default: the label whose name says embolus/PE/clot)",
    )
    nnunet.add_argument(
        "--nnunet-checkpoint",
        choices=["final", "best"],
        default="final",
        help="each fold's checkpoint_final.pth (default) or checkpoint_best.pth",
    )
    _add_run_flags(parser)
    _add_output_flags(parser)
    parser.set_defaults(handler=run_command)
    return parser


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Where and how the network runs: device, precision, windows, TTA, workers."""
    run = parser.add_argument_group("where and how the network runs")
    run.add_argument(
        "--device", default="auto", help="auto (CUDA when visible), cpu, cuda (every visible GPU) or cuda:N"
    )
    run.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto: bf16 on CPUs with native bf16 and on GPUs that have it, fp16 on other GPUs, else fp32",
    )
    run.add_argument(
        "--overlap", type=float, help="sliding-window overlap (default: the config's inference.overlap)"
    )
    run.add_argument(
        "--sw-batch-size", type=int, help="windows per forward pass (default: inference.sw_batch_size)"
    )
    run.add_argument("--tta", action="store_true", help="average over all axis flips (8x the network time)")
    run.add_argument(
        "--fast",
        action="store_true",
        help="1.5x coarser spacing than in training and no window overlap (see docs/inference.md for its cost)",
    )
    run.add_argument("--no-channels-last", action="store_true", help="keep the standard memory format")
    run.add_argument(
        "--memory-budget",
        type=float,
        metavar="GB",
        help="the most memory the process may use (GB = 2^30 bytes): the window batch (at most "
        "--sw-batch-size) and the stitching are chosen per case to stay under it, and a case that cannot is "
        "refused before the network runs (exit code 7). Default: what the machine has available, less a "
        "margin",
    )
    run.add_argument(
        "--workers",
        type=int,
        help="worker processes for many cases (default: one per GPU of --device cuda, else 1)",
    )


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    """Post-processing (threshold, smallest clot) and the optional outputs."""
    post = parser.add_argument_group("post-processing and outputs")
    post.add_argument(
        "--threshold", type=float, help="embolus probability threshold (default: inference.threshold)"
    )
    post.add_argument(
        "--min-peak",
        type=float,
        metavar="P",
        help="keep only clots whose highest probability reaches P (default: inference.min_peak; "
        "pe-seg evaluate prints P for each false-positive rate of its FROC)",
    )
    post.add_argument(
        "--min-volume",
        type=float,
        metavar="MM3",
        help="drop clots smaller than this (default: inference.min_volume_mm3)",
    )
    post.add_argument(
        "--qc",
        choices=["report", "strict"],
        help="scan quality checks: report (default) writes them and marks the findings of a failing scan "
        "unreliable; strict refuses such a scan (exit code 3)",
    )
    post.add_argument(
        "--no-territory",
        action="store_true",
        help="run every window and keep clots anywhere (default: only in the lungs and pulmonary arteries)",
    )
    post.add_argument("--save-probability", action="store_true", help="also write probability.nii.gz")
    post.add_argument("--no-dicom-seg", action="store_true", help="no seg.dcm for DICOM input")
    post.add_argument("--no-preview", action="store_true", help="no preview.png")
    post.add_argument(
        "--keep-phi",
        action="store_true",
        help="keep patient identity: a 'patient' block in report.json (default: the report, logs, file names "
        "and preview do not name the patient; see docs/reliability.md)",
    )
    post.add_argument(
        "--anonymous-seg",
        action="store_true",
        help="leave the CT's Patient and Study modules out of seg.dcm, for SEGs that leave the hospital "
        "(default: seg.dcm carries them unchanged, so that the archive files it into the CT's study)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Handler of ``pe-seg infer``: :func:`pe_segmentation.infer` with the flags; non-zero when a case failed."""
    run = infer(
        args.input,
        args.output,
        args.checkpoint,
        bundle=args.bundle,
        nnunet=args.nnunet,
        folds=args.folds,
        label=args.label,
        nnunet_checkpoint=args.nnunet_checkpoint,
        series_uid=args.series_uid,
        device=args.device,
        precision=args.precision,
        workers=args.workers,
        save_probability=True if args.save_probability else None,
        dicom_seg=False if args.no_dicom_seg else None,
        preview=False if args.no_preview else None,
        keep_phi=args.keep_phi,
        anonymous_seg=args.anonymous_seg,
        # MONAI's bar over the windows, on a terminal
        progress=sys.stderr.isatty() and not getattr(args, "quiet", False),
        overlap=args.overlap,
        sw_batch_size=args.sw_batch_size,
        threshold=args.threshold,
        min_peak=args.min_peak,
        min_volume_mm3=args.min_volume,
        tta=True if args.tta else None,
        fast=True if args.fast else None,
        channels_last=False if args.no_channels_last else None,
        memory_budget=args.memory_budget,
        qc=args.qc,
        territory=False if args.no_territory else None,
    )
    if run.failed:
        print(f"error: {len(run.failed)} of {len(run.results)} case(s) failed", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK
