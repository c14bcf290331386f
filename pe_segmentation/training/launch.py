"""The entry of a training run: :func:`run_training` (what ``pe-seg train`` and :func:`pe_segmentation.train`
call) sets this process up and runs :func:`~pe_segmentation.training.run.train_in_process`, or starts one DDP
process per GPU (:func:`train_distributed`), each of which calls :func:`run_training` in turn.

See :mod:`pe_segmentation.training.run` for the run folder, resume and reproducibility, and
:mod:`pe_segmentation.runtime.distributed` for the processes of a multi-GPU run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from pe_segmentation.config import Config
from pe_segmentation.errors import ConfigError
from pe_segmentation.runtime import distributed as ddp
from pe_segmentation.runtime.allocator import keep_freed_memory
from pe_segmentation.runtime.precision import select_device
from pe_segmentation.training.run import TrainingResult, train_in_process

log = logging.getLogger("pe_segmentation.training")


def run_training(
    config: Config,
    *,
    resume: str | os.PathLike[str] | None = None,
    init_weights: str | os.PathLike[str] | None = None,
    progress: bool = True,
    handlers: Sequence[Any] = (),
) -> TrainingResult:
    """Train a network as ``config`` describes and write the run folder (see :mod:`pe_segmentation.training.run`).

    With ``training.distributed: true`` outside a launcher, one process per visible GPU is started
    (:func:`train_distributed`); under ``torchrun`` each process runs this function.

    Args:
        config: the run config.
        resume: a run folder or checkpoint to continue exactly where it stopped (same epoch and iteration
            counters, same LR curve, optimizer and RNG states); the run continues in that checkpoint's folder.
            ``training.epochs`` may be raised to train longer (the LR curve then follows the new length).
        init_weights: a checkpoint whose network weights start this run (fine-tuning): optimizer, schedule and
            counters start afresh.
        progress: show per-iteration progress (a bar on a terminal, log lines otherwise); epoch summaries are
            logged either way.
        handlers: extra handlers (``attach(trainer)``), attached after pe-seg's own (not passed to processes
            started for ``training.distributed``).

    Returns:
        The :class:`TrainingResult` (on every rank).

    Raises:
        ConfigError: invalid settings (device, precision, no data path, a run folder that already holds a run).
        CheckpointError: an unreadable checkpoint, or one of another architecture.
        InputDataError: unreadable cases.
    """
    _check_arguments(config, resume, init_weights)
    if config.training.distributed and not ddp.under_launcher():
        count = torch.cuda.device_count()
        if count > 1:
            if handlers:
                log.warning("extra handlers are not passed to the %d training processes", count)
            return train_distributed(
                config, count, resume=resume, init_weights=init_weights, progress=progress
            )
        log.warning("training.distributed: %d GPU visible, training in one process", count)
    device, context = _set_up_process(config)
    try:
        return train_in_process(config, context, device, resume, init_weights, progress, handlers)
    finally:
        ddp.cleanup_distributed(context)


def _check_arguments(
    config: Config, resume: str | os.PathLike[str] | None, init_weights: str | os.PathLike[str] | None
) -> None:
    """Refuse what is not a run's config, and ``resume`` with ``init_weights`` (a resume restores weights)."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a pe_segmentation Config, got {type(config).__name__}")
    if resume is not None and init_weights is not None:
        raise ConfigError(
            "resume and init weights (--checkpoint) exclude each other: resume already restores weights"
        )


def _set_up_process(config: Config) -> tuple[torch.device, ddp.DistributedContext]:
    """This process's device (its GPU under a launcher) and place in the process group (joined here), with
    the CPU allocator set to reuse freed memory and the CPU cores shared out among processes that share it."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if ddp.under_launcher() else None
    device = select_device(config.training.device, local_rank)
    context = ddp.init_distributed(use_cuda=device.type == "cuda")
    if device.type == "cpu":
        keep_freed_memory()
    if context.distributed and device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # processes sharing the CPU: split its cores (as torchrun's OMP_NUM_THREADS=1 default does, less bluntly)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", context.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))
    return device, context


def _distributed_worker(
    config_data: dict[str, Any], resume: Any, init_weights: Any, progress: bool
) -> TrainingResult:
    """What each process started by :func:`train_distributed` runs (picklable arguments only)."""
    return run_training(
        Config.from_dict(config_data), resume=resume, init_weights=init_weights, progress=progress
    )


def train_distributed(
    config: Config,
    nprocs: int,
    *,
    resume: str | os.PathLike[str] | None = None,
    init_weights: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> TrainingResult:
    """Start ``nprocs`` training processes (DDP) on this machine and return rank 0's result.

    One process per GPU on CUDA (NCCL); on a CPU-only machine the processes share the CPU (gloo), which is how
    DDP is tested without GPUs. This is what ``--parallel`` does.
    """
    if nprocs > 1 and torch.cuda.is_available() and nprocs > torch.cuda.device_count():
        raise ConfigError(
            f"{nprocs} processes asked for, but only {torch.cuda.device_count()} GPU(s) are visible"
        )
    if torch.cuda.is_available() is False and config.training.device.startswith("cuda"):
        raise ConfigError(f"training.device {config.training.device}: no CUDA GPU visible")
    log.info("starting %d training processes", nprocs)
    return ddp.launch(
        _distributed_worker,
        nprocs,
        config.to_dict(),
        None if resume is None else str(resume),
        None if init_weights is None else str(init_weights),
        progress,
    )
