"""How cases are scored: :class:`EvaluationSettings`, checked once when built and recorded in ``summary.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pe_segmentation.errors import ConfigError
from pe_segmentation.evaluation.detection import FROC_FP_RATES, HitCriterion


@dataclass(frozen=True)
class EvaluationSettings:
    """How cases are scored.

    Attributes:
        nsd_tolerance_mm: tolerance of the normalised surface Dice, in mm.
        hit: when a predicted component detects an embolus.
        froc_min_probability: probability maps are cut at this level into FROC candidates.
        froc_interpolation: how sensitivity is read at fixed FP rates: ``step`` or ``linear``.
        fp_rates: the FP-per-scan rates to report FROC sensitivity at.
        embolus_label: the label value meaning embolus; ``None``: every value > 0.
        n_resamples: bootstrap resamples for confidence intervals (0: none).
        seed: bootstrap seed.
        geometry_tolerance: largest affine difference (mm) accepted between files of one case.
    """

    nsd_tolerance_mm: float = 2.0
    hit: HitCriterion = field(default_factory=HitCriterion)
    froc_min_probability: float = 0.1
    froc_interpolation: str = "step"
    fp_rates: tuple[float, ...] = FROC_FP_RATES
    embolus_label: int | None = None
    n_resamples: int = 1000
    seed: int = 0
    geometry_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nsd_tolerance_mm) and self.nsd_tolerance_mm >= 0):
            raise ConfigError(
                f"NSD tolerance must be a finite number of mm >= 0, got {self.nsd_tolerance_mm}"
            )
        if not 0 < self.froc_min_probability <= 1:
            raise ConfigError(f"FROC minimum probability must be in (0, 1], got {self.froc_min_probability}")
        if self.froc_interpolation not in ("step", "linear"):
            raise ConfigError(
                f"FROC interpolation must be 'step' or 'linear', got {self.froc_interpolation!r}"
            )
        if not self.fp_rates or any(not (math.isfinite(r) and r > 0) for r in self.fp_rates):
            raise ConfigError(f"FROC FP rates must be positive numbers, got {list(self.fp_rates)}")
        if self.embolus_label is not None and (
            isinstance(self.embolus_label, bool) or self.embolus_label < 1
        ):
            raise ConfigError(f"embolus label must be an integer >= 1, got {self.embolus_label!r}")
        if not isinstance(self.n_resamples, int) or self.n_resamples < 0:
            raise ConfigError(f"bootstrap resamples must be an integer >= 0, got {self.n_resamples!r}")
        if not self.geometry_tolerance >= 0:
            raise ConfigError(f"geometry tolerance must be >= 0, got {self.geometry_tolerance}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as ``summary.json`` records them (the hit rule spelled out, the fixed connectivity)."""
        return {
            "nsd_tolerance_mm": self.nsd_tolerance_mm,
            "hit_criterion": self.hit.kind,
            "hit_threshold": self.hit.threshold,
            "hit_rule": self.hit.describe(),
            "connectivity": 26,
            "froc_min_probability": self.froc_min_probability,
            "froc_interpolation": self.froc_interpolation,
            "fp_rates": list(self.fp_rates),
            "embolus_label": "any value > 0" if self.embolus_label is None else self.embolus_label,
            "bootstrap_resamples": self.n_resamples,
            "seed": self.seed,
        }
