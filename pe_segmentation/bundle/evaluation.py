"""Scores a bundle's predictions against the cases' labels, as ``pe-seg evaluate`` does
(:func:`pe_segmentation.evaluate`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ignite.engine import Events

from pe_segmentation.api import evaluate
from pe_segmentation.bundle.inference import CaseInferenceEngine
from pe_segmentation.errors import InputDataError
from pe_segmentation.evaluation import CasePair, EvaluationResult, EvaluationSettings
from pe_segmentation.inference.outputs import MASK_NAME, PROBABILITY_NAME

log = logging.getLogger(__name__)


class EvaluationHandler:
    """Score the predictions of a :class:`CaseInferenceEngine` against the cases' labels when it completes.

    Writes what ``pe-seg evaluate`` writes (per-case and per-embolus CSVs, ``summary.json`` with bootstrap
    intervals, box plots, FROC with probability maps, ``report.md``) into ``output_dir`` and puts the headline
    numbers into ``engine.state.metrics``: ``dice`` (mean over scans with emboli), ``embolus_sensitivity`` and
    ``fp_per_scan``.

    Args:
        output_dir: the evaluation folder.
        n_resamples: bootstrap resamples for the 95% intervals.
        nsd_tolerance_mm: normalised surface Dice tolerance.
        seed: bootstrap seed.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        n_resamples: int = 1000,
        nsd_tolerance_mm: float = 2.0,
        seed: int = 0,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.settings = EvaluationSettings(
            nsd_tolerance_mm=nsd_tolerance_mm, n_resamples=n_resamples, seed=seed
        )
        self.result: EvaluationResult | None = None

    def attach(self, engine: CaseInferenceEngine) -> None:
        """Run at the end of ``engine``'s run."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: CaseInferenceEngine) -> None:
        pairs = []
        for item, result in engine.results:
            if not result.ok or result.folder is None:
                continue  # reported by the engine
            if not item.get("label"):
                raise InputDataError(f"{result.name}: no label to evaluate against (give labelled cases)")
            folder = Path(result.folder)
            probability = folder / PROBABILITY_NAME
            pairs.append(
                CasePair(
                    result.name,
                    folder / MASK_NAME,
                    Path(item["label"]),
                    probability if probability.is_file() else None,
                )
            )
        if not pairs:
            raise InputDataError("nothing to evaluate: no case was predicted")
        self.result = evaluate(pairs, output=self.output_dir, settings=self.settings)
        summary = self.result.summary
        metrics = {
            "dice": summary["voxel"]["dice"]["mean"],
            "embolus_sensitivity": summary["detection"]["sensitivity"],
            "fp_per_scan": summary["detection"]["fp_per_scan"],
        }
        engine.state.metrics.update(metrics)
        log.info(
            "evaluation of %d case(s): Dice %s, per-embolus sensitivity %s at %.2f FP/scan -> %s",
            len(pairs),
            _number(metrics["dice"]),
            _number(metrics["embolus_sensitivity"]),
            metrics["fp_per_scan"],
            self.result.files["report"],
        )


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"
