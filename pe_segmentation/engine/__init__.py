"""Training engine: MONAI trainer/evaluator builders, handlers, LR schedule, checkpoints, precision and DDP.

Train a run (what ``pe-seg train`` calls)::

    from pe_segmentation.config import load_config
    from pe_segmentation.engine import run_training

    result = run_training(load_config("configs/unet.yaml", ["data.path=phantoms"]))
    print(result.best_dice, result.best_checkpoint)

See :mod:`pe_segmentation.engine.trainer` for the run folder layout, resume and reproducibility, and
:mod:`pe_segmentation.engine.distributed` for multi-GPU training.
"""

from __future__ import annotations

from pe_segmentation.engine.checkpoint import (
    check_architecture,
    find_resume_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)
from pe_segmentation.engine.distributed import DistributedContext, init_distributed, launch
from pe_segmentation.engine.metrics import METRIC_NAMES, VAL_METRICS, foreground_metrics
from pe_segmentation.engine.precision import Precision, cpu_supports_bf16, resolve_precision, select_device
from pe_segmentation.engine.schedule import WarmupDecayLR, build_scheduler, lr_at
from pe_segmentation.engine.trainer import (
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
    "DistributedContext",
    "Precision",
    "TrainingResult",
    "WarmupDecayLR",
    "build_evaluator",
    "build_loss_function",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "build_trainer",
    "check_architecture",
    "cpu_supports_bf16",
    "find_resume_checkpoint",
    "foreground_metrics",
    "init_distributed",
    "launch",
    "load_checkpoint",
    "load_model_weights",
    "lr_at",
    "resolve_precision",
    "resume_config",
    "run_training",
    "save_checkpoint",
    "seed_everything",
    "select_device",
    "train_distributed",
]
