"""Progress output of a run (:func:`attach_progress`): a progress bar on a terminal, MONAI ``StatsHandler``
lines otherwise."""

from __future__ import annotations

import logging
import sys

from ignite.engine import Engine


def attach_progress(
    trainer: Engine,
    evaluator: Engine | None,
    *,
    tty: bool | None = None,
    logger_name: str = "pe_segmentation.training",
) -> None:
    """Progress output: ignite's ``ProgressBar`` on a terminal, else MONAI ``StatsHandler`` lines (about ten
    per epoch) through the ``logger_name`` logger.

    Args:
        trainer: the training engine (its output holds ``loss``).
        evaluator: the validation engine, if any (a bar on a terminal; the epoch summary line covers it
            otherwise).
        tty: force the terminal (``True``) or plain-line (``False``) mode; ``None``: whether stderr is a
            terminal.
    """
    if tty is None:
        tty = sys.stderr.isatty()
    if tty:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False, desc="train").attach(
            trainer, output_transform=lambda out: {"loss": float(out["loss"])}
        )
        if evaluator is not None:
            ProgressBar(persist=False, desc="validate").attach(evaluator)
        return
    from monai.handlers import StatsHandler

    def every_tenth(engine: Engine, iteration: int) -> bool:
        length = engine.state.epoch_length or 1
        step = max(1, length // 10)
        within = (iteration - 1) % length + 1
        return within % step == 0 or within == length

    name = f"{logger_name}.progress"
    stats = StatsHandler(
        iteration_log=every_tenth,
        epoch_log=False,
        output_transform=lambda out: out["loss"].detach(),
        name=name,
        tag_name="loss",
    )
    # MONAI's get_logger gives a new named logger its own stdout handler and stops propagation; undo that
    # so that the lines go where pe-seg's other log lines go (console handler and train.log)
    stats.logger.handlers.clear()
    stats.logger.propagate = True
    stats.logger.setLevel(logging.NOTSET)
    stats.attach(trainer)
