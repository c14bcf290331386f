"""The ``pe-seg`` command line: one sub-command per job.

Each sub-command parses its flags here and calls the library function that does the work, so the CLI,
the MONAI bundle and the tests share one implementation. User errors (:class:`PESegError`) print one line
and exit with their own code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

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
from pe_segmentation.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, user_error
from pe_segmentation.versions import __version__

log = logging.getLogger("pe_segmentation")

Handler = Callable[[argparse.Namespace], int]

#: The sub-commands in the order ``pe-seg --help`` lists them.
COMMANDS = (synth, info, convert, data_check, plan, preprocess, train, infer, evaluate, checkpoint)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pe-seg", description="Pulmonary-embolism segmentation on CT pulmonary angiography."
    )
    parser.add_argument("--version", action="version", version=f"pe-seg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(commands)
    return parser


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if debug else "%(message)s"))
    root = logging.getLogger("pe_segmentation")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # ignite's engines log "run is terminating due to exception: ..." before re-raising; the CLI reports that
    # error itself, in one line (the tracebacks stay available with --debug)
    logging.getLogger("ignite.engine.engine").setLevel(logging.NOTSET if debug else logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pe-seg`` with ``argv`` (default: ``sys.argv[1:]``) and return its exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.debug, args.quiet)
    handler: Handler = args.handler
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        found = user_error(err)
        if found is not None:
            if args.debug:
                log.exception("error")
            print(f"error: {found}", file=sys.stderr)
            return found.exit_code
        if args.debug:  # a bug: say so plainly, keep the traceback for --debug
            raise
        print(
            f"internal error: {type(err).__name__}: {err} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
