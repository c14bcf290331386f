"""Handlers shared by the training tests."""

from __future__ import annotations

from ignite.engine import Events


class Crash:
    """Raises after the checkpoints of epoch ``epoch`` are written, as a killed job would stop."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=self.epoch), self)

    def __call__(self, engine) -> None:
        raise RuntimeError("simulated crash")
