"""Training: MONAI's SupervisedTrainer and SupervisedEvaluator built from a config, with pe-seg's handlers, data
feeding, metrics, warmup LR schedule, run folder and multi-GPU (DDP) runs.

Train a run (what ``pe-seg train`` and :func:`pe_segmentation.train` call)::

    from pe_segmentation.config import load_config
    from pe_segmentation.training import run_training

    result = run_training(load_config("configs/unet.yaml", ["data.path=phantoms"]))
    print(result.best_dice, result.best_checkpoint)

See :mod:`pe_segmentation.training.run` for the run folder layout, resume and reproducibility, and
:mod:`pe_segmentation.runtime.distributed` for the processes of a multi-GPU run.

Modules: :mod:`~pe_segmentation.training.launch` (:func:`run_training`, :func:`train_distributed`),
:mod:`~pe_segmentation.training.run` (one process's run), :mod:`~pe_segmentation.training.builders` (network,
loss, optimizer), :mod:`~pe_segmentation.training.engines` (trainer and evaluator),
:mod:`~pe_segmentation.training.handlers`, :mod:`~pe_segmentation.training.data` and
:mod:`~pe_segmentation.training.run_data` (cases, split, loaders), :mod:`~pe_segmentation.training.resume`,
:mod:`~pe_segmentation.training.run_folder`, :mod:`~pe_segmentation.training.run_logging`,
:mod:`~pe_segmentation.training.metrics`, :mod:`~pe_segmentation.training.schedule`,
:mod:`~pe_segmentation.training.curves` and :mod:`~pe_segmentation.training.preprocess` (``pe-seg
preprocess``).
"""

from __future__ import annotations

from pe_segmentation.training.builders import (
    build_loss_function,
    build_model,
    build_optimizer,
    seed_everything,
)
from pe_segmentation.training.engines import build_evaluator, build_trainer
from pe_segmentation.training.launch import run_training, train_distributed
from pe_segmentation.training.metrics import METRIC_NAMES, VAL_METRICS, foreground_metrics
from pe_segmentation.training.preprocess import PreprocessResult, preprocess_cases
from pe_segmentation.training.resume import resume_config
from pe_segmentation.training.run import TrainingResult
from pe_segmentation.training.run_folder import ensure_new_run_folder, removed_if_refused
from pe_segmentation.training.schedule import WarmupDecayLR, build_scheduler, lr_at

__all__ = [
    "METRIC_NAMES",
    "VAL_METRICS",
    "PreprocessResult",
    "TrainingResult",
    "WarmupDecayLR",
    "build_evaluator",
    "build_loss_function",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "build_trainer",
    "ensure_new_run_folder",
    "foreground_metrics",
    "lr_at",
    "preprocess_cases",
    "removed_if_refused",
    "resume_config",
    "run_training",
    "seed_everything",
    "train_distributed",
]
