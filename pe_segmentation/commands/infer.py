"""``pe-seg infer``: segment emboli in new CTs with a trained checkpoint (or a pe-seg MONAI bundle).

Writes, per case, into ``OUTPUT/<case>/``: ``mask.nii.gz`` (uint8, 1 = embolus, the input's own grid),
``seg.dcm`` (DICOM SEG referencing the source series, for DICOM input), ``report.json`` (each clot's voxels,
volume in mL, centroid in patient mm, bounding box and probabilities; totals; timings; model file hash),
``preview.png`` (axial slices through the largest clots with the mask overlaid) and, with
``--save-probability``, ``probability.nii.gz``. A case appears whole or not at all. With several cases, a
case that fails is reported in one line, the others are finished, and the exit code is non-zero.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pe_segmentation.errors import EXIT_INPUT, EXIT_OK, ConfigError

log = logging.getLogger(__name__)


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
    parser.add_argument("--series-uid", help="for one DICOM input with several series: the series to read")
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
        "--workers",
        type=int,
        help="worker processes for many cases (default: one per GPU of --device cuda, else 1)",
    )
    post = parser.add_argument_group("post-processing and outputs")
    post.add_argument(
        "--threshold", type=float, help="embolus probability threshold (default: inference.threshold)"
    )
    post.add_argument(
        "--min-volume",
        type=float,
        metavar="MM3",
        help="drop clots smaller than this (default: inference.min_volume_mm3)",
    )
    post.add_argument("--save-probability", action="store_true", help="also write probability.nii.gz")
    post.add_argument("--no-dicom-seg", action="store_true", help="no seg.dcm for DICOM input")
    post.add_argument("--no-preview", action="store_true", help="no preview.png")
    post.add_argument(
        "--keep-phi",
        action="store_true",
        help="keep patient identity: a 'patient' block in report.json and the source's patient/study "
        "attributes in seg.dcm (default: no output names the patient; see docs/reliability.md)",
    )
    parser.set_defaults(handler=run_command)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise ConfigError(f"--threshold must be in (0, 1], got {args.threshold:g}")
    if args.min_volume is not None and args.min_volume < 0:
        raise ConfigError(f"--min-volume must be >= 0 mm^3, got {args.min_volume:g}")
    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap must be in [0, 1), got {args.overlap:g}")
    if args.sw_batch_size is not None and args.sw_batch_size < 1:
        raise ConfigError(f"--sw-batch-size must be >= 1, got {args.sw_batch_size}")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")


def _apply_bundle(args: argparse.Namespace) -> None:
    """``--bundle DIR``: take the bundle's checkpoint and inference settings where no flag says otherwise."""
    from pe_segmentation.bundle import read_bundle_inference

    bundle = read_bundle_inference(args.bundle)
    options = bundle.options
    args.checkpoint = bundle.checkpoint
    if args.precision == "auto":
        args.precision = bundle.precision
    for flag, key in (
        ("overlap", "overlap"),
        ("sw_batch_size", "sw_batch_size"),
        ("threshold", "threshold"),
        ("min_volume", "min_volume_mm3"),
    ):
        if getattr(args, flag) is None:
            setattr(args, flag, options.get(key))
    args.tta = args.tta or bool(options.get("tta", False))
    args.fast = args.fast or bool(options.get("fast", False))
    args.no_channels_last = args.no_channels_last or not options.get("channels_last", True)
    args.save_probability = args.save_probability or bundle.outputs["save_probability"]
    args.no_dicom_seg = args.no_dicom_seg or not bundle.outputs["dicom_seg"]
    args.no_preview = args.no_preview or not bundle.outputs["preview"]


def run_command(args: argparse.Namespace) -> int:
    """Discover the cases, build the predictor(s), segment and write every case; return the exit code."""
    import torch

    from pe_segmentation.inference.cases import CaseInput, discover_cases
    from pe_segmentation.inference.outputs import OutputOptions
    from pe_segmentation.inference.report import file_sha256
    from pe_segmentation.inference.runner import PredictorSpec, launcher_shard, run_cases
    from pe_segmentation.runtime.devices import inference_device, visible_devices
    from pe_segmentation.runtime.distributed import under_launcher

    if getattr(args, "bundle", None) is not None:
        _apply_bundle(args)
    _check_args(args)
    cases = discover_cases(args.input)
    if args.series_uid is not None:
        if len(cases) != 1:
            raise ConfigError(
                f"--series-uid applies to one DICOM input; {args.input} holds {len(cases)} cases"
            )
        cases = [CaseInput(cases[0].name, cases[0].path, args.series_uid)]

    prefix = ""
    if under_launcher():
        cases, rank, world = launcher_shard(cases)
        local = int(os.environ.get("LOCAL_RANK", rank))
        device = inference_device(args.device)
        devices = [torch.device("cuda", local) if device.type == "cuda" else device]
        prefix = f"rank {rank}/{world}: "
    else:
        devices = visible_devices(args.device)
        if args.workers is not None:
            devices = [devices[i % len(devices)] for i in range(args.workers)]
    if not cases:
        log.info("%sno case for this process", prefix)
        return EXIT_OK

    many_workers = len(devices) > 1 and len(cases) > 1
    options = {
        "overlap": args.overlap,
        "sw_batch_size": args.sw_batch_size,
        "threshold": args.threshold,
        "min_volume_mm3": args.min_volume,
        "tta": args.tta,
        "fast": args.fast,
        "channels_last": not args.no_channels_last,
        # MONAI's bar over the windows, for one process on a terminal
        "progress": sys.stderr.isatty()
        and not getattr(args, "quiet", False)
        and not many_workers
        and not prefix,
    }
    spec = PredictorSpec(str(args.checkpoint), args.precision, options)

    # Load the checkpoint here first: a bad checkpoint is one error, not one per case. Worker processes
    # build their own predictors, so this one then stays on the CPU.
    first = spec(torch.device("cpu") if many_workers else devices[0])
    model = {**first.model_info, "sha256": file_sha256(args.checkpoint)}
    predictor_spec = spec if many_workers else (lambda _device: first)
    output_options = OutputOptions(
        probability=args.save_probability,
        dicom_seg=not args.no_dicom_seg,
        preview=not args.no_preview,
        hu_window=tuple(first.config.preprocessing.hu_window),
        keep_phi=args.keep_phi,
    )
    log.info(
        "%s%d case(s); %s, %s precision%s%s",
        prefix,
        len(cases),
        ", ".join(str(d) for d in devices) if many_workers else first.device,
        "auto" if many_workers and args.precision == "auto" else first.precision.name,
        ", TTA" if args.tta else "",
        ", fast" if args.fast else "",
    )
    results = run_cases(cases, args.output, predictor_spec, devices, output_options, model)
    failed = [r for r in results if not r.ok]
    if len(results) > 1 or failed:
        log.info(
            "%s%d of %d case(s) written to %s%s",
            prefix,
            len(results) - len(failed),
            len(results),
            args.output,
            f"; failed: {', '.join(r.name for r in failed)}" if failed else "",
        )
    if failed:
        print(f"error: {len(failed)} of {len(results)} case(s) failed", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK
