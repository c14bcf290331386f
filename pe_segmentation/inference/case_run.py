"""One case through the predictor and the writers, and what became of it.

Each case is written into ``OUTPUT/<case>/`` through a staging folder (:func:`~pe_segmentation.inference.outputs.
staged_case_folder`), so a case that fails leaves no partial files; in a run of many cases the failure is reported
in one line and the other cases go on.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        qc_verdict: the scan quality checks' verdict (``pass``, ``warn``, ``fail``; empty when not run).
        qc_summary: the checks in one line.
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
    qc_verdict: str = ""
    qc_summary: str = ""


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
    device = str(predictor.device)
    try:
        if case.error is not None:
            raise InputDataError(case.error)
        with staged_case_folder(output, case.name) as folder:
            prediction = predictor.predict(case.path, case.series_uid, full_probability=options.probability)
            report = write_case(
                prediction, folder, case.name, options, model, settings=prediction.details, started=started
            )
    except PESegError as err:
        if not catch:
            raise
        return _failed(case, started, device, str(err), err.exit_code)
    except Exception as err:  # a bug on one odd case must not cost the user the other cases
        if not catch:
            raise
        log.debug("%s: internal error", case.name, exc_info=True)
        reason = f"internal error: {type(err).__name__}: {err} (run with --debug for the traceback)"
        return _failed(case, started, device, reason, EXIT_INTERNAL)
    totals = report["totals"]
    quality = prediction.quality
    return CaseResult(
        case.name,
        True,
        folder=str(output / case.name),
        clot_count=int(totals["clot_count"]),
        clot_burden_ml=float(totals["clot_burden_ml"]),
        seconds=time.perf_counter() - started,
        device=device,
        qc_verdict="" if quality is None else quality.verdict,
        qc_summary="" if quality is None else quality.summary_line(),
    )


def _failed(case: CaseInput, started: float, device: str, error: str, exit_code: int) -> CaseResult:
    return CaseResult(
        case.name,
        False,
        seconds=time.perf_counter() - started,
        device=device,
        error=error,
        exit_code=exit_code,
    )


def log_case_result(result: CaseResult, done: int, total: int) -> None:
    """Log one finished case as ``[done/total] name: N clot(s), X mL in S s -> folder`` (or why it failed)."""
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
        if result.qc_verdict == "fail":
            log.warning("%s: %s: its findings are unreliable", result.name, result.qc_summary)
        elif result.qc_summary:
            log.log(
                logging.WARNING if result.qc_verdict == "warn" else logging.INFO,
                "%s: %s",
                result.name,
                result.qc_summary,
            )
    else:
        log.error("[%d/%d] %s: failed: %s", done, total, result.name, result.error)


@contextlib.contextmanager
def collected_between_cases(enabled: bool = True) -> Iterator[Callable[[], None]]:
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
