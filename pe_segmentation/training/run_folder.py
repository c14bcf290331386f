"""The run folder of a new run: refused when it already holds a run, removed when the run was refused.

:func:`ensure_new_run_folder` is the one place that says when a folder already holds a run (its
``checkpoints/last.pt`` exists), for ``pe-seg train`` (``output.run_dir``) and the MONAI bundle (``output_dir``)
alike; :func:`removed_if_refused` keeps a refused run from leaving a folder that looks like a run behind.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from pe_segmentation.errors import ConfigError, user_error


def _holds_a_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run: a ``last.pt`` is what ``--resume`` continues from."""
    return (run_dir / "checkpoints" / "last.pt").exists()


def ensure_new_run_folder(run_dir: Path, option: str = "output.run_dir") -> None:
    """Refuse to start a new run in a folder that already holds one (its checkpoints would be overwritten).

    Args:
        run_dir: the folder the new run would write to.
        option: the name of the setting that chose the folder, as the user knows it (``output.run_dir`` for
            ``pe-seg train``, ``output_dir`` for the bundle).

    Raises:
        ConfigError: ``run_dir`` holds ``checkpoints/last.pt``; the message says how to resume it instead.
    """
    if _holds_a_run(run_dir):
        raise ConfigError(
            f"{option} {run_dir} already holds a run (checkpoints/last.pt): resume it with "
            f"--resume {run_dir}, or choose another {option}"
        )


@contextlib.contextmanager
def removed_if_refused(run_dir: Path | None) -> Iterator[None]:
    """Remove ``run_dir`` if this run created it and fails with a user error before its first checkpoint.

    A run refused for its data, config or checkpoint then leaves nothing that looks like a run; a run that
    wrote a checkpoint is kept (it can be resumed), and so is any folder that existed before.
    """
    created = run_dir is not None and not run_dir.exists()
    try:
        yield
    except Exception as err:  # user errors only, also when MONAI wrapped them (a transform refusing a label)
        refused = user_error(err) is not None
        if refused and created and run_dir is not None and not _holds_a_run(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
