"""Sub-commands of ``pe-seg``; each module has ``add_parser(subparsers)`` that sets ``handler``."""

ALL: tuple = ()
