"""Summary statistics with bootstrap confidence intervals, reproducible from a seed.

Per metric: the number of cases with a defined value, the number without (NaN: see the conventions in
:mod:`~pe_segmentation.evaluation.voxel_metrics`), mean, median, sample standard deviation (``ddof=1``),
minimum, maximum and a percentile bootstrap 95% confidence interval of the mean: cases are resampled with
replacement ``n_resamples`` times with ``numpy.random.default_rng(seed)``, so the same data and seed give the
same interval. Every statistic gets its own generator seeded the same way, so adding a metric does not change the
others' intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 1000


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if not isinstance(n_resamples, int) or n_resamples < 0:
        raise ValueError(f"n_resamples must be an integer >= 0, got {n_resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap_ci(
    n_cases: int,
    statistic: Callable[[np.ndarray], float | np.ndarray],
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Percentile bootstrap interval of ``statistic`` over cases resampled with replacement.

    Args:
        n_cases: number of cases; ``statistic`` receives an index array of that length (with repeats).
        statistic: maps case indices to the value of interest (a mean, a ratio of sums, curve readings); it
            may return one float or a 1D array (one interval per element).
        n_resamples: resamples; 0 gives NaN intervals.
        confidence: the interval's coverage.
        seed: the generator's seed.

    Returns:
        ``(low, high)``, floats or arrays like the statistic; NaN when there are no cases or resamples.
        Resamples whose statistic is NaN (e.g. a ratio whose resample has no emboli) are left out.
    """
    _check_bootstrap(n_resamples, confidence)
    if n_cases == 0 or n_resamples == 0:
        probe = np.asarray(statistic(np.arange(n_cases)), dtype=np.float64) if n_cases else np.float64(0)
        empty = np.full(probe.shape, math.nan)
        return (math.nan, math.nan) if empty.ndim == 0 else (empty, empty.copy())
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n_cases, size=(n_resamples, n_cases))
    values = np.array([statistic(row) for row in indices], dtype=np.float64)
    alpha = (1 - confidence) / 2
    if values.ndim == 1:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return math.nan, math.nan
        low, high = np.quantile(values, [alpha, 1 - alpha])
        return float(low), float(high)
    low, high = [], []
    for column in values.T:
        column = column[np.isfinite(column)]
        bounds = np.quantile(column, [alpha, 1 - alpha]) if column.size else (math.nan, math.nan)
        low.append(float(bounds[0]))
        high.append(float(bounds[1]))
    return np.array(low), np.array(high)


def describe(
    values: Sequence[float] | np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float | int]:
    """Statistics of one metric over cases; NaN values are counted as ``n_undefined`` and left out.

    Returns:
        ``n``, ``n_undefined``, ``mean``, ``median``, ``std``, ``min``, ``max``, ``ci95_low``, ``ci95_high``
        (the interval of the mean; named for the default confidence). Statistics of no values are NaN; ``std``
        needs two values.
    """
    array = np.asarray(values, dtype=np.float64).ravel()
    finite = array[np.isfinite(array)]
    n = int(finite.size)
    nan = math.nan
    low, high = bootstrap_ci(n, lambda idx: float(finite[idx].mean()), n_resamples, confidence, seed)
    return {
        "n": n,
        "n_undefined": int(array.size - n),
        "mean": float(finite.mean()) if n else nan,
        "median": float(np.median(finite)) if n else nan,
        "std": float(finite.std(ddof=1)) if n > 1 else nan,
        "min": float(finite.min()) if n else nan,
        "max": float(finite.max()) if n else nan,
        "ci95_low": low,
        "ci95_high": high,
    }


def json_ready(value: Any) -> Any:
    """``value`` with NaN/inf floats as ``None`` and numpy scalars/arrays as Python values (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_ready(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value
