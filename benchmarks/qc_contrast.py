"""How well does the scan quality's contrast check read the pulmonary trunk? (issue 15)

Each clinical-profile phantom draws its trunk's attenuation (``scanner.trunk_hu``), so the check can be scored
against the truth: the contrast verdict the drawn value deserves (pass from 250 HU, warn from 200), the error of
the reading, and the issue's two targets: adequate scans (trunk at least 250 HU, slices at most 3 mm) pass every
check, and trunks under 250 HU are flagged. Misses are listed with the scan's phase and systemic (aorta, left
heart) attenuation, the usual cause.

    .venv/bin/python benchmarks/qc_contrast.py [--sets 0:40 1000:20 2000:20 3000:20] [--shape 160 160 128]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from pe_segmentation.data.phantom import PhantomSettings, case_seed, generate_phantom
from pe_segmentation.inference.scan_quality import (
    CONTRAST_PASS_HU,
    CONTRAST_WARN_HU,
    SLICE_SPACING_WARN_MM,
    ScanQuality,
    Verdict,
    assess_scan,
)


@dataclass(frozen=True)
class Reading:
    case: str
    drawn_hu: float
    quality: ScanQuality
    phase: str
    systemic_hu: float
    slice_mm: float

    @property
    def read_hu(self) -> float | None:
        return self.quality.check("contrast").value

    @property
    def deserved(self) -> Verdict:
        return (
            "pass"
            if self.drawn_hu >= CONTRAST_PASS_HU
            else "warn"
            if self.drawn_hu >= CONTRAST_WARN_HU
            else "fail"
        )

    @property
    def adequate(self) -> bool:
        return self.drawn_hu >= CONTRAST_PASS_HU and self.slice_mm <= SLICE_SPACING_WARN_MM


def read_phantoms(sets: list[tuple[int, int]], shape: tuple[int, int, int]) -> list[Reading]:
    readings = []
    for seed, cases in sets:
        for index in range(cases):
            phantom = generate_phantom(
                PhantomSettings(shape=shape, profile="clinical"), case_seed(seed, index)
            )
            scanner = phantom.scanner
            assert scanner is not None  # the clinical profile always draws one
            readings.append(
                Reading(
                    f"seed {seed} case {index}",
                    scanner.trunk_hu,
                    assess_scan(phantom.image),
                    scanner.phase,
                    scanner.systemic_hu,
                    scanner.spacing[2],
                )
            )
    return readings


def report(readings: list[Reading]) -> None:
    read = [r for r in readings if r.read_hu is not None]
    errors = np.array([r.read_hu - r.drawn_hu for r in read if r.read_hu is not None])
    agree = sum(r.quality.check("contrast").verdict == r.deserved for r in readings)
    adequate = [r for r in readings if r.adequate]
    low = [r for r in readings if r.drawn_hu < CONTRAST_PASS_HU]
    print(
        f"{len(readings)} phantoms; contrast verdict agrees with the drawn trunk's: {agree}/{len(readings)}"
    )
    print(
        f"reading error (read - drawn): median |error| {np.median(np.abs(errors)):.1f} HU, signed 10/50/90th "
        f"percentiles {' / '.join(f'{v:+.0f}' for v in np.percentile(errors, [10, 50, 90]))} HU; "
        f"{len(readings) - len(read)} without a reading"
    )
    print(
        f"adequate scans passing every check: {sum(r.quality.verdict == 'pass' for r in adequate)}/{len(adequate)}; "
        f"trunks under {CONTRAST_PASS_HU:.0f} HU flagged: "
        f"{sum(r.quality.check('contrast').verdict != 'pass' for r in low)}/{len(low)}"
    )
    print(f"median time of the checks: {np.median([r.quality.seconds for r in readings]):.2f} s")
    for r in readings:
        verdict = r.quality.check("contrast").verdict
        missed = r.adequate and r.quality.verdict != "pass"
        if verdict != r.deserved or missed:
            value = "none" if r.read_hu is None else f"{r.read_hu:.0f} HU"
            failed = [c.name for c in r.quality.checks if c.verdict != "pass"]
            print(
                f"  {r.case}: trunk {r.drawn_hu:.0f} HU read {value} ({verdict}, deserved {r.deserved}); "
                f"{r.phase} phase, systemic {r.systemic_hu:.0f} HU; checks not passing: {failed}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sets", nargs="+", default=["0:40", "1000:20", "2000:20", "3000:20"], help="SEED:CASES"
    )
    parser.add_argument("--shape", nargs=3, type=int, default=[160, 160, 128])
    args = parser.parse_args()
    sets = [(int(seed), int(cases)) for seed, cases in (item.split(":") for item in args.sets)]
    report(read_phantoms(sets, (args.shape[0], args.shape[1], args.shape[2])))


if __name__ == "__main__":
    main()
