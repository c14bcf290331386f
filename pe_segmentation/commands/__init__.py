"""Sub-commands of ``pe-seg``: each module has ``add_parser(subparsers)``, which sets the ``handler`` that turns
the parsed flags into a call of the library API (:mod:`pe_segmentation.api`)."""

from __future__ import annotations

from pe_segmentation.commands import (
    checkpoint,
    convert,
    data_check,
    evaluate,
    infer,
    info,
    plan,
    preprocess,
    synth,
    train,
)

__all__ = [
    "checkpoint",
    "convert",
    "data_check",
    "evaluate",
    "infer",
    "info",
    "plan",
    "preprocess",
    "synth",
    "train",
]
