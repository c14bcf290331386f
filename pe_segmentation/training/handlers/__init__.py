"""Event handlers of the pe-seg trainer and evaluator (ignite handlers with MONAI's ``attach`` convention).

MONAI provides the engines, ``ValidationHandler``, ``LrScheduleHandler``, ``StatsHandler`` and the metric
handlers; the handlers here cover what MONAI's do not do the way a pe-seg run needs:

* :class:`TrainStats`: the learning rate of each iteration and the epoch's mean loss, averaged over DDP ranks.
* :class:`ValidationTracker`: best Dice, its epoch and validations without improvement (for early stop and the
  best checkpoint), kept in a :class:`RunRecord` that checkpoints save and resumes restore. (MONAI's
  ``EarlyStopHandler`` keeps its counter inside ignite's ``EarlyStopping``, outside any checkpoint.)
* :class:`MetricsLogger`: the per-epoch metrics CSV, the curves PNG (after every validation), TensorBoard
  scalars and one summary line per epoch. (MONAI's ``TensorBoardStatsHandler`` flushes the event file on every
  iteration and has no learning rate; MONAI has no CSV-per-epoch or plot writer.)
* :class:`ValidationImages`: TensorBoard picture of one axial slice of image, label and prediction. (MONAI's
  ``TensorBoardImageHandler`` writes a 3D volume as an animated GIF of every slice.)
* :class:`CheckpointWriter`: best / last / every-N checkpoints, atomic and ``weights_only``-loadable (see
  :mod:`pe_segmentation.runtime.checkpoint` for why not MONAI's ``CheckpointSaver``).
* :class:`EarlyStop`, :class:`GradientClipping`, :class:`EpochSeeding`, and :func:`attach_progress` (a progress
  bar on a terminal, MONAI ``StatsHandler`` lines otherwise).

Modules: :mod:`~pe_segmentation.training.handlers.run_state` (:class:`RunRecord`, :class:`ValidationTracker`,
:class:`EarlyStop`), :mod:`~pe_segmentation.training.handlers.loop` (:class:`EpochSeeding`,
:class:`GradientClipping`, :class:`TrainStats`), :mod:`~pe_segmentation.training.handlers.metrics_logger`,
:mod:`~pe_segmentation.training.handlers.images`, :mod:`~pe_segmentation.training.handlers.checkpoints` and
:mod:`~pe_segmentation.training.handlers.progress`.
"""

from __future__ import annotations

from pe_segmentation.training.handlers.checkpoints import CheckpointWriter
from pe_segmentation.training.handlers.images import ValidationImages
from pe_segmentation.training.handlers.loop import EpochSeeding, GradientClipping, TrainStats
from pe_segmentation.training.handlers.metrics_logger import MetricsLogger
from pe_segmentation.training.handlers.progress import attach_progress
from pe_segmentation.training.handlers.run_state import EarlyStop, RunRecord, ValidationTracker

__all__ = [
    "CheckpointWriter",
    "EarlyStop",
    "EpochSeeding",
    "GradientClipping",
    "MetricsLogger",
    "RunRecord",
    "TrainStats",
    "ValidationImages",
    "ValidationTracker",
    "attach_progress",
]
