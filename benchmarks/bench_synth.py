"""Time one synthetic CTPA phantom against peers measured in the same run.

Prints the median wall time of :func:`generate_phantom` at the default 256 x 256 x 200 grid (and a small test
grid), next to two peers on the same volume: the irreducible numpy/scipy work any such generator does (draw
Gaussian noise, blur, round to int16) and writing the image as compressed NIfTI. The goal is under 3 s per
default case on a 2-core CPU, so tests and the demo can make data on the fly.

    .venv/bin/python benchmarks/bench_synth.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from pe_segmentation.data.phantom import PhantomSettings, generate_phantom
from pe_segmentation.io.volume_files import write_volume


def _median_seconds(action: Callable[[int], object], repeats: int) -> float:
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        action(repeat)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _floor(shape: tuple[int, int, int], repeat: int) -> np.ndarray:
    """Noise + blur + int16 rounding of a volume: the part of a phantom no anatomy code can avoid."""
    rng = np.random.default_rng(repeat)
    volume = rng.standard_normal(shape, dtype=np.float32)
    ndimage.gaussian_filter(volume, 0.6, output=volume, truncate=3.0)
    np.rint(volume, out=volume)
    return volume.astype(np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    generate_phantom(PhantomSettings.for_field((64, 64, 48)), 0)  # warm imports and caches
    for settings in (PhantomSettings(), PhantomSettings.for_field((64, 64, 48))):
        generate = _median_seconds(lambda seed, s=settings: generate_phantom(s, seed), args.repeats)
        floor = _median_seconds(lambda seed, s=settings: _floor(s.shape, seed), args.repeats)
        phantom = generate_phantom(settings, 0)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "image.nii.gz"
            write = _median_seconds(
                lambda _seed, p=phantom, f=path: write_volume(p.image, f), max(1, args.repeats // 2)
            )
        grid = "x".join(map(str, settings.shape))
        print(
            f"{grid:>11} @ {'x'.join(f'{s:g}' for s in settings.spacing)} mm: generate {generate:.3f} s "
            f"(median of {args.repeats}); noise+blur+int16 floor {floor:.3f} s -> {generate / floor:.1f}x; "
            f"write .nii.gz {write:.3f} s -> generate/write {generate / write:.2f}x"
        )


if __name__ == "__main__":
    main()
