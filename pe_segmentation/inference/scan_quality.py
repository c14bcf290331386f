"""Is this a usable CTPA? Four quick checks from HU alone, before (or instead of) trusting a model.

:func:`assess_scan` computes :func:`~pe_segmentation.data.chest_regions.chest_regions` on a coarse (about
3 mm) copy of the CT and judges:

* ``chest``: the share of the slices (along the patient's superior axis) that hold lung of real size
  (:data:`REAL_LUNG_SLICE_CM2`). An abdominal CT, with lung bases in its top slices only, fails.
* ``lungs``: the lung volume (fails under :data:`LUNGS_MIN_ML`) and whether the apex and the base are in
  view (warns when the top or bottom slice still holds more than :data:`LUNG_EDGE_FRACTION` of the largest
  slice's lung area: the lung is cut there).
* ``contrast``: the attenuation of the most enhanced blood pool in front of the spine, between the lungs,
  at the level of the pulmonary trunk: the mode of the brightest pool in the histogram, not the mean, so that a
  large embolus or partial volume does not lower it. A pool is a peak of the histogram or a shoulder on the
  flank of a larger one (the right heart and trunk beside an aorta and left heart with three times their
  voxels), read on a copy smoothed against noise
  (:data:`~pe_segmentation.data.chest_regions.COARSE_SMOOTH_MM`). Pass from :data:`CONTRAST_PASS_HU`, warn from
  :data:`CONTRAST_WARN_HU`, fail below.
* ``slice_spacing``: the voxel size along the superior axis; warns over :data:`SLICE_SPACING_WARN_MM`.

Limitations: the contrast check takes the brightest large pool, which in a CTPA is the right heart and the
pulmonary arteries; in a scan timed for the aorta it may report the aorta. Adult chests are assumed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage
from scipy.signal import find_peaks

from pe_segmentation.data.chest_regions import ChestRegions, chest_regions
from pe_segmentation.io.volume import Volume

Verdict = Literal["pass", "warn", "fail"]
_ORDER: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}

# chest: a slice holds lung "of real size" from this area (both lungs, cm^2). Adult lungs cover 250-350 cm^2 of
# a mid-chest slice and over 60 cm^2 from about 3 cm below the apex to the domes; lung bases under the domes
# (the top of an abdominal CT) are less.
REAL_LUNG_SLICE_CM2 = 60.0
# chest: pass when at least this share of the slices hold real lung (a CTPA covers the lungs and a little
# margin: 70-90%; chest and upper abdomen about 50%) ...
CHEST_PASS_SHARE = 0.5
# ... warn down to this share (chest-abdomen-pelvis: 30-40%); below, lung bases only: not a chest CT.
CHEST_WARN_SHARE = 0.3
# lungs: fail under this lung volume (mL). Adult lungs hold 2.5-6 L at CT inspiration; under 300 mL there is
# no lung to search for emboli (lung bases at the top of an abdominal scan, or none).
LUNGS_MIN_ML = 300.0
# lungs: the apex (base) is in view when the top (bottom) slice holds at most this share of the largest
# slice's lung area: a cut lung shows 10% or more there, the trachea alone about 1%.
LUNG_EDGE_FRACTION = 0.03
# contrast: CTPA adequacy bars for the pulmonary trunk: 250 HU is the commonly cited bar of a diagnostic study
# (CTPA technique guidance, e.g. Wittram's in AJR); under about 200 HU, studies judge a scan suboptimal and
# segmental clots hard to see; a venous-phase chest reads 120-180 HU there.
CONTRAST_PASS_HU = 250.0
CONTRAST_WARN_HU = 200.0
# contrast: the level searched, as shares of the lungs' height from their base: the pulmonary trunk and main
# arteries lie at about 50-70%; the band also takes the right ventricle's outflow below and the arch above.
TRUNK_LEVEL_FRACTIONS = (0.2, 0.85)
# contrast: histogram bins (HU) over enhanced blood; the histogram is smoothed by CONTRAST_SMOOTH_BINS.
CONTRAST_BINS_HU = (100.0, 1500.0, 5.0)
CONTRAST_SMOOTH_BINS = 3.0
# contrast: a peak counts as a blood pool when it stands out (its prominence at least CONTRAST_PEAK_PROMINENCE of
# its height: the valley beside it at most 70% of the peak, not a bump on a partial-volume plateau; a right
# heart at 300 HU beside a left heart at 220 HU still makes one) and the voxels within
# CONTRAST_PEAK_HALF_WIDTH_HU of it make at least CONTRAST_POOL_FRACTION of the searched voxels and
# CONTRAST_POOL_MIN_ML. The trunk and main arteries hold 30-80 mL, still over 5 mL beside a saddle embolus; a
# contrast jet in the superior vena cava spreads over hundreds of HU and makes no such peak.
CONTRAST_PEAK_PROMINENCE = 0.3
CONTRAST_PEAK_HALF_WIDTH_HU = 40.0
CONTRAST_POOL_FRACTION = 0.05
CONTRAST_POOL_MIN_ML = 5.0
# slice_spacing: CTPA is read at 1-1.5 mm; over 3 mm small (subsegmental) clots are lost; over 8 mm the scan
# is not usable for emboli at all.
SLICE_SPACING_WARN_MM = 3.0
SLICE_SPACING_FAIL_MM = 8.0


@dataclass(frozen=True)
class QualityCheck:
    """One check: its measured value (``None`` when it could not be measured), verdict and reason."""

    name: str
    value: float | None
    unit: str
    verdict: Verdict
    reason: str

    @property
    def value_text(self) -> str:
        """The value with its unit for reading (``"312 HU"``, ``"68%"``, ``"1.25 mm"``), ``""`` when none."""
        if self.value is None:
            return ""
        if self.unit == "mm":
            return f"{self.value:.3g} mm"
        return f"{self.value:.0f}{self.unit}" if self.unit == "%" else f"{self.value:.0f} {self.unit}"

    def to_dict(self) -> dict[str, Any]:
        value = None if self.value is None else round(float(self.value), 2)
        return {"value": value, "unit": self.unit, "verdict": self.verdict, "reason": self.reason}


@dataclass(frozen=True, eq=False)
class ScanQuality:
    """The checks of one scan, the regions they were measured on and the time they took."""

    checks: tuple[QualityCheck, ...]
    regions: ChestRegions
    seconds: float

    @property
    def verdict(self) -> Verdict:
        """The worst verdict of the checks."""
        return max((c.verdict for c in self.checks), key=_ORDER.__getitem__, default="pass")

    @property
    def reliable(self) -> bool:
        return self.verdict != "fail"

    def check(self, name: str) -> QualityCheck:
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(f"no scan quality check named {name!r}; there are {[c.name for c in self.checks]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"verdict", "checks": {name: {value, unit, verdict, reason}}}``.

        Without the time the checks took, so that two runs of one scan report the same checks; a report lists
        it with the other stages' times (``seconds.quality``).
        """
        return {"verdict": self.verdict, "checks": {c.name: c.to_dict() for c in self.checks}}

    def summary_line(self) -> str:
        """One console line: the verdict, then each check (its reason when it did not pass)."""
        parts = []
        for c in self.checks:
            if c.verdict == "pass":
                parts.append(f"{c.name}: {c.value_text} pass".replace(":  ", ": "))
            else:
                parts.append(f"{c.name}: {c.verdict} ({c.reason})")
        return f"scan QC: {self.verdict.upper()} - " + "; ".join(parts)


def assess_scan(volume: Volume) -> ScanQuality:
    """Run the checks (see the module docstring) on a CT in HU."""
    start = time.perf_counter()
    regions = chest_regions(volume)
    lungs = regions.canonical(regions.lungs)
    cm2 = regions.spacing_mm[regions.axes[0]] * regions.spacing_mm[regions.axes[1]] / 100.0
    areas = lungs.sum(axis=(0, 1)) * cm2  # per slice, from the feet to the head
    checks = (
        _chest_check(areas),
        _lungs_check(regions.lung_volume_ml, areas),
        _contrast_check(regions),
        _spacing_check(float(volume.spacing[regions.superior_axis])),
    )
    return ScanQuality(checks, regions, time.perf_counter() - start)


def _verdict(value: float, pass_from: float, warn_from: float) -> Verdict:
    return "pass" if value >= pass_from else "warn" if value >= warn_from else "fail"


def _chest_check(areas: np.ndarray) -> QualityCheck:
    share = float(np.mean(areas >= REAL_LUNG_SLICE_CM2)) if areas.size else 0.0
    verdict = _verdict(share, CHEST_PASS_SHARE, CHEST_WARN_SHARE)
    covered = f"lungs cover {share:.0%} of the slices"
    reason = {
        "pass": f"{covered}: a chest CT",
        "warn": f"{covered}: the scan reaches well beyond the chest",
        "fail": f"{covered}: not a chest CT",
    }[verdict]
    return QualityCheck("chest", 100.0 * share, "%", verdict, reason)


def _lungs_check(volume_ml: float, areas: np.ndarray) -> QualityCheck:
    if volume_ml < LUNGS_MIN_ML:
        reason = f"{volume_ml:.0f} mL of lung (needs {LUNGS_MIN_ML:.0f}): no lungs in view"
        return QualityCheck("lungs", volume_ml, "mL", "fail", reason)
    largest = float(areas.max())
    cut = [
        name
        for name, area in (("apex", areas[-1]), ("base", areas[0]))
        if area > LUNG_EDGE_FRACTION * largest
    ]
    if cut:
        reason = f"{volume_ml:.0f} mL of lung, the {' and '.join(cut)} cut by the field of view"
        return QualityCheck("lungs", volume_ml, "mL", "warn", reason)
    return QualityCheck("lungs", volume_ml, "mL", "pass", f"{volume_ml:.0f} mL of lung, apex to base")


def _contrast_check(regions: ChestRegions) -> QualityCheck:
    if not regions.lungs.any():
        reason = "no lungs found, so the pulmonary trunk between them cannot be located"
        return QualityCheck("contrast", None, "HU", "fail", reason)
    value = trunk_attenuation(regions)
    if value is None:
        return QualityCheck("contrast", None, "HU", "fail", "no contrast-filled vessel between the lungs")
    verdict = _verdict(value, CONTRAST_PASS_HU, CONTRAST_WARN_HU)
    reason = {
        "pass": f"pulmonary arteries at {value:.0f} HU: well opacified",
        "warn": f"pulmonary arteries at {value:.0f} HU: weakly opacified (under {CONTRAST_PASS_HU:.0f}), "
        "small clots may be missed",
        "fail": f"pulmonary arteries at {value:.0f} HU: not a pulmonary arterial phase "
        f"(under {CONTRAST_WARN_HU:.0f})",
    }[verdict]
    return QualityCheck("contrast", value, "HU", verdict, reason)


def trunk_attenuation(regions: ChestRegions) -> float | None:
    """HU of the most enhanced blood pool at the pulmonary trunk's level, or ``None`` when there is none.

    The search region is the opacified mediastinum (bone removed) in front of the middle of the lungs' hull
    (the spine and descending aorta lie behind) within :data:`TRUNK_LEVEL_FRACTIONS` of the lungs' height.
    Its histogram is smoothed; the answer is the brightest mode (a peak, or a shoulder on a larger pool's
    flank) that holds a pool's share of the voxels, located to a fraction of a bin.
    """
    lungs = regions.canonical(regions.lungs)
    hull = regions.canonical(regions.mediastinum) | lungs
    levels = np.flatnonzero(lungs.any(axis=(0, 1)))
    depth = np.flatnonzero(hull.any(axis=(0, 2)))
    low, high = (levels[0] + f * (levels[-1] - levels[0]) for f in TRUNK_LEVEL_FRACTIONS)
    bottom, top = int(np.floor(low)), int(np.ceil(high)) + 1
    front = (int(depth[0]) + int(depth[-1])) // 2 + 1
    search = regions.canonical(regions.opacified)[:, :front, bottom:top]
    values = regions.canonical(regions.hu)[:, :front, bottom:top][search]
    first, last, step = CONTRAST_BINS_HU
    counts, edges = np.histogram(values, bins=np.arange(first, last + step, step))
    smooth = ndimage.gaussian_filter1d(counts.astype(np.float64), CONTRAST_SMOOTH_BINS, mode="constant")
    reach = round(CONTRAST_PEAK_HALF_WIDTH_HU / step)
    needed = max(CONTRAST_POOL_FRACTION * values.size, CONTRAST_POOL_MIN_ML / regions.voxel_ml)

    def holds_a_pool(i: int) -> bool:
        # not the edge of unenhanced tissue's tail at 100 HU, and enough blood around the mode
        return bool(i > reach and counts[i - reach : i + reach + 1].sum() >= needed)

    peaks, properties = find_peaks(smooth, prominence=0.0)
    modes = {
        int(i): smooth
        for i, prominence in zip(peaks, properties["prominences"], strict=True)
        if prominence >= CONTRAST_PEAK_PROMINENCE * smooth[i] and holds_a_pool(int(i))
    }
    # A pool whose histogram is only a shoulder on a larger pool's flank makes no peak, but a peak of the
    # negative curvature: each Gaussian-like pool of a mixture does, however large its neighbour.
    bend = -ndimage.gaussian_filter1d(
        counts.astype(np.float64), CONTRAST_SMOOTH_BINS, order=2, mode="constant"
    )
    for i in find_peaks(bend)[0]:
        if int(i) not in modes and bend[i] > 0 and holds_a_pool(int(i)):
            modes[int(i)] = bend
    if not modes:
        return None
    mode = max(modes)
    return float(edges[mode] + step * (0.5 + _vertex_offset(modes[mode], mode)))


def _vertex_offset(curve: np.ndarray, i: int) -> float:
    """Where the parabola through ``curve[i - 1 : i + 2]`` peaks, in bins from ``i`` (0 at an edge or a
    plateau): reads a pool's mode finer than the 5 HU bins, which matters next to the 250 HU bar."""
    if not 0 < i < curve.size - 1:
        return 0.0
    before, at, after = float(curve[i - 1]), float(curve[i]), float(curve[i + 1])
    curvature = before - 2.0 * at + after
    return 0.5 * (before - after) / curvature if curvature < 0 else 0.0


def _spacing_check(spacing_mm: float) -> QualityCheck:
    if spacing_mm > SLICE_SPACING_FAIL_MM:
        verdict: Verdict = "fail"
        reason = f"{spacing_mm:.2g} mm slices: too thick to read emboli (over {SLICE_SPACING_FAIL_MM:g} mm)"
    elif spacing_mm > SLICE_SPACING_WARN_MM:
        verdict = "warn"
        reason = f"{spacing_mm:.2g} mm slices: thicker than {SLICE_SPACING_WARN_MM:g} mm, small clots may be missed"
    else:
        verdict = "pass"
        reason = f"{spacing_mm:.2g} mm slices"
    return QualityCheck("slice_spacing", spacing_mm, "mm", verdict, reason)
