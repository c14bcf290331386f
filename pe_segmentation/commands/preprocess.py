"""``pe-seg preprocess``: preprocess a training config's cases once into the preprocessed store."""

from __future__ import annotations

import argparse
import sys

from pe_segmentation.api import dataset_overrides, preprocess
from pe_segmentation.commands.train import add_config_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="preprocess a training config's cases once, into the store that data.cache=store reads",
        description="Resample, crop and store every case of the config's data set (training and validation), "
        "so that `pe-seg train` with data.cache=store reads only the patches it samples. The store is "
        "data.store_dir (default <run_dir>/cache/store); cases already there with the same preprocessing "
        "are kept. Takes the flags of `pe-seg train` that choose the data and the preprocessing.",
    )
    add_config_arguments(parser, "preprocessing.spacing=[1,1,1]")
    parser.add_argument(
        "--dataset", help="datalist JSON, synthetic folder or images/labels folder (data.path)"
    )
    parser.add_argument("--store", help="the store's folder (data.store_dir)")
    parser.add_argument("--workers", type=int, help="cases preprocessed side by side (data.num_workers)")
    parser.add_argument(
        "--run-dir", "--output", dest="run_dir", help="output.run_dir (its split.json is kept)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``pe-seg preprocess``: :func:`pe_segmentation.api.preprocess` with the config of the flags;
    prints one summary line."""
    overrides = dataset_overrides(args.dataset) if args.dataset is not None else []
    for flag, key in (
        ("store", "data.store_dir"),
        ("workers", "data.num_workers"),
        ("run_dir", "output.run_dir"),
    ):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    result = preprocess(
        args.config,
        [*overrides, *args.overrides],
        progress=not args.no_progress and not args.quiet and sys.stderr.isatty(),
    )
    seconds = sorted(result.seconds)
    median = f", median {seconds[len(seconds) // 2]:.1f} s per case" if seconds else ""
    print(
        f"{result.store}: {result.cases} case(s), {result.written} preprocessed now{median}, "
        f"{result.reused} reused; {result.store_bytes / 1e6:.0f} MB (input files {result.source_bytes / 1e6:.0f} MB)"
    )
    return 0
