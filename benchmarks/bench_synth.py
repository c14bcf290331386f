"""Time synthetic CTPA phantoms, part by part, against peers measured in the same run.

For each grid and profile it prints the median (over ``--repeats`` seeds) of each part of
:func:`generate_phantom`: the scanner draw, the chest's tissue map, the artery tree and its lumen, the emboli,
the pulmonary veins and mimics (clinical profile), the HU image (table, texture, clot values) and the
acquisition (uniform: blur and noise; clinical: motion, noise, kernel, slice thickness, streaks), and the end
to end ``generate_phantom`` time. Peers: the irreducible numpy/scipy work any such generator does on the same
volume (draw Gaussian noise, blur, round to int16) and writing the image as compressed NIfTI.

Goals on a 2-core CPU: a default uniform case (256 x 256 x 200) in well under 3 s, a full-size 512 x 512 x 300
case at 0.7 mm in under 6 s, with the clinical profile as well as the uniform one (measured with other jobs on
the CPU: clinical about 2.5-3.5 s, uniform 3-4 s; docs/phantoms.md).

    .venv/bin/python benchmarks/bench_synth.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from pe_segmentation.data.phantom import PhantomSettings, case_seed, generate_phantom
from pe_segmentation.data.phantom import generator as gen
from pe_segmentation.data.phantom.anatomy import Chest, Tissue
from pe_segmentation.data.phantom.emboli import place_emboli
from pe_segmentation.data.phantom.geometry import Grid
from pe_segmentation.data.phantom.mimics import paint_mimics
from pe_segmentation.data.phantom.scanner import (
    Acquisition,
    diaphragm_top_mm,
    draw_scanner,
    paint_svc,
    superior_vena_cava,
)
from pe_segmentation.data.phantom.vessels import build_tree, render_lumen
from pe_segmentation.io.volume_files import write_volume

PARTS = ("scanner", "chest", "tree", "lumen", "emboli", "mimics", "hu image", "acquisition")


class _TimedAcquisition(Acquisition):
    seconds = 0.0

    def acquire(self, hu: np.ndarray, tissues: np.ndarray, grid: Grid, rng: np.random.Generator) -> None:
        start = time.perf_counter()
        super().acquire(hu, tissues, grid, rng)
        type(self).seconds = time.perf_counter() - start


def _parts(settings: PhantomSettings, seed: int) -> dict[str, float]:
    """The steps of ``generate_phantom`` (same calls, same order), each timed."""
    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[name] = now - clock
        clock = now

    rng = np.random.default_rng(case_seed(seed, 0))
    scanner = draw_scanner(rng, settings.shape, settings.spacing) if settings.profile == "clinical" else None
    grid = scanner.grid if scanner is not None else settings.grid
    lap("scanner")
    chest = Chest(grid, rng)
    tissues = chest.render()
    svc = superior_vena_cava(chest)
    if scanner is not None:
        paint_svc(tissues, grid, svc)
    lap("chest")
    branches = build_tree(chest, rng)
    lap("tree")
    vessels = render_lumen(grid, branches)
    tissues[vessels] = Tissue.PULMONARY_ARTERY
    lap("lumen")
    instances, emboli = place_emboli(grid, branches, vessels, rng, settings.emboli_per_case)
    clot_voxels = np.nonzero(instances)
    tissues[clot_voxels] = Tissue.EMBOLUS
    lap("emboli")
    acquisition = None
    if scanner is not None:
        mimics = paint_mimics(tissues, vessels, instances, grid, chest, branches, scanner, rng)
        acquisition = _TimedAcquisition(scanner, svc, diaphragm_top_mm(chest), mimics.hu)
    lap("mimics")
    if acquisition is None:
        # uniform: time blur and noise apart by rendering without them, then with them
        bare = PhantomSettings(shape=settings.shape, spacing=settings.spacing, noise_hu=0.0, blur_sigma=0.0)
        gen._hu_image(tissues, instances, clot_voxels, emboli, grid, bare, np.random.default_rng(0))
        lap("hu image")
        _floor(grid.shape, seed, settings.blur_sigma)
        lap("acquisition")
    else:
        _TimedAcquisition.seconds = 0.0
        gen._hu_image(tissues, instances, clot_voxels, emboli, grid, settings, rng, acquisition)
        lap("hu image")
        times["acquisition"] = _TimedAcquisition.seconds
        times["hu image"] -= _TimedAcquisition.seconds
    return times


def _floor(shape: tuple[int, int, int], seed: int, sigma: float = 0.6) -> np.ndarray:
    """Noise + blur + int16 rounding of a volume: the part of a phantom no anatomy code can avoid."""
    rng = np.random.default_rng(seed)
    volume = rng.standard_normal(shape, dtype=np.float32)
    ndimage.gaussian_filter(volume, sigma, output=volume, truncate=3.0)
    np.rint(volume, out=volume)
    return volume.astype(np.int16)


def _median_seconds(action: Callable[[int], object], repeats: int) -> float:
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        action(repeat)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="only the small and default grids")
    args = parser.parse_args()
    full = {"shape": (512, 512, 300), "spacing": (0.7, 0.7, 0.7)}
    cases: list[tuple[str, PhantomSettings]] = [
        ("uniform 64x64x48", PhantomSettings.for_field((64, 64, 48))),
        ("uniform default", PhantomSettings()),
        ("clinical 64x64x48", PhantomSettings(shape=(64, 64, 48), profile="clinical")),
    ]
    if not args.quick:
        cases += [
            ("uniform 512x512x300 @0.7", PhantomSettings(**full)),  # type: ignore[arg-type]
            ("clinical 512x512x300 @0.7", PhantomSettings(**full, profile="clinical")),  # type: ignore[arg-type]
            ("clinical drawn grid", PhantomSettings(profile="clinical")),
        ]
    generate_phantom(PhantomSettings.for_field((64, 64, 48)), 0)  # warm imports and caches
    print(f"median of {args.repeats} seeds, seconds; parts: {', '.join(PARTS)}")
    for name, settings in cases:
        parts: dict[str, list[float]] = defaultdict(list)
        for seed in range(args.repeats):
            for part, seconds in _parts(settings, seed).items():
                parts[part].append(seconds)
        total = _median_seconds(
            lambda seed, s=settings: generate_phantom(s, case_seed(seed, 0)), args.repeats
        )
        phantom = generate_phantom(settings, case_seed(0, 0))
        shape = phantom.image.array.shape
        floor = _median_seconds(lambda seed, n=shape: _floor(n, seed), args.repeats)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "image.nii.gz"
            write = _median_seconds(lambda _seed, p=phantom, f=path: write_volume(p.image, f), 1)
        shown = "  ".join(f"{part} {statistics.median(parts[part]):.3f}" for part in PARTS)
        print(
            f"{name:<26} ({'x'.join(map(str, shape))} voxels): generate {total:.2f} s | {shown} | "
            f"noise+blur+int16 floor {floor:.2f} s -> {total / floor:.1f}x | write .nii.gz {write:.2f} s"
        )


if __name__ == "__main__":
    main()
