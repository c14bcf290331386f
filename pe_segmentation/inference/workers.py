"""Many cases over several devices: one spawned worker process per device takes the next case from a shared
queue, so faster GPUs and smaller cases balance out; a worker that dies costs only the case it held."""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from pe_segmentation.errors import EXIT_INTERNAL
from pe_segmentation.inference.case_run import CaseResult, collected_between_cases, run_case
from pe_segmentation.inference.cases import CaseInput
from pe_segmentation.inference.outputs import OutputOptions

log = logging.getLogger(__name__)


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
    with collected_between_cases() as collect:
        while True:
            index = tasks.get()
            if index is None:
                return
            results.put(("start", rank, index))
            result = run_case(predictor, cases[index], Path(output), options, model, catch=True)
            collect()
            results.put(("done", rank, index, result))


def run_workers(
    cases: Sequence[CaseInput],
    output: Path,
    spec: Any,
    devices: list[torch.device],
    options: OutputOptions,
    model: Mapping[str, Any],
    on_result: Callable[[CaseResult, int, int], None],
) -> list[CaseResult]:
    """Segment ``cases`` with one spawned worker per device (``spec`` builds each worker's predictor and must
    pickle); results come back in the order of ``cases``, each also passed to ``on_result`` as it finishes."""
    context = mp.get_context("spawn")
    tasks, results = context.Queue(), context.Queue()
    for index in range(len(cases)):
        tasks.put(index)
    for _ in devices:
        tasks.put(None)
    cpu_workers = sum(d.type == "cpu" for d in devices)
    threads = max(1, torch.get_num_threads() // cpu_workers) if cpu_workers else 0
    shared = (spec, list(cases), str(output), options, dict(model), tasks, results, threads)
    processes = [
        context.Process(target=_worker, args=(rank, str(device), *shared), daemon=True)
        for rank, device in enumerate(devices)
    ]
    for process in processes:
        process.start()
    log.info("%d case(s) on %d workers: %s", len(cases), len(devices), ", ".join(str(d) for d in devices))
    tracker = _Progress(cases, devices, on_result)
    while not tracker.done:
        try:
            tracker.receive(results.get(timeout=1.0))
        except queue.Empty:
            tracker.check_alive(processes)
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
    return tracker.in_order()


class _Progress:
    """The parent's view of a worker pool: which case each worker holds, which are finished, who has stopped.

    A worker that dies (killed, out of memory) fails only the case it held; when every worker has stopped, the
    cases nobody took fail with a reason instead of the run waiting forever.
    """

    def __init__(
        self,
        cases: Sequence[CaseInput],
        devices: Sequence[torch.device],
        on_result: Callable[[CaseResult, int, int], None],
    ) -> None:
        self.cases = cases
        self.devices = devices
        self.on_result = on_result
        self.finished: dict[int, CaseResult] = {}
        self.running: dict[int, int] = {}  # worker rank -> case index in flight
        self.stopped: set[int] = set()

    @property
    def done(self) -> bool:
        return len(self.finished) == len(self.cases)

    def finish(self, index: int, result: CaseResult) -> None:
        self.finished[index] = result
        self.on_result(result, len(self.finished), len(self.cases))

    def receive(self, message: tuple[Any, ...]) -> None:
        """A worker's message: ``("start", rank, index)``, ``("done", rank, index, result)`` or
        ``("fatal", rank, reason)``."""
        kind, rank = message[0], message[1]
        if kind == "start":
            self.running[rank] = message[2]
        elif kind == "done":
            self.running.pop(rank, None)
            self.finish(message[2], message[3])
        else:
            log.error("worker %d: %s", rank, message[2])
            self.stopped.add(rank)

    def check_alive(self, processes: Sequence[Any]) -> None:
        """Fail the case of each worker that died, and every case left once no worker is left."""
        for rank, process in enumerate(processes):
            if rank in self.stopped or process.is_alive():
                continue
            self.stopped.add(rank)
            index = self.running.pop(rank, None)
            if index is not None and index not in self.finished:
                device = self.devices[rank]
                reason = f"worker on {device} died (exit code {process.exitcode})"
                self.finish(
                    index,
                    CaseResult(
                        self.cases[index].name,
                        False,
                        device=str(device),
                        error=reason,
                        exit_code=EXIT_INTERNAL,
                    ),
                )
        if len(self.stopped) == len(processes):
            for index, case in enumerate(self.cases):
                if index not in self.finished:
                    self.finish(
                        index,
                        CaseResult(
                            case.name, False, error="no worker left to run it", exit_code=EXIT_INTERNAL
                        ),
                    )

    def in_order(self) -> list[CaseResult]:
        return [self.finished[index] for index in range(len(self.cases))]
