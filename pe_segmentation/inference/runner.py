"""Run a predictor over many cases: one process on a CPU or one GPU, one worker per GPU, or under torchrun.

Each case is written whole or not at all (:mod:`pe_segmentation.inference.case_run`); progress is logged per case
as it finishes.

* one device (the CPU, or one GPU): the cases run one after another in this process;
* several devices (``--device cuda`` with several visible GPUs): one spawned worker process per device takes
  the next case from a shared queue, so faster GPUs and smaller cases balance out;
* under ``torchrun`` (``WORLD_SIZE`` > 1): each process takes every ``WORLD_SIZE``-th case on its local GPU
  (or the CPU); no process group is needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pe_segmentation.inference.case_run import CaseResult, collected_between_cases, log_case_result, run_case
from pe_segmentation.inference.cases import CaseInput
from pe_segmentation.inference.nnunet import NnUNetModelPredictor
from pe_segmentation.inference.outputs import OutputOptions
from pe_segmentation.inference.predictor import Predictor
from pe_segmentation.inference.workers import run_workers


@dataclass(frozen=True)
class PredictorSpec:
    """How to build the predictor on a given device (picklable, for worker processes).

    Attributes:
        checkpoint: the checkpoint file (an nnU-Net model folder with ``nnunet``).
        precision: ``--precision``.
        options: keyword arguments of :class:`~pe_segmentation.inference.predictor.Predictor`.
        nnunet: for an nnU-Net model folder, the keyword arguments of
            :meth:`~pe_segmentation.inference.nnunet.NnUNetModelPredictor.from_folder` (``folds``, ``label``,
            ``checkpoint``); ``None`` for a pe-seg checkpoint.
    """

    checkpoint: str
    precision: str = "auto"
    options: Mapping[str, Any] = field(default_factory=dict)
    nnunet: Mapping[str, Any] | None = None

    def __call__(self, device: torch.device | str) -> Predictor:
        """The predictor on ``device``."""
        if self.nnunet is not None:
            return NnUNetModelPredictor.from_folder(
                self.checkpoint, device=str(device), precision=self.precision, **self.nnunet, **self.options
            )
        return Predictor.from_checkpoint(
            self.checkpoint, device=str(device), precision=self.precision, **self.options
        )


def launcher_shard(cases: Sequence[CaseInput]) -> tuple[list[CaseInput], int, int]:
    """Under torchrun: this process's cases (every ``WORLD_SIZE``-th from ``RANK``), rank and world size."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return list(cases[rank::world]), rank, world


def run_cases(
    cases: Sequence[CaseInput],
    output: Path,
    spec: PredictorSpec | Callable[[torch.device], Predictor],
    devices: Sequence[torch.device],
    options: OutputOptions,
    model: Mapping[str, Any],
    on_result: Callable[[CaseResult, int, int], None] = log_case_result,
) -> list[CaseResult]:
    """Segment ``cases`` into ``output``, spreading them over ``devices`` (one worker per device).

    A single case is not caught: its error propagates with its own exit code. With several cases each
    failure becomes a failed :class:`CaseResult` and the others go on.

    Args:
        cases: from :func:`~pe_segmentation.inference.cases.discover_cases`.
        output: the output folder.
        spec: builds the predictor for a device (a :class:`PredictorSpec` for worker processes).
        devices: the devices to use; several start one worker process each (``spec`` must then pickle).
        options: optional outputs.
        model: the model's identity for the reports.
        on_result: called as each case finishes, with the result, the number done and the total.

    Returns:
        One result per case, in the order of ``cases``.
    """
    if not cases:
        return []
    if not devices:
        raise ValueError("no device to run on")
    workers = min(len(devices), len(cases))
    if workers == 1:
        predictor = spec(devices[0])
        results = []
        with collected_between_cases(len(cases) > 1) as collect:
            for index, case in enumerate(cases, start=1):
                result = run_case(predictor, case, output, options, model, catch=len(cases) > 1)
                collect()
                results.append(result)
                on_result(result, index, len(cases))
        return results
    return run_workers(cases, output, spec, list(devices[:workers]), options, model, on_result)
