"""Sub-commands of ``pe-seg``; each module has ``add_parser(subparsers)`` that sets ``handler``."""

from pe_segmentation.commands import convert, data_check, evaluate, infer, info, synth, train

ALL = (synth, info, convert, data_check, train, infer, evaluate)
