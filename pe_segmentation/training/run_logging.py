"""Where a run's log lines and TensorBoard events go: ``train.log`` in the run folder and the console
(:class:`RunLogging`), and the run's TensorBoard writer (:func:`summary_writer`)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class RunLogging(contextlib.AbstractContextManager):
    """During a run: ``train.log`` in the run folder (rank 0) at INFO whatever the console shows; a console
    handler when the application configured none; other ranks quiet down to warnings."""

    def __init__(self, run_dir: Path | None, main: bool) -> None:
        self.run_dir = run_dir
        self.main = main
        self.logger = logging.getLogger("pe_segmentation")
        self._added: list[logging.Handler] = []
        self._levels: list[tuple[logging.Handler, int]] = []
        self._level = self.logger.level

    def __enter__(self) -> RunLogging:
        logger = self.logger
        if not self.main:
            logger.setLevel(logging.WARNING)
            return self
        effective = logger.getEffectiveLevel()
        if not logger.hasHandlers():
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(logging.Formatter("%(message)s"))
            console.setLevel(logging.INFO)
            self._add(console)
        elif effective > logging.INFO:
            for handler in logger.handlers:  # keep the console as quiet as it was while the file gets INFO
                if handler.level == logging.NOTSET:
                    self._levels.append((handler, handler.level))
                    handler.setLevel(effective)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            file = logging.FileHandler(self.run_dir / "train.log", encoding="utf-8")
            file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            file.setLevel(logging.INFO)
            self._add(file)
        if effective > logging.INFO:
            logger.setLevel(logging.INFO)
        return self

    def _add(self, handler: logging.Handler) -> None:
        self.logger.addHandler(handler)
        self._added.append(handler)

    def __exit__(self, *exc: object) -> None:
        for handler in self._added:
            self.logger.removeHandler(handler)
            handler.close()
        for handler, level in self._levels:
            handler.setLevel(level)
        self.logger.setLevel(self._level)


@contextlib.contextmanager
def summary_writer(run_dir: Path, enabled: bool, purge_step: int | None) -> Iterator[Any]:
    """The run's TensorBoard ``SummaryWriter`` on ``<run_dir>/tensorboard`` (closed on exit), or ``None`` when
    not ``enabled`` (``output.tensorboard`` off, or a rank other than 0)."""
    if not enabled:
        yield None
        return
    from torch.utils.tensorboard import SummaryWriter

    # purge_step: a resumed run drops events logged after its checkpoint by the interrupted one
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)
    try:
        yield writer
    finally:
        writer.close()
