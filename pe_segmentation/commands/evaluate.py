"""``pe-seg evaluate``: score predicted embolus masks against reference labels, or redraw a training run's curves.

Writes into ``--output``: ``per_case.csv``, ``emboli.csv``, ``summary.json`` (mean, median, SD and bootstrap 95%
CI per metric), ``boxplots.png``, ``report.md``, with scans with and without emboli ``roc.png`` (study level,
scored from each prediction's ``report.json`` or its mask) and, with ``--prob``, ``froc.csv`` and ``froc.png``. With
``--run RUN_DIR`` (or ``--pred`` naming a folder that holds ``metrics.csv``) it redraws ``curves.png`` from the
run's ``metrics.csv`` instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pe_segmentation.api import evaluate, plot_training_run
from pe_segmentation.api.training import RUN_METRICS
from pe_segmentation.errors import ConfigError
from pe_segmentation.evaluation import EvaluationSettings, HitCriterion


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command to ``pe-seg``'s sub-parsers."""
    parser = subparsers.add_parser(
        "evaluate",
        help="voxel metrics, per-embolus detection and FROC of predictions against labels",
        description=(
            "Score predicted embolus masks against reference labels: Dice, IoU, sensitivity, specificity, "
            "precision, accuracy, HD95, ASSD and normalised surface Dice per case (embolus class only); "
            "per-embolus sensitivity and false positives per scan; study level (PE in the scan or not, scored "
            "from the report.json beside each prediction, else from its mask): sensitivity, specificity, ROC AUC; "
            "with --prob, an FROC curve with sensitivity at 0.5, 1, 2, 4 and 8 FP/scan. Writes CSV, JSON, PNG and a Markdown report. With --run, redraws "
            "a training run's curves from its metrics.csv."
        ),
    )
    _add_input_flags(parser)
    parser.add_argument("--output", "-o", type=Path, help="folder for the results (created)")
    _add_scoring_flags(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)
    return parser


def _add_input_flags(parser: argparse.ArgumentParser) -> None:
    """What to score: predictions, labels, probability maps (datalist keys), or a training run."""
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


def _add_scoring_flags(parser: argparse.ArgumentParser) -> None:
    """How to score: the embolus label, surface tolerance, hit rule, FROC candidates, bootstrap."""
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


def _hit_criterion(args: argparse.Namespace) -> HitCriterion:
    """The ``--hit`` rule with its threshold (0 for ``overlap``, 0.1 for ``dice`` when not given)."""
    threshold = args.hit_threshold
    if threshold is None:
        threshold = 0.0 if args.hit == "overlap" else 0.1
    try:
        return HitCriterion(args.hit, threshold)
    except ValueError as err:
        raise ConfigError(f"--hit-threshold: {err}") from err


def run(args: argparse.Namespace) -> int:
    """Handler of ``pe-seg evaluate``: :func:`pe_segmentation.evaluate`, or with ``--run`` the run's curves."""
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
        plot_training_run(run_dir, args.output)
        return 0
    missing = [
        flag
        for flag, value in (("--pred", args.pred), ("--label", args.label), ("--output", args.output))
        if value is None
    ]
    if missing:
        raise ConfigError(f"evaluate needs {', '.join(missing)} (or --run RUN_DIR to redraw training curves)")

    settings = EvaluationSettings(
        nsd_tolerance_mm=args.nsd_tolerance,
        hit=_hit_criterion(args),
        froc_min_probability=args.froc_min_prob,
        froc_interpolation=args.froc_interpolation,
        embolus_label=args.embolus_label,
        n_resamples=args.bootstrap,
        seed=args.seed,
    )
    evaluate(
        args.pred,
        args.label,
        args.output,
        prob=args.prob,
        settings=settings,
        section=args.section,
        pred_key=args.pred_key,
        label_key=args.label_key,
        prob_key=args.prob_key,
        strict=args.strict,
        # no bar text in logs and pipes
        progress=not (args.no_progress or getattr(args, "quiet", False)) and sys.stderr.isatty(),
    )
    return 0
