"""``pe-seg evaluate``: score predicted embolus masks against reference labels, or redraw a training run's curves.

Writes into ``--output``: ``per_case.csv``, ``emboli.csv``, ``summary.json`` (mean, median, SD and bootstrap 95%
CI per metric), ``boxplots.png``, ``report.md`` and, with ``--prob``, ``froc.csv`` and ``froc.png``. With
``--run RUN_DIR`` (or ``--pred`` naming a folder that holds ``metrics.csv``) it redraws ``curves.png`` from the
run's ``metrics.csv`` instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from pe_segmentation.errors import InputDataError

log = logging.getLogger(__name__)

RUN_METRICS = "metrics.csv"
RUN_CURVES = "curves.png"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command to ``pe-seg``'s sub-parsers."""
    parser = subparsers.add_parser(
        "evaluate",
        help="voxel metrics, per-embolus detection and FROC of predictions against labels",
        description=(
            "Score predicted embolus masks against reference labels: Dice, IoU, sensitivity, specificity, "
            "precision, accuracy, HD95, ASSD and normalised surface Dice per case (embolus class only); "
            "per-embolus sensitivity and false positives per scan; with --prob, an FROC curve with sensitivity "
            "at 0.5, 1, 2, 4 and 8 FP/scan. Writes CSV, JSON, PNG and a Markdown report. With --run, redraws "
            "a training run's curves from its metrics.csv."
        ),
    )
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument(
        "--pred", type=Path, help="predicted masks: a folder, a datalist .json or one volume file"
    )
    inputs.add_argument("--label", type=Path, help="reference labels: a folder, a datalist .json or one file")
    inputs.add_argument(
        "--prob",
        type=Path,
        help="embolus probability maps in [0, 1] (folder, datalist or file): enables FROC",
    )
    inputs.add_argument(
        "--run", type=Path, help="a training run folder: redraw curves.png from its metrics.csv"
    )
    inputs.add_argument("--section", default="training", help="datalist section to read (default: training)")
    inputs.add_argument("--pred-key", default="pred", help="datalist key of prediction paths (default: pred)")
    inputs.add_argument("--label-key", default="label", help="datalist key of label paths (default: label)")
    inputs.add_argument(
        "--prob-key", default="prob", help="datalist key of probability paths (default: prob)"
    )
    inputs.add_argument(
        "--strict", action="store_true", help="refuse unpaired predictions or labels instead of warning"
    )
    parser.add_argument("--output", "-o", type=Path, help="folder for the results (created)")
    scoring = parser.add_argument_group("scoring")
    scoring.add_argument(
        "--embolus-label",
        type=int,
        help="label value meaning embolus (default: every value > 0; use 1 when labels also mark arteries as 2)",
    )
    scoring.add_argument(
        "--nsd-tolerance",
        type=float,
        default=2.0,
        help="normalised surface Dice tolerance in mm (default: 2)",
    )
    scoring.add_argument(
        "--hit",
        choices=("overlap", "iou"),
        default="overlap",
        help="when a predicted component detects an embolus: overlap (default) or iou",
    )
    scoring.add_argument(
        "--hit-threshold",
        type=float,
        help="overlap: fraction of the embolus covered (default 0: any voxel); iou: minimum IoU (default 0.1)",
    )
    scoring.add_argument(
        "--froc-min-prob",
        type=float,
        default=0.1,
        help="FROC candidates are components of probability >= this (default: 0.1)",
    )
    scoring.add_argument(
        "--froc-interpolation",
        choices=("step", "linear"),
        default="step",
        help="reading sensitivity at fixed FP rates: step (conservative, default) or linear",
    )
    scoring.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs (default: 1000)"
    )
    scoring.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)
    return parser


def redraw_run(run_dir: Path, output: Path | None) -> Path:
    """Redraw ``curves.png`` of a training run from its ``metrics.csv`` (into ``output`` when given)."""
    from pe_segmentation.training.curves import metric_columns, plot_training_curves

    csv_path = run_dir / RUN_METRICS
    if not run_dir.is_dir():
        raise InputDataError(f"{run_dir}: training run folder not found")
    if not csv_path.is_file():
        raise InputDataError(f"{run_dir}: no {RUN_METRICS} (is this a training run folder?)")
    png = plot_training_curves(csv_path, (output or run_dir) / RUN_CURVES)
    columns = metric_columns(csv_path)
    dice = columns.get("val_dice")
    if dice is not None and np.isfinite(dice).any():
        best = int(np.nanargmax(dice))
        epoch = columns.get("epoch")
        where = (
            f"epoch {int(epoch[best])}"
            if epoch is not None and np.isfinite(epoch[best])
            else f"row {best + 1}"
        )
        log.info("best validation Dice %.4f at %s", dice[best], where)
    log.info("wrote %s", png)
    return png


def _hit_criterion(args: argparse.Namespace):  # -> HitCriterion
    from pe_segmentation.errors import ConfigError
    from pe_segmentation.evaluation.detection import HitCriterion

    threshold = args.hit_threshold
    if threshold is None:
        threshold = 0.0 if args.hit == "overlap" else 0.1
    try:
        return HitCriterion(args.hit, threshold)
    except ValueError as err:
        raise ConfigError(f"--hit-threshold: {err}") from err


def _log_summary(summary: dict) -> None:
    voxel, detection = summary["voxel"], summary["detection"]
    dice = voxel["dice"]
    if dice["n"]:
        log.info(
            "Dice %.3f (95%% CI %.3f to %.3f, median %.3f) over %d scans with emboli",
            dice["mean"],
            dice["ci95_low"],
            dice["ci95_high"],
            dice["median"],
            dice["n"],
        )
    if detection["emboli"]:
        log.info(
            "per-embolus sensitivity %.1f%% (%d/%d) at %.2f false positives per scan",
            100 * detection["sensitivity"],
            detection["detected"],
            detection["emboli"],
            detection["fp_per_scan"],
        )
    froc = summary.get("froc")
    if froc:
        readings = ", ".join(
            f"{100 * s:.0f}% @ {r:g}" for r, s in zip(froc["fp_rates"], froc["sensitivity"], strict=True)
        )
        log.info("FROC sensitivity at FP/scan: %s", readings)


def run(args: argparse.Namespace) -> int:
    """Handler of ``pe-seg evaluate``."""
    from pe_segmentation.errors import ConfigError

    run_dir = args.run
    if (
        run_dir is None
        and args.pred is not None
        and args.label is None
        and (args.pred / RUN_METRICS).is_file()
    ):
        run_dir = args.pred
    if run_dir is not None:
        if args.label is not None:
            raise ConfigError("--run redraws a training run's curves; it does not take --label")
        redraw_run(run_dir, args.output)
        return 0
    missing = [
        flag
        for flag, value in (("--pred", args.pred), ("--label", args.label), ("--output", args.output))
        if value is None
    ]
    if missing:
        raise ConfigError(f"evaluate needs {', '.join(missing)} (or --run RUN_DIR to redraw training curves)")

    from pe_segmentation.evaluation import EvaluationSettings, evaluate_cases, match_cases

    settings = EvaluationSettings(
        nsd_tolerance_mm=args.nsd_tolerance,
        hit=_hit_criterion(args),
        froc_min_probability=args.froc_min_prob,
        froc_interpolation=args.froc_interpolation,
        embolus_label=args.embolus_label,
        n_resamples=args.bootstrap,
        seed=args.seed,
    )
    matching = match_cases(
        args.pred,
        args.label,
        args.prob,
        section=args.section,
        pred_key=args.pred_key,
        label_key=args.label_key,
        prob_key=args.prob_key,
    )
    problems = matching.problems()
    if problems and args.strict:
        raise InputDataError("; ".join(problems))
    for line in problems:
        log.warning("%s", line)
    quiet = getattr(args, "quiet", False)
    progress = not (args.no_progress or quiet) and sys.stderr.isatty()  # no bar text in logs and pipes
    result = evaluate_cases(matching, args.output, settings, progress=progress)
    _log_summary(result.summary)
    log.info("wrote %s", result.files["report"])
    return 0
