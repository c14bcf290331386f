"""A phantom set whose fingerprint is known: cases with chosen spacings, shapes, body boxes, emboli and HU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from training.conftest import save_case, write_datalist


@dataclass(frozen=True)
class KnownSet:
    """The datalist and what its fingerprint must say, worked out from how the cases were drawn."""

    datalist: Path
    spacings: dict[str, tuple[float, float, float]]  # R, A, S
    shapes: dict[str, tuple[int, int, int]]  # R, A, S
    body_shapes: dict[str, tuple[int, int, int]]  # R, A, S, body box grown by the default margin of 4
    emboli_voxels: dict[str, list[int]]  # per case, largest first
    labelled_hu: np.ndarray  # every labelled voxel's HU, pooled


def _case(shape, body, emboli) -> tuple[np.ndarray, np.ndarray]:
    """Air, a 0 HU body box, and each embolus a box of (slices, HU); labels 1."""
    image = np.full(shape, -1000, np.int16)
    image[body] = 0
    label = np.zeros(shape, np.uint8)
    for box, hu in emboli:
        image[box] = hu
        label[box] = 1
    return image, label


def write_known_set(folder: Path) -> KnownSet:
    """Five listed cases, four readable:

    * ``a``: 40 x 36 x 20 at 0.8 x 0.8 x 2.5 mm; two emboli, 3x3x2 voxels at 50 HU and 5x4x3 at 100 HU, and
      two voxels touching only by a corner at 70 HU (one embolus by 26-connectivity).
    * ``b``: the same grid stored with its axes permuted (voxel axes i, j, k along S, A, R): 20 x 36 x 40
      voxels at 2.5 x 0.8 x 0.8 mm; one 8x8x5 embolus at 20 HU.
    * ``c``: 50 x 40 x 24 at 0.7 x 0.7 x 2.0 mm, no embolus.
    * ``d``: 40 x 36 x 8 at 0.8 x 0.8 x 6.0 mm (a spacing outlier along S), one 2x2x2 embolus at -50 HU.
    * ``e``: a broken image file (unreadable).
    """
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    body = (slice(4, 36), slice(6, 30), slice(2, 18))  # grown by 4 and clipped: 40 x 32 x 20
    image, label = _case(
        (40, 36, 20),
        body,
        [
            ((slice(10, 13), slice(10, 13), slice(5, 7)), 50),
            ((slice(20, 25), slice(15, 19), slice(8, 11)), 100),
            ((slice(30, 31), slice(25, 26), slice(14, 15)), 70),
            ((slice(31, 32), slice(26, 27), slice(15, 16)), 70),
        ],
    )
    entries.append(save_case(folder, "a", image, label, np.diag([0.8, 0.8, 2.5, 1.0])))
    hu = [50] * 18 + [100] * 60 + [70] * 2
    # b: array axes (S, A, R); the affine maps voxel axis 0 to S, 1 to A, 2 to R
    image, label = _case((40, 36, 20), body, [((slice(12, 20), slice(8, 16), slice(6, 11)), 20)])
    permuted = np.array([[0, 0, 0.8, 0], [0, 0.8, 0, 0], [2.5, 0, 0, 0], [0, 0, 0, 1.0]])
    entries.append(save_case(folder, "b", image.transpose(2, 1, 0), label.transpose(2, 1, 0), permuted))
    hu += [20] * 320
    image, label = _case((50, 40, 24), (slice(10, 40), slice(10, 30), slice(6, 18)), [])
    entries.append(save_case(folder, "c", image, label, np.diag([0.7, 0.7, 2.0, 1.0])))
    image, label = _case(
        (40, 36, 8),
        (slice(4, 36), slice(6, 30), slice(0, 8)),
        [((slice(5, 7), slice(9, 11), slice(3, 5)), -50)],
    )
    entries.append(save_case(folder, "d", image, label, np.diag([0.8, 0.8, 6.0, 1.0])))
    hu += [-50] * 8
    entries.append(save_case(folder, "e", image, label, np.eye(4)))
    (folder / "e.nii.gz").write_bytes(b"not a NIfTI file")
    return KnownSet(
        write_datalist(folder, entries),
        spacings={"a": (0.8, 0.8, 2.5), "b": (0.8, 0.8, 2.5), "c": (0.7, 0.7, 2.0), "d": (0.8, 0.8, 6.0)},
        shapes={"a": (40, 36, 20), "b": (40, 36, 20), "c": (50, 40, 24), "d": (40, 36, 8)},
        body_shapes={"a": (40, 32, 20), "b": (40, 32, 20), "c": (38, 28, 20), "d": (40, 32, 8)},
        emboli_voxels={"a": [60, 18, 2], "b": [320], "c": [], "d": [8]},
        labelled_hu=np.array(hu, dtype=np.float64),
    )


@pytest.fixture(scope="session")
def known_set(tmp_path_factory: pytest.TempPathFactory) -> KnownSet:
    return write_known_set(tmp_path_factory.mktemp("known_set"))
