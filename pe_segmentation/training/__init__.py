"""Training: MONAI's SupervisedTrainer and SupervisedEvaluator built from a config, with pe-seg's handlers, data
feeding, metrics, warmup LR schedule, run folder and multi-GPU (DDP) runs.

Train a run (what ``pe-seg train`` and :func:`pe_segmentation.train` call)::

    from pe_segmentation.config import load_config
    from pe_segmentation.training import run_training

    result = run_training(load_config("configs/unet.yaml", ["data.path=phantoms"]))
    print(result.best_dice, result.best_checkpoint)

See :mod:`pe_segmentation.training.trainer` for the run folder layout, resume and reproducibility, and
:mod:`pe_segmentation.runtime.distributed` for the processes of a multi-GPU run.
"""

from __future__ import annotations

from pe_segmentation.training.metrics import METRIC_NAMES, VAL_METRICS, foreground_metrics
from pe_segmentation.training.run_folder import ensure_new_run_folder, removed_if_refused
from pe_segmentation.training.schedule import WarmupDecayLR, build_scheduler, lr_at
from pe_segmentation.training.trainer import (
    TrainingResult,
    build_evaluator,
    build_loss_function,
    build_model,
    build_optimizer,
    build_trainer,
    resume_config,
    run_training,
    seed_everything,
    train_distributed,
)

__all__ = [
    "METRIC_NAMES",
    "VAL_METRICS",
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
    "removed_if_refused",
    "resume_config",
    "run_training",
    "seed_everything",
    "train_distributed",
]
