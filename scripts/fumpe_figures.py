"""Measure FUMPE's embolus figures from its 35 expert masks and print them as JSON.

The masks (third-party data, never committed) are read from ``../shared/data/fumpe_labels`` or the folder
given as the first argument; the script exits quietly when that folder is absent. What it prints is what
``pe_segmentation/data/phantom/fumpe_figures.json`` holds: per-patient embolus counts and burdens, and
quantiles of the component volumes (26-connected, volume = voxels x voxel volume from the header's zooms).

    python scripts/fumpe_figures.py [FOLDER] > pe_segmentation/data/phantom/fumpe_figures.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fumpe_labels"
QUANTILES = (
    0.0,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.45,
    0.5,
    0.55,
    0.6,
    0.65,
    0.7,
    0.75,
    0.8,
    0.85,
    0.9,
    0.95,
    0.975,
    0.99,
    1.0,
)


def measure(folder: Path) -> dict:
    counts: list[int] = []
    burdens: list[float] = []
    volumes: list[float] = []
    per_patient: list[list[float]] = []
    names = sorted(folder.glob("PAT*.nii.gz"))
    for path in names:
        image = nib.load(path)
        mask = np.asarray(image.dataobj) > 0
        voxel = float(np.prod(image.header.get_zooms()[:3]))
        labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        sizes = np.bincount(labels.ravel())[1:] * voxel
        counts.append(int(n))
        burdens.append(round(float(sizes.sum()) / 1000.0, 3))
        volumes.extend(float(v) for v in sizes)
        per_patient.append(sorted((round(float(v), 1) for v in sizes), reverse=True))
    v = np.asarray(volumes)
    return {
        "source": (
            "FUMPE expert embolus masks (Masoudi et al., Scientific Data 2018; CC BY 4.0), 35 patients, as NIfTI "
            "from the CTISPED project; 26-connected components, volume = voxels x voxel volume; measured by "
            "scripts/fumpe_figures.py"
        ),
        "patients": len(names),
        "emboli_per_patient": counts,
        "burden_ml_per_patient": burdens,
        "component_volume_mm3_quantiles": {f"{q:g}": round(float(np.quantile(v, q)), 1) for q in QUANTILES},
        "components": int(v.size),
        "component_volumes_mm3_per_patient": per_patient,
        "class_shares": {
            "central": round(float(np.mean(v > 500.0)), 4),
            "segmental": round(float(np.mean((v >= 50.0) & (v <= 500.0))), 4),
            "small": round(float(np.mean(v < 50.0)), 4),
        },
    }


def main(argv: list[str]) -> int:
    folder = Path(argv[1]) if len(argv) > 1 else DEFAULT
    if not folder.is_dir():
        print(f"{folder}: no FUMPE masks here; nothing measured", file=sys.stderr)
        return 0
    print(json.dumps(measure(folder), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
