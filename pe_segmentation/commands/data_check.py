"""``pe-seg data-check``: run the training data pipeline over a datalist and show what the network will see.

Loads each case through the shared preprocessing chain and patch sampler (the same builders training uses),
prints per-case patch statistics and writes a PNG of sampled patches with their labels: the quickest way to
spot a wrong window, spacing, orientation or an empty label before spending hours training.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pe_segmentation.data.datasets import from_datalist
from pe_segmentation.data.settings import AugmentationSettings, PatchSettings, PreprocessingSettings
from pe_segmentation.data.transforms import build_train_transforms
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.visualization import OverlayPanel, axial_slice_through_mask, save_overlay_grid

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data-check", help="run preprocessing and patch sampling over a datalist; print stats, draw patches"
    )
    parser.add_argument("--datalist", required=True, type=Path, help="MSD-style datalist JSON")
    parser.add_argument("--image-key", default="image", help="entry key of the image (e.g. 'dicom')")
    parser.add_argument(
        "--output", "-o", required=True, type=Path, help="folder for patches.png and data_check.json"
    )
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 1.5), metavar=("X", "Y", "Z"))
    parser.add_argument(
        "--patch-size", type=int, nargs="+", default=(64, 64, 64), help="3 values, or 2 for 2D"
    )
    parser.add_argument("--samples", type=int, default=4, help="patches per volume")
    parser.add_argument("--augment", action="store_true", help="apply training augmentation to the patches")
    parser.add_argument("--max-cases", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run)


def check_data(
    items: list[dict[str, Any]],
    pre: PreprocessingSettings,
    patch: PatchSettings,
    aug: AugmentationSettings | None,
    seed: int,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[OverlayPanel]]:
    """Per-case patch statistics and one overlay panel per patch."""
    transforms = build_train_transforms(pre, patch, aug, keys=("image", "label"))
    transforms.set_random_state(seed=seed)
    stats, panels = [], []
    for item in tqdm(items, desc="cases", unit="case", disable=not progress):
        patches = transforms({"image": item["image"], "label": item["label"]})
        with_clot = 0
        for index, sample in enumerate(patches):
            image, label = sample["image"][0].numpy(), sample["label"][0].numpy()
            with_clot += bool(label.any())
            if image.ndim == 3:
                k = axial_slice_through_mask(image, label)
                image, label = image[..., k], label[..., k]
            panels.append(OverlayPanel(image, label, f"{item['case']} #{index}"))
        first = patches[0]["image"]
        stats.append(
            {
                "case": item["case"],
                "patches": len(patches),
                "patches_with_embolus": with_clot,
                "patch_shape": list(first.shape[1:]),
                "value_range": [
                    float(min(p["image"].min() for p in patches)),
                    float(max(p["image"].max() for p in patches)),
                ],
                "spacing_mm": [round(float(s), 4) for s in np.asarray(first.pixdim)[: first.ndim - 1]],
            }
        )
    return stats, panels


def run(args: argparse.Namespace) -> int:
    items = from_datalist(args.datalist, image_key=args.image_key)[: args.max_cases]
    spatial_dims = len(args.patch_size)
    pre = PreprocessingSettings(spacing=tuple(args.spacing))
    patch = PatchSettings(
        patch_size=tuple(args.patch_size), samples_per_volume=args.samples, spatial_dims=spatial_dims
    )
    aug = AugmentationSettings() if args.augment else None
    stats, panels = check_data(items, pre, patch, aug, args.seed, progress=not args.quiet)
    for row in stats:
        log.info(
            "%s: %d patches %s, %d with embolus, values %.2f..%.2f",
            row["case"],
            row["patches"],
            "x".join(map(str, row["patch_shape"])),
            row["patches_with_embolus"],
            *row["value_range"],
        )
    args.output.mkdir(parents=True, exist_ok=True)
    png = save_overlay_grid(
        panels, args.output / "patches.png", columns=args.samples, title="training patches (axial)"
    )
    summary = {
        "datalist": str(args.datalist),
        "preprocessing": pre.to_dict(),
        "patch": patch.to_dict(),
        "cases": stats,
    }
    atomic_write_text(args.output / "data_check.json", json.dumps(summary, indent=2))
    log.info("wrote %s and %s", png, args.output / "data_check.json")
    return 0
