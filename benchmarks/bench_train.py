"""Seconds per training iteration: pe-seg's trainer against a bare PyTorch loop, same network, patch, batch, loss.

    .venv/bin/python benchmarks/bench_train.py [--epochs 8] [--patch 48] [--batch 2] [--precision auto]

* pe-seg: :func:`pe_segmentation.training.run_training` on synthetic phantoms (memory cache, random patches with
  augmentation, MONAI ``SupervisedTrainer`` with every handler of a real run: LR schedule, loss tracking,
  TensorBoard, progress lines, checkpoints). An iteration is timed from ignite's ``GET_BATCH_STARTED`` to the
  end of its ``ITERATION_COMPLETED`` handlers, so it includes waiting for data and the per-iteration handlers;
  epoch-end work (validation, checkpoints, plots) is not part of any iteration. The first epoch is warm-up.
* bare loop: ``zero_grad`` / forward under the same autocast / loss / ``backward`` / ``step`` (through a
  ``GradScaler`` for fp16, as any correct fp16 loop does) over batches that
  already sit in memory (the floor: no data pipeline, no engine); half of its iterations run before pe-seg's
  run and half after it.

Targets (issue 4): pe-seg at most 1.10x the bare loop, and less than 10% of pe-seg's iteration time spent
waiting for data. Medians over iterations. On a CUDA GPU (``--device cuda``, ``--precision auto``: fp16 autocast
with gradient scaling) it also prints patches per second; there ``--workers`` matters, since the GPU step is
short next to the CPU's patch sampling.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events

from pe_segmentation.config import Config
from pe_segmentation.data.phantom import PhantomSettings, generate_dataset
from pe_segmentation.runtime import resolve_precision, select_device
from pe_segmentation.runtime.allocator import keep_freed_memory
from pe_segmentation.training import (
    build_loss_function,
    build_model,
    build_optimizer,
    run_training,
    seed_everything,
)


class IterationTimer:
    """Per iteration: seconds from GET_BATCH_STARTED to the end of ITERATION_COMPLETED, and of those the
    seconds spent getting the batch. Attach it last so that its ITERATION_COMPLETED runs after the others."""

    def __init__(self, skip_epochs: int = 1) -> None:
        self.skip_epochs = skip_epochs
        self.iterations: list[float] = []
        self.data: list[float] = []
        self._start = self._got = 0.0

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._get_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._get_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _get_started(self, engine) -> None:
        self._start = time.perf_counter()

    def _get_completed(self, engine) -> None:
        self._got = time.perf_counter()

    def _completed(self, engine) -> None:
        if engine.state.epoch > self.skip_epochs:
            self.iterations.append(time.perf_counter() - self._start)
            self.data.append(self._got - self._start)


def bench_config(datalist_dir: Path, run_dir: Path, args: argparse.Namespace) -> Config:
    return Config.from_dict(
        {
            "data": {
                "dataset": "synthetic",
                "path": str(datalist_dir),
                "cache": "memory",
                "val_fraction": 0.2,
                "num_workers": args.workers,
            },
            "preprocessing": {"spacing": None},
            "patch": {"patch_size": [args.patch] * 3, "samples_per_volume": args.batch, "pos_fraction": 0.5},
            "model": {"name": args.network, "base_channels": args.base_channels, "depth": args.depth},
            "loss": {"name": "dice_ce"},
            "training": {
                "epochs": args.epochs,
                "batch_size": args.batch,
                "device": args.device,
                "precision": args.precision,
                "augment": not args.no_augment,
            },
            "validation": {"every": args.epochs, "sw_batch_size": 2},
            "output": {"run_dir": str(run_dir), "tensorboard": True},
        }
    )


def bare_loop(config: Config, iterations: int, warmup: int) -> list[float]:
    """The same step as the trainer's, over in-memory batches; seconds per iteration after ``warmup``."""
    device = select_device(config.training.device)
    precision = resolve_precision(config.training.precision, device)
    seed_everything(0)
    network = build_model(config).to(device)
    loss_function = build_loss_function(config).to(device)
    optimizer = build_optimizer(config, network.parameters())
    shape = (config.training.batch_size, 1, *config.patch.patch_size)
    batches = [
        (torch.rand(shape, device=device), (torch.rand(shape, device=device) > 0.9).float()) for _ in range(4)
    ]
    # fp16 needs gradient scaling to train correctly: a bare AMP loop has it too
    scaler = torch.amp.GradScaler("cuda") if precision.needs_grad_scaler else None
    network.train()
    times = []
    for index in range(warmup + iterations):
        image, label = batches[index % len(batches)]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            output = network(image)
        loss = loss_function(output, label)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="pe-seg epochs (the first is warm-up)")
    parser.add_argument("--cases", type=int, default=6, help="phantoms (20%% of them validate)")
    parser.add_argument("--shape", type=int, nargs=3, default=(112, 112, 96), help="phantom size in voxels")
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--batch", type=int, default=2, help="patches per iteration (= patches per volume)")
    parser.add_argument("--network", default="unet")
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0, help="data.num_workers")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet = logging.StreamHandler()
    quiet.setLevel(logging.WARNING)  # the run's INFO lines still go to its train.log
    logging.getLogger("pe_segmentation").addHandler(quiet)

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "phantoms"
        settings = PhantomSettings.for_field(shape=tuple(args.shape))
        generate_dataset(data_dir, cases=args.cases, seed=0, settings=settings, progress=False)
        config = bench_config(data_dir, Path(tmp) / "run", args)
        device = select_device(config.training.device)
        if device.type == "cpu":
            # pe-seg's CPU training keeps freed memory for reuse (engine/allocator.py), a process-wide setting:
            # the bare loop gets it from its start too, so that the ratio compares the loops alone
            keep_freed_memory()

        # the bare loop runs half before and half after pe-seg, so that load from other processes on a shared
        # machine drifting during the run biases neither side
        iterations = (args.epochs - 1) * args.cases  # about what pe-seg's measured epochs hold
        bare = bare_loop(config, iterations=max(4, iterations // 2), warmup=3)
        timer = IterationTimer(skip_epochs=1)
        start = time.perf_counter()
        result = run_training(config, progress=False, handlers=[timer])
        total = time.perf_counter() - start
        measured = len(timer.iterations)
        bare += bare_loop(config, iterations=max(4, iterations // 2), warmup=3)

    ours = statistics.median(timer.iterations)
    floor = statistics.median(bare)
    data_share = statistics.median(d / t for d, t in zip(timer.data, timer.iterations, strict=True))
    precision = resolve_precision(config.training.precision, device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"device {device} ({precision.name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load:.2f}"
    )
    print(
        f"{args.network} base {args.base_channels} depth {args.depth}, patch {args.patch}^3, batch {args.batch}, "
        f"dice_ce, Adam; {args.cases} phantoms {'x'.join(map(str, args.shape))}, "
        f"augmentation {'off' if args.no_augment else 'on'}, data workers {args.workers}"
    )
    print(f"pe-seg run: {result.epochs_run} epochs, {result.iterations} iterations, {total:.1f} s in all")
    print(f"pe-seg trainer : {ours * 1000:8.1f} ms/iteration (median of {measured}, epochs 2-{args.epochs})")
    print(f"bare loop      : {floor * 1000:8.1f} ms/iteration (median of {len(bare)})")
    print(f"patches/s      : pe-seg {args.batch / ours:7.1f}, bare loop {args.batch / floor:7.1f}")
    print(f"ratio pe-seg / bare: {ours / floor:.3f}  (target <= 1.10)")
    print(f"waiting for data: {100 * data_share:.1f}% of pe-seg's iteration time, median (target < 10%)")


if __name__ == "__main__":
    main()
