"""Checkpoints of a run (:class:`CheckpointWriter`): best, last and every-N, atomic and ``weights_only``-loadable.

See :mod:`pe_segmentation.runtime.checkpoint` for why not MONAI's ``CheckpointSaver``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from pe_segmentation.io.atomic import remove_partial_outputs
from pe_segmentation.runtime.checkpoint import (
    BEST_NAME,
    CHECKPOINT_DIR,
    LAST_NAME,
    get_rng_state,
    package_versions,
    save_checkpoint,
)
from pe_segmentation.runtime.distributed import all_gather_objects
from pe_segmentation.training.handlers.run_state import RunRecord

log = logging.getLogger("pe_segmentation.training")


class CheckpointWriter:
    """Write ``best.pt`` (when a validation improves the Dice), ``last.pt`` (every epoch) and
    ``epoch_NNNN.pt`` (every ``every`` epochs) under ``<run_dir>/checkpoints``.

    Every rank calls it (each contributes its RNG state); only the writer (rank 0) writes.

    Args:
        run_dir: the run folder.
        record: the run's :class:`RunRecord`.
        state: callable returning the rest of the payload (model, optimizer, scheduler, scaler, config ...).
        every: keep a checkpoint every N epochs (0: never).
        write: whether this process writes (rank 0).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        record: RunRecord,
        state: Callable[[Engine], dict[str, Any]],
        every: int = 0,
        write: bool = True,
    ) -> None:
        self.directory = Path(run_dir) / CHECKPOINT_DIR
        self.record = record
        self.state = state
        self.every = int(every)
        self.write = write
        self.saved: dict[str, Path] = {}

    @property
    def best_path(self) -> Path:
        return self.directory / BEST_NAME

    @property
    def last_path(self) -> Path:
        return self.directory / LAST_NAME

    def attach(self, engine: Engine) -> None:
        if self.write:  # a run killed while writing a checkpoint left its temporary file (tens of MB) behind
            removed = remove_partial_outputs(self.directory)
            if removed:
                log.warning(
                    "removed %d partial checkpoint file(s) of an interrupted write: %s",
                    len(removed),
                    ", ".join(p.name for p in removed),
                )
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def payload(self, engine: Engine, kind: str) -> dict[str, Any]:
        record = self.record
        ranks = all_gather_objects(get_rng_state())
        payload = dict(self.state(engine))
        payload.update(
            kind=kind,
            trainer={
                "epoch": int(engine.state.epoch),
                "iteration": int(engine.state.iteration),
                "epoch_length": int(engine.state.epoch_length or 0),
                "max_epochs": int(engine.state.max_epochs or 0),
                **record.state_dict(),
            },
            metrics=dict(record.metrics) if record.validated(engine.state.epoch) else {},
            rng={"world_size": len(ranks), "ranks": ranks},
            versions=package_versions(),
        )
        return payload

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        payload = self.payload(engine, "last")  # collective: every rank takes part
        if not self.write:
            return
        save_checkpoint(self.last_path, payload)
        self.saved["last"] = self.last_path
        if self.record.validated(epoch) and self.record.improved:
            save_checkpoint(self.best_path, {**payload, "kind": "best"})
            self.saved["best"] = self.best_path
            log.info("best validation dice %.4f: saved %s", self.record.best_dice, self.best_path)
        if self.every and epoch % self.every == 0:
            path = self.directory / f"epoch_{epoch:04d}.pt"
            save_checkpoint(path, {**payload, "kind": "periodic"})
            self.saved[f"epoch_{epoch:04d}"] = path
