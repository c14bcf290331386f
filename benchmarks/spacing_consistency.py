"""Does a checkpoint give the same clots whatever the input's spacing? (issue 15)

A checkpoint runs at the spacing it was trained at: ``pe-seg infer`` resamples every input to it. This script
gives it one chest at two spacings and compares the answers:

* the fine scan: a clinical-profile phantom at (2.24 / 3, 2.24 / 3, 2.5 / 3) mm, a real CTPA's 0.75 x 0.75 x
  0.83 mm (``--fine-factor`` changes the 3);
* the same scan at the demo recipe's training spacing 2.24 x 2.24 x 2.5 mm, made as a scanner makes a thicker
  reconstruction of the same acquisition: each coarse voxel the mean of the fine voxels it covers. (Drawing the
  phantom again at the coarse grid would not be the same scan: the generator's noise is per voxel, so a 2.24 mm
  draw has the noise of a 0.75 mm one over a 27 times larger voxel.)

Both predictions are mapped onto the coarse grid (nearest neighbour) and compared clot by clot: the clot count
of each, and for each coarse clot the Dice with the fine clots that overlap it. Printed per phantom and as a
summary: how many phantoms have counts within 1, and the share of clots (and of clots of at least 100 coarse
voxels, 1.25 mL) with Dice >= 0.8.

    .venv/bin/python benchmarks/spacing_consistency.py [--checkpoint bundles/pe_segmentation/models/model.pt]
        [--seeds 1 2 3 4 5 6 7 8] [--min-peak 0.99]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from pe_segmentation.data.phantom import PhantomSettings, case_seed, generate_phantom
from pe_segmentation.inference.postprocess import CONNECTIVITY
from pe_segmentation.inference.predictor import Predictor
from pe_segmentation.io.volume import Volume

BUNDLE_MODEL = Path(__file__).resolve().parents[1] / "bundles" / "pe_segmentation" / "models" / "model.pt"
TRAINING_SPACING = (2.24, 2.24, 2.5)
LARGE_CLOT_VOXELS = 100


def thick_reformat(image: Volume, factor: int) -> Volume:
    """``image`` on a grid ``factor`` times coarser along each axis, each voxel the mean of those it covers."""
    n = [s - s % factor for s in image.array.shape]
    fine = image.array[: n[0], : n[1], : n[2]].astype(np.float32)
    blocks = fine.reshape(n[0] // factor, factor, n[1] // factor, factor, n[2] // factor, factor)
    index_map = np.diag([float(factor)] * 3 + [1.0])
    index_map[:3, 3] = (factor - 1) / 2.0  # a coarse voxel's centre is the mean of its fine voxels' centres
    return Volume(np.rint(blocks.mean(axis=(1, 3, 5))).astype(np.int16), image.affine @ index_map)


def on_grid(mask: Volume, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` resampled (nearest neighbour) onto the grid of ``affine`` and ``shape``."""
    to_mask = np.linalg.inv(mask.affine) @ affine
    return ndimage.affine_transform(
        mask.array.astype(np.uint8), to_mask[:3, :3], to_mask[:3, 3], output_shape=shape, order=0
    )


def clot_agreement(coarse: np.ndarray, fine_on_coarse: np.ndarray) -> list[tuple[int, float]]:
    """(voxels, Dice) of each coarse clot with the fine clots that overlap it."""
    coarse_clots, count = ndimage.label(coarse, CONNECTIVITY)
    fine_clots, _ = ndimage.label(fine_on_coarse, CONNECTIVITY)
    rows = []
    for index in range(1, count + 1):
        clot = coarse_clots == index
        touching = np.unique(fine_clots[clot & (fine_clots > 0)])
        matched = np.isin(fine_clots, touching) & (fine_clots > 0)
        overlap = np.count_nonzero(clot & matched)
        rows.append((int(clot.sum()), float(2.0 * overlap / (clot.sum() + matched.sum()))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=BUNDLE_MODEL)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 9)))
    parser.add_argument("--min-peak", type=float, default=0.99, help="as the bundle's inference config")
    parser.add_argument("--fine-factor", type=int, default=3)
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu", min_peak=args.min_peak)
    fine_spacing = tuple(s / args.fine_factor for s in TRAINING_SPACING)
    within_one, rows = 0, []
    for seed in args.seeds:
        phantom = generate_phantom(
            PhantomSettings(profile="clinical", spacing=fine_spacing), case_seed(seed, 0)
        )
        coarse_scan = thick_reformat(phantom.image, args.fine_factor)
        coarse = predictor.predict(coarse_scan).mask
        fine = predictor.predict(phantom.image).mask
        fine_count = ndimage.label(fine.array, CONNECTIVITY)[1]
        clots = clot_agreement(coarse.array > 0, on_grid(fine, coarse.affine, coarse.shape) > 0)
        within_one += abs(len(clots) - fine_count) <= 1
        rows += clots
        scanner = phantom.scanner
        assert scanner is not None  # the clinical profile draws one
        print(
            f"seed {seed} ({len(phantom.emboli)} emboli; {scanner.kernel} kernel {scanner.noise_hu:.0f} HU, "
            f"{scanner.phase} phase): clots at {TRAINING_SPACING} mm {len(clots)}, at the fine spacing "
            f"{fine_count}; (voxels, Dice): {[(v, round(d, 2)) for v, d in clots]}",
            flush=True,
        )
    large = [d for v, d in rows if v >= LARGE_CLOT_VOXELS]
    print(
        f"counts within 1: {within_one}/{len(args.seeds)} phantoms; clots with Dice >= 0.8: "
        f"{sum(d >= 0.8 for _, d in rows)}/{len(rows)}, of those >= {LARGE_CLOT_VOXELS} voxels "
        f"{sum(d >= 0.8 for d in large)}/{len(large)} (median Dice {np.median(large) if large else float('nan'):.2f})"
    )


if __name__ == "__main__":
    main()
