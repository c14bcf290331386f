"""Tiny learnable data sets and configs for the training-engine tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from pe_segmentation.config import Config, apply_overrides


def write_toy_cases(folder: Path, cases: int = 6, size: int = 24, seed: int = 0) -> Path:
    """``cases`` volumes of ``size``^3 voxels: soft tissue (~40 HU) with noise and one bright box (~400 HU)
    labelled 1, at a random place and size; returns the datalist JSON.

    The intensity tells the label, so a tiny network learns it within a few iterations.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    entries = []
    for index in range(cases):
        image = rng.normal(40.0, 20.0, (size, size, size)).astype(np.float32)
        label = np.zeros((size, size, size), dtype=np.uint8)
        extent = rng.integers(4, size // 2, 3)
        start = [int(rng.integers(0, size - e)) for e in extent]
        box = tuple(slice(s, s + int(e)) for s, e in zip(start, extent, strict=True))
        label[box] = 1
        image[box] += 360.0
        entries.append(save_case(folder, f"toy_{index:02d}", image, label, affine))
    return write_datalist(folder, entries)


def save_case(
    folder: Path, name: str, image: np.ndarray, label: np.ndarray, affine: np.ndarray
) -> dict[str, str]:
    """Write ``name.nii.gz`` and ``name_seg.nii.gz`` into ``folder``; their datalist entry."""
    nib.save(nib.Nifti1Image(image, affine), folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), folder / f"{name}_seg.nii.gz")
    return {"case": name, "image": f"{name}.nii.gz", "label": f"{name}_seg.nii.gz"}


def write_datalist(folder: Path, entries: list[dict[str, str]]) -> Path:
    """``folder/datalist.json`` with ``entries`` as its training cases."""
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"training": entries}), encoding="utf-8")
    return datalist


def toy_config(datalist: Path, run_dir: Path, *overrides: str, **sections: dict[str, Any]) -> Config:
    """A config that trains a 2-level UNet of width 4 on 16^3 patches of the toy cases, in fp32 on the CPU."""
    data: dict[str, Any] = {
        "data": {"dataset": "datalist", "path": str(datalist), "val_fraction": 0.34, "cache": "memory"},
        "preprocessing": {"spacing": None, "crop_foreground": False},
        "patch": {"patch_size": [16, 16, 16], "samples_per_volume": 2, "pos_fraction": 0.5},
        "model": {"name": "unet", "base_channels": 4, "depth": 2},
        "loss": {"name": "dice_ce"},
        "optimizer": {"name": "adam", "lr": 0.01},
        "schedule": {"warmup_epochs": 1, "decay": "cosine"},
        "training": {"epochs": 2, "batch_size": 2, "device": "cpu", "precision": "fp32", "augment": False},
        "validation": {"every": 1, "sw_batch_size": 4, "overlap": 0.0},
        "output": {"run_dir": str(run_dir)},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Config.from_dict(apply_overrides(data, overrides))


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these tiny networks gain nothing from two, and on a busy 2-core machine two
    spinning OpenMP threads made a 16^3 training step 80 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def toy_writer() -> Callable[..., Path]:
    """:func:`write_toy_cases`, for tests that need their own toy set."""
    return write_toy_cases


@pytest.fixture(scope="session")
def toy_config_factory() -> Callable[..., Config]:
    """:func:`toy_config`, for module-scoped runs."""
    return toy_config


@pytest.fixture(scope="session")
def toy_datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_cases(tmp_path_factory.mktemp("toy"), cases=6)


@pytest.fixture
def make_config(toy_datalist: Path, tmp_path: Path) -> Callable[..., Config]:
    def make(
        *overrides: str, run: str = "run", datalist: Path | None = None, **sections: dict[str, Any]
    ) -> Config:
        return toy_config(datalist or toy_datalist, tmp_path / run, *overrides, **sections)

    return make
