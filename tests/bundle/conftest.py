"""Fixtures of the bundle tests: tiny phantoms, a writable copy of the bundle, and a tiny training recipe."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from pe_segmentation.data.phantom import PhantomSettings, generate_dataset

#: The bundle as committed (tests that write use :func:`bundle_copy`).
BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "pe_segmentation"

#: A recipe small enough to train in seconds: a 2-level UNet of width 4 on 16^3 patches, fp32.
TINY_RECIPE = {
    "data": {"dataset": "synthetic", "val_fraction": 0.34, "cache": "memory"},
    "preprocessing": {"spacing": None},
    "patch": {"patch_size": [16, 16, 16], "samples_per_volume": 2},
    "augmentation": {"rotate_range_deg": 0, "scale_range": 0},
    "model": {"name": "unet", "base_channels": 4, "depth": 2},
    "training": {"epochs": 3, "batch_size": 2, "precision": "fp32", "seed": 0},
    "validation": {"every": 1, "sw_batch_size": 4, "overlap": 0.0},
    "inference": {"sw_batch_size": 4},
    "output": {"tensorboard": False},
}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny networks gain nothing from two on this shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three labelled 48 x 48 x 40 phantoms (a `pe-seg synth` folder with its datalist)."""
    root = tmp_path_factory.mktemp("phantoms")
    generate_dataset(root, cases=3, seed=0, settings=PhantomSettings.for_field((48, 48, 40)), progress=False)
    return root


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundle whose recipe is :data:`TINY_RECIPE` (the committed weights stay put)."""
    root = tmp_path / "bundle"
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("eval", "runs", "model.ts"))
    (root / "configs" / "recipe.yaml").write_text(yaml.safe_dump(TINY_RECIPE), encoding="utf-8")
    return root
