"""Handlers shared by the training tests."""

from __future__ import annotations

from ignite.engine import Events

#: Settings under which a run learns the toy set within 5 epochs (loss falls, validation Dice above 0.6).
LEARNS_THE_TOY_SET = (
    "training.epochs=5",
    "patch.samples_per_volume=4",
    "training.batch_size=4",
    "schedule.warmup_epochs=0",
    "schedule.decay=constant",
    "validation.every=5",
)


class Crash:
    """Raises after the checkpoints of epoch ``epoch`` are written, as a killed job would stop."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=self.epoch), self)

    def __call__(self, engine) -> None:
        raise RuntimeError("simulated crash")
