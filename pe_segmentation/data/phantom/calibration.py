"""The realised emboli of a set of phantoms next to the real figures they are drawn to match.

:func:`compare_to_fumpe` takes the emboli records of some cases (a :class:`~.dataset.DatasetSummary`'s, or a
datalist's ``emboli`` entries through :meth:`~.emboli.EmbolusInfo.from_dict`) and puts beside FUMPE's 35 expert
masks (:mod:`.fumpe_figures`): emboli per case and per-case burden (over cases with emboli, as the phantoms
are all positive), component volume quantiles and size-class shares, and the HU inside labelled emboli against
the nnU-Net fingerprint of 430 CTPAs. :func:`format_calibration` prints it as a table and
:func:`draw_calibration` draws it on a matplotlib figure (the caller saves it, e.g. ``calibration.png``).

The labelled-HU percentiles of a set are pooled from each embolus's recorded percentiles (``label_hu``),
weighting each embolus by its voxels; with seven recorded percentiles per embolus they are close to, not equal
to, the percentiles of all labelled voxels together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pe_segmentation.data.embolus_sizes import SIZE_CLASSES
from pe_segmentation.data.phantom.emboli import LABEL_HU_LEVELS, EmbolusInfo
from pe_segmentation.data.phantom.fumpe_figures import (
    BURDEN_ML_PER_PATIENT,
    CLASS_SHARES,
    COMPONENT_VOLUME_QUANTILES_MM3,
    EMBOLI_PER_PATIENT,
    LABELLED_HU_MEAN,
    LABELLED_HU_PERCENTILES,
    LABELLED_HU_SD,
    SOURCE,
)

QUANTILES = (5.0, 25.0, 50.0, 75.0, 95.0)
HU_PERCENTILES = (0.5, 5.0, 50.0, 95.0, 99.5)
_SAMPLES_PER_EMBOLUS = 200


def fumpe_volume_quantile(percent: float) -> float:
    """FUMPE's component volume (mm^3) at ``percent``, log-linear between its measured quantiles."""
    levels, volumes = np.array(COMPONENT_VOLUME_QUANTILES_MM3).T
    return float(np.exp(np.interp(percent / 100.0, levels, np.log(volumes))))


def pooled_label_hu(emboli: Sequence[EmbolusInfo]) -> tuple[np.ndarray, np.ndarray]:
    """Samples and weights that stand for all labelled voxels' HU: each embolus's recorded percentiles,
    interpolated at evenly spaced levels and weighted by its voxels."""
    values, weights = [], []
    for e in emboli:
        if not e.label_hu or e.voxels < 1:
            continue
        m = min(e.voxels, _SAMPLES_PER_EMBOLUS)
        levels = (np.arange(m) + 0.5) / m * 100.0
        values.append(np.interp(levels, LABEL_HU_LEVELS, e.label_hu))
        weights.append(np.full(m, e.voxels / m))
    if not values:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(values), np.concatenate(weights)


def _weighted_percentiles(values: np.ndarray, weights: np.ndarray, percents: Sequence[float]) -> list[float]:
    order = np.argsort(values)
    values, weights = values[order], weights[order]
    cumulative = (np.cumsum(weights) - weights / 2) / weights.sum() * 100.0
    return [float(v) for v in np.interp(percents, cumulative, values)]


def _quantiles(values: Sequence[float], percents: Sequence[float] = QUANTILES) -> list[float]:
    return (
        [float(v) for v in np.percentile(values, percents)] if len(values) else [float("nan")] * len(percents)
    )


def compare_to_fumpe(per_case: Sequence[Sequence[EmbolusInfo]]) -> dict[str, Any]:
    """The phantoms' realised figures and FUMPE's, as a JSON-ready mapping (see the module's docstring).

    Args:
        per_case: the emboli of each case.
    """
    positive = [case for case in per_case if case]
    counts = [len(case) for case in positive]
    burdens = [sum(e.volume_mm3 for e in case) / 1000.0 for case in positive]
    volumes = [e.volume_mm3 for case in positive for e in case]
    emboli = [e for case in positive for e in case]
    real_counts = [c for c in EMBOLI_PER_PATIENT if c > 0]
    real_burdens = [b for b in BURDEN_ML_PER_PATIENT if b > 0]
    values, weights = pooled_label_hu(emboli)
    if values.size:
        hu = _weighted_percentiles(values, weights, HU_PERCENTILES)
        mean = float(np.average(values, weights=weights))
        sd = float(np.sqrt(np.average((values - mean) ** 2, weights=weights)))
    else:
        hu, mean, sd = [float("nan")] * len(HU_PERCENTILES), float("nan"), float("nan")
    shares = {
        size: (sum(e.size_class == size for e in emboli) / len(emboli) if emboli else float("nan"))
        for size in SIZE_CLASSES
    }
    return {
        "source": SOURCE,
        "quantiles": list(QUANTILES),
        "hu_percentiles": list(HU_PERCENTILES),
        "phantoms": {
            "cases": len(per_case),
            "cases_with_emboli": len(positive),
            "emboli": len(emboli),
            "casts": sum(e.cast for e in emboli),
            "saddle": sum(e.saddle for e in emboli),
            "count_median": float(np.median(counts)) if counts else float("nan"),
            "count_range": [min(counts, default=0), max(counts, default=0)],
            "burden_ml": _quantiles(burdens),
            "volume_mm3": _quantiles(volumes),
            "class_shares": shares,
            "label_hu": hu,
            "label_hu_mean": mean,
            "label_hu_sd": sd,
            "counts": counts,
            "burdens_ml": burdens,
            "volumes_mm3": volumes,
        },
        "fumpe": {
            "cases_with_emboli": len(real_counts),
            "emboli": sum(real_counts),
            "count_median": float(np.median(real_counts)),
            "count_range": [min(real_counts), max(real_counts)],
            "burden_ml": _quantiles(real_burdens),
            "volume_mm3": [fumpe_volume_quantile(q) for q in QUANTILES],
            "class_shares": dict(CLASS_SHARES),
            "label_hu": [LABELLED_HU_PERCENTILES.get(p) for p in HU_PERCENTILES],
            "label_hu_mean": LABELLED_HU_MEAN,
            "label_hu_sd": LABELLED_HU_SD,
            "counts": real_counts,
            "burdens_ml": real_burdens,
        },
    }


def _fmt(values: Sequence[float | None], digits: int = 0) -> str:
    return " / ".join("-" if v is None or v != v else f"{v:,.{digits}f}" for v in values)


def format_calibration(comparison: dict[str, Any]) -> str:
    """The comparison as a small table: one row per figure, phantoms beside FUMPE."""
    ours, real = comparison["phantoms"], comparison["fumpe"]
    q = "/".join(f"{v:g}" for v in comparison["quantiles"])
    p = "/".join(f"{v:g}" for v in comparison["hu_percentiles"])
    rows = [
        ("cases with emboli", f"{ours['cases_with_emboli']}", f"{real['cases_with_emboli']}"),
        (
            "emboli per case: median (range)",
            f"{ours['count_median']:g} ({ours['count_range'][0]}-{ours['count_range'][1]})",
            f"{real['count_median']:g} ({real['count_range'][0]}-{real['count_range'][1]})",
        ),
        (f"burden mL, {q}th pct", _fmt(ours["burden_ml"], 1), _fmt(real["burden_ml"], 1)),
        (f"embolus mm^3, {q}th pct", _fmt(ours["volume_mm3"]), _fmt(real["volume_mm3"])),
        (
            "central / segmental / small",
            " / ".join(f"{ours['class_shares'][s]:.0%}" for s in SIZE_CLASSES),
            " / ".join(f"{real['class_shares'][s]:.0%}" for s in SIZE_CLASSES),
        ),
        (f"labelled HU, {p}th pct", _fmt(ours["label_hu"]), _fmt(real["label_hu"])),
        (
            "labelled HU, mean (SD)",
            f"{ours['label_hu_mean']:.0f} ({ours['label_hu_sd']:.0f})",
            f"{real['label_hu_mean']:.0f} ({real['label_hu_sd']:.0f})",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    left = max(len(r[1]) for r in [*rows, ("", "phantoms", "")])
    lines = [
        f"Emboli vs real data ({ours['emboli']} emboli, {ours['casts']} casts, {ours['saddle']} saddle; "
        "FUMPE: 35 expert masks; labelled HU: nnU-Net fingerprint of 430 CTPAs)",
        f"  {'':<{width}}  {'phantoms':>{left}}  real",
    ]
    lines += [f"  {name:<{width}}  {a:>{left}}  {b}" for name, a, b in rows]
    return "\n".join(lines)


def draw_calibration(plt: Any, comparison: dict[str, Any]) -> Any:
    """A figure of the comparison: emboli per case, burden, embolus volume and labelled HU, phantoms vs real.

    Args:
        plt: matplotlib's pyplot (e.g. :func:`pe_segmentation.visualization.pyplot`).
        comparison: from :func:`compare_to_fumpe`.

    Returns:
        The matplotlib figure (not saved).
    """
    ours, real = comparison["phantoms"], comparison["fumpe"]
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    top = max(ours["counts"] + real["counts"] + [1])
    bins = np.arange(0.5, top + 1.5)
    axes[0].hist([ours["counts"], real["counts"]], bins=bins, density=True, label=["phantoms", "FUMPE"])
    axes[0].set(title="emboli per case", xlabel="emboli", ylabel="share of cases")
    for ax, key, title, unit, log in (
        (axes[1], "burdens_ml", "burden per case", "mL", False),
        (axes[2], "volumes_mm3", "embolus volume", "mm^3", True),
    ):
        series = [(ours[key], "phantoms")]
        if key in real:
            series.append((real[key], "FUMPE"))
        for values, name in series:
            values = np.sort(values)
            ax.step(values, (np.arange(values.size) + 1) / max(values.size, 1), where="post", label=name)
        if key == "volumes_mm3":
            levels, volumes = np.array(COMPONENT_VOLUME_QUANTILES_MM3).T
            ax.plot(volumes, levels, "o-", ms=3, label="FUMPE")
        ax.set(title=title, xlabel=unit, ylabel="cumulative share", xscale="log" if log else "linear")
    percents = comparison["hu_percentiles"]
    axes[3].plot(percents, ours["label_hu"], "o-", label="phantoms")
    known = [(p, v) for p, v in zip(percents, real["label_hu"], strict=True) if v is not None]
    axes[3].plot(*zip(*known, strict=True), "s--", label="fingerprint (430 CTPAs)")
    axes[3].set(title="HU inside labelled emboli", xlabel="percentile", ylabel="HU")
    for ax in axes:
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure
