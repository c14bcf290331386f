"""Errors that pe-seg reports to users as one line and a distinct exit code.

Every error a user can cause (bad input file, bad config, bad checkpoint, an output that cannot be written)
is a :class:`PESegError` subclass. The CLI prints ``error: <message>`` and exits with the class's
``exit_code``; a traceback is shown only with ``--debug``. Anything else that escapes is a bug and exits
with :data:`EXIT_INTERNAL`.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2  # argparse's own code for bad command-line usage
EXIT_INPUT = 3
EXIT_CONFIG = 4
EXIT_CHECKPOINT = 5
EXIT_OUTPUT = 6
EXIT_MEMORY = 7
EXIT_INTERRUPTED = 130


class PESegError(Exception):
    """Base class of the errors users can cause; ``str(err)`` is the one-line message shown to them."""

    exit_code: int = EXIT_INTERNAL


class InputDataError(PESegError):
    """An input image, label or DICOM folder is missing, unreadable or inconsistent."""

    exit_code = EXIT_INPUT


class ScanQualityError(InputDataError):
    """The scan is readable but not a usable CTPA (``--qc strict``): no lungs in view, no contrast, ..."""


class ConfigError(PESegError):
    """A configuration file or override is invalid."""

    exit_code = EXIT_CONFIG


class CheckpointError(PESegError):
    """A checkpoint is missing, corrupt, unsafe, or belongs to another architecture."""

    exit_code = EXIT_CHECKPOINT


class OutputError(PESegError):
    """An output file or folder cannot be written."""

    exit_code = EXIT_OUTPUT


class MemoryBudgetError(PESegError):
    """A prediction cannot fit its memory budget (``--memory-budget``), said before the heavy work starts."""

    exit_code = EXIT_MEMORY


#: What torch's message says when it re-raises a DataLoader worker's exception (its traceback as text).
_WORKER_MARK = "DataLoader worker process"
#: A pe-seg error as the last line of a traceback: how torch passes a DataLoader worker's exception back.
_TRACEBACK_ERROR = re.compile(r"^pe_segmentation\.errors\.(\w+): (.+)$", re.MULTILINE)


def _from_worker_traceback(err: BaseException) -> PESegError | None:
    """The pe-seg error a DataLoader worker process raised: torch re-raises it in the main process as an
    exception whose message is the worker's formatted traceback, so the error survives only as text there.
    The first match is the root of the worker's exception chain."""
    text = str(err)
    if _WORKER_MARK not in text:
        return None
    for name, message in _TRACEBACK_ERROR.findall(text):
        kind = globals().get(name)
        if isinstance(kind, type) and issubclass(kind, PESegError):
            return kind(message.strip())
    return None


def user_error(err: BaseException) -> PESegError | None:
    """The :class:`PESegError` behind ``err``, if any: MONAI re-raises errors from inside a transform as
    ``RuntimeError("applying transform ...")``, keeping the original only as the cause; torch re-raises a
    DataLoader worker's errors with only their text (see :func:`_from_worker_traceback`)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, PESegError) and _WORKER_MARK not in str(current):
            return current
        found = _from_worker_traceback(current)
        if found is not None:
            return found
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
