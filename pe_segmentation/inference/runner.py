"""Run a predictor over many cases: one process on a CPU or one GPU, one worker per GPU, or under torchrun.

Each case is written into ``OUTPUT/<case>/`` through a staging folder (:func:`~pe_segmentation.inference.outputs.
staged_case_folder`), so a case that fails leaves no partial files; the failure is reported in one line and the
other cases go on. Progress is logged per case as it finishes.

* one device (the CPU, or one GPU): the cases run one after another in this process;
* several devices (``--device cuda`` with several visible GPUs): one spawned worker process per device takes
  the next case from a shared queue, so faster GPUs and smaller cases balance out;
* under ``torchrun`` (``WORLD_SIZE`` > 1): each process takes every ``WORLD_SIZE``-th case on its local GPU
  (or the CPU); no process group is needed.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pe_segmentation.errors import EXIT_INTERNAL, InputDataError, PESegError
from pe_segmentation.inference.cases import CaseInput
from pe_segmentation.inference.outputs import OutputOptions, staged_case_folder, write_case
from pe_segmentation.inference.predictor import Predictor

log = logging.getLogger(__name__)


@dataclass
class CaseResult:
    """What became of one case (plain data, so that it crosses process boundaries).

    Attributes:
        name: the case name.
        ok: whether every output was written.
        folder: the case's output folder (when ``ok``).
        clot_count: clots found.
        clot_burden_ml: their total volume.
        seconds: wall time of the case.
        device: where it ran.
        error: the one-line reason of a failure.
        exit_code: the failure's exit code (:mod:`pe_segmentation.errors`).
    """

    name: str
    ok: bool
    folder: str | None = None
    clot_count: int = 0
    clot_burden_ml: float = 0.0
    seconds: float = 0.0
    device: str = ""
    error: str | None = None
    exit_code: int = 0


@dataclass(frozen=True)
class PredictorSpec:
    """How to build the predictor on a given device (picklable, for worker processes).

    Attributes:
        checkpoint: the checkpoint file.
        precision: ``--precision``.
        options: keyword arguments of :class:`~pe_segmentation.inference.predictor.Predictor`.
    """

    checkpoint: str
    precision: str = "auto"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, device: torch.device | str) -> Predictor:
        return Predictor.from_checkpoint(
            self.checkpoint, device=device, precision=self.precision, **self.options
        )  # type: ignore[arg-type]


def run_case(
    predictor: Predictor,
    case: CaseInput,
    output: Path,
    options: OutputOptions,
    model: Mapping[str, Any],
    catch: bool = True,
) -> CaseResult:
    """Predict one case and write its outputs through a staging folder.

    Args:
        predictor: the predictor.
        case: the case.
        output: the run's output folder (the case goes into ``output/<case.name>``).
        options: optional outputs.
        model: the model's identity for the report.
        catch: turn errors into a failed :class:`CaseResult` (multi-case runs); otherwise they propagate
            (after the staging folder is removed).
    """
    started = time.perf_counter()
    try:
        if case.error is not None:
            raise InputDataError(case.error)
        with staged_case_folder(output, case.name) as folder:
            prediction = predictor.predict(case.path, case.series_uid, full_probability=options.probability)
            report = write_case(
                prediction,
                folder,
                case.name,
                options,
                model,
                settings=prediction.details,
                started=started,
            )
    except PESegError as err:
        if not catch:
            raise
        return CaseResult(
            case.name,
            False,
            seconds=time.perf_counter() - started,
            device=str(predictor.device),
            error=str(err),
            exit_code=err.exit_code,
        )
    except Exception as err:  # a bug on one odd case must not cost the user the other cases
        if not catch:
            raise
        log.debug("%s: internal error", case.name, exc_info=True)
        return CaseResult(
            case.name,
            False,
            seconds=time.perf_counter() - started,
            device=str(predictor.device),
            error=f"internal error: {type(err).__name__}: {err} (run with --debug for the traceback)",
            exit_code=EXIT_INTERNAL,
        )
    totals = report["totals"]
    return CaseResult(
        case.name,
        True,
        folder=str(output / case.name),
        clot_count=int(totals["clot_count"]),
        clot_burden_ml=float(totals["clot_burden_ml"]),
        seconds=time.perf_counter() - started,
        device=str(predictor.device),
    )


def _log_result(result: CaseResult, done: int, total: int) -> None:
    where = f" on {result.device}" if result.device else ""
    if result.ok:
        log.info(
            "[%d/%d] %s: %d clot(s), %.2f mL in %.1f s%s -> %s",
            done,
            total,
            result.name,
            result.clot_count,
            result.clot_burden_ml,
            result.seconds,
            where,
            result.folder,
        )
    else:
        log.error("[%d/%d] %s: failed: %s", done, total, result.name, result.error)


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
    on_result: Callable[[CaseResult, int, int], None] = _log_result,
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
        with _collected_between_cases(len(cases) > 1) as collect:
            for index, case in enumerate(cases, start=1):
                result = run_case(predictor, case, output, options, model, catch=len(cases) > 1)
                collect()
                results.append(result)
                on_result(result, index, len(cases))
        return results
    return _run_workers(cases, output, spec, list(devices[:workers]), options, model, on_result)


@contextlib.contextmanager
def _collected_between_cases(enabled: bool = True) -> Iterator[Callable[[], None]]:
    """Yield a function that frees the last case's reference cycles, cheaply; keeps memory flat over many cases.

    A case leaves cyclic garbage (a preview's matplotlib figure holds its render buffers in cycles), which only
    a full collection frees; with torch and MONAI loaded Python runs one rarely, so memory rose by about 45 MB
    over the first 15 small cases. A full collection costs about 0.2 s over the objects of the loaded
    libraries, so those are frozen (left out of collections) for the duration of the run: each per-case
    collection then takes about 10 ms.
    """

    def collect() -> None:
        if enabled:
            gc.collect()

    if enabled:
        gc.collect()
        gc.freeze()
    try:
        yield collect
    finally:
        if enabled:
            gc.unfreeze()


def _worker(
    rank: int,
    device: str,
    spec: Any,
    cases: Sequence[CaseInput],
    output: str,
    options: OutputOptions,
    model: Mapping[str, Any],
    tasks: Any,
    results: Any,
    threads: int,
) -> None:
    """Worker process: build the predictor on ``device``, then take cases until the queue says stop."""
    logging.getLogger("pe_segmentation").setLevel(logging.WARNING)
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        predictor = spec(torch.device(device))
    except Exception as err:  # report why this worker cannot run and let the others go on
        results.put(("fatal", rank, f"{device}: cannot start a worker ({type(err).__name__}: {err})"))
        return
    with _collected_between_cases() as collect:
        while True:
            index = tasks.get()
            if index is None:
                return
            results.put(("start", rank, index))
            result = run_case(predictor, cases[index], Path(output), options, model, catch=True)
            collect()
            results.put(("done", rank, index, result))


def _run_workers(
    cases: Sequence[CaseInput],
    output: Path,
    spec: Any,
    devices: list[torch.device],
    options: OutputOptions,
    model: Mapping[str, Any],
    on_result: Callable[[CaseResult, int, int], None],
) -> list[CaseResult]:
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    tasks, results = context.Queue(), context.Queue()
    for index in range(len(cases)):
        tasks.put(index)
    for _ in devices:
        tasks.put(None)
    cpu_workers = sum(d.type == "cpu" for d in devices)
    threads = max(1, torch.get_num_threads() // cpu_workers) if cpu_workers else 0
    processes = [
        context.Process(
            target=_worker,
            args=(
                rank,
                str(device),
                spec,
                list(cases),
                str(output),
                options,
                dict(model),
                tasks,
                results,
                threads,
            ),
            daemon=True,
        )
        for rank, device in enumerate(devices)
    ]
    for process in processes:
        process.start()
    log.info("%d case(s) on %d workers: %s", len(cases), len(devices), ", ".join(str(d) for d in devices))
    finished: dict[int, CaseResult] = {}
    running: dict[int, int] = {}  # worker rank -> case index in flight
    stopped: set[int] = set()
    while len(finished) < len(cases):
        try:
            message = results.get(timeout=1.0)
        except queue.Empty:
            message = None
        if message is not None:
            kind, rank = message[0], message[1]
            if kind == "start":
                running[rank] = message[2]
            elif kind == "done":
                running.pop(rank, None)
                finished[message[2]] = message[3]
                on_result(message[3], len(finished), len(cases))
            else:
                log.error("worker %d: %s", rank, message[2])
                stopped.add(rank)
            continue
        for rank, process in enumerate(processes):
            if rank in stopped or process.is_alive():
                continue
            stopped.add(rank)
            index = running.pop(rank, None)
            if index is not None and index not in finished:
                result = CaseResult(
                    cases[index].name,
                    False,
                    device=str(devices[rank]),
                    error=f"worker on {devices[rank]} died (exit code {process.exitcode})",
                    exit_code=EXIT_INTERNAL,
                )
                finished[index] = result
                on_result(result, len(finished), len(cases))
        if len(stopped) == len(processes):  # nobody left to take the remaining cases
            for index, case in enumerate(cases):
                if index not in finished:
                    finished[index] = CaseResult(
                        case.name, False, error="no worker left to run it", exit_code=EXIT_INTERNAL
                    )
                    on_result(finished[index], len(finished), len(cases))
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
    return [finished[index] for index in range(len(cases))]
