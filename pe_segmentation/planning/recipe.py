"""A plan: the rules of :mod:`~pe_segmentation.planning.rules` applied to a fingerprint, and the recipe YAML
that ``pe-seg train --config plan.yaml`` takes, each number's origin in a comment beside it."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pe_segmentation.config import Config
from pe_segmentation.data.settings import PreprocessingSettings
from pe_segmentation.data.target_spacing import TargetSpacing, target_spacing
from pe_segmentation.errors import InputDataError
from pe_segmentation.planning.fingerprint import DatasetFingerprint, ForegroundIntensities
from pe_segmentation.planning.rules import (
    GIB,
    MAX_CHANNELS,
    NETWORK,
    Hardware,
    MemoryOf,
    PatchPlan,
    network_params,
    plan_patch,
    traced_memory,
)

#: Training length: nnU-Net's 1000 epochs of 250 iterations.
TARGET_ITERATIONS = 250_000
#: Validations over a run.
VALIDATIONS = 50
#: Patches per loaded volume, and the share centred on an embolus voxel (pe-seg's recipes; nnU-Net: 0.33 of
#: a batch, for larger structures than emboli).
SAMPLES_PER_VOLUME = 4
POS_FRACTION = 0.67
#: Above this the preprocessed set (image and label as float32) goes to the preprocessed store on disk
#: (``data.cache: store``: training reads only its patches), not memory.
MEMORY_CACHE_GIB = 8.0
#: HU that the default augmentation's intensity shift and noise stand for under the default 600 HU window
#: (0.1 and 0.02 of it); under ``ct_foreground`` they are rescaled to the same HU.
SHIFT_HU = 60.0
NOISE_HU = 12.0


def _rounded(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


def _size(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.1f} GiB" if n_bytes >= GIB / 10 else f"{n_bytes / 2**20:.1f} MiB"


class _RecipeDumper(yaml.SafeDumper):
    """YAML as the recipes in configs/ are written: mappings as blocks, lists of numbers on one line."""


def _flow_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_RecipeDumper.add_representer(list, _flow_list)


@dataclass(frozen=True)
class Plan:
    """The plan of one data set for one machine.

    Attributes:
        datalist: the datalist it was planned from (absolute).
        image_key: the datalist entry holding the images.
        hardware: what it trains on.
        cases: cases read.
        spacing: the target spacing and how the rule chose it.
        median_shape: the median body box at the target spacing, voxels along R, A, S.
        foreground: the labelled voxels' HU statistics (``None``: no labels; the plan keeps the HU window).
        patch: patch, batch and network depth.
        epochs: epochs to reach about :data:`TARGET_ITERATIONS` iterations.
    """

    datalist: str
    image_key: str
    hardware: Hardware
    cases: int
    spacing: TargetSpacing
    median_shape: tuple[int, int, int]
    foreground: ForegroundIntensities | None
    patch: PatchPlan
    epochs: int

    @property
    def normalization(self) -> dict[str, Any]:
        """``preprocessing.normalization``: ``ct_foreground`` from the foreground, else the window."""
        fg = self.foreground
        if fg is None or fg.sd <= 0:
            return {"scheme": "window"}
        return {
            "scheme": "ct_foreground",
            "clip": [_rounded(fg.percentile_00_5), _rounded(fg.percentile_99_5)],
            "mean": _rounded(fg.mean),
            "std": _rounded(fg.sd),
        }

    def _augmentation(self) -> dict[str, Any]:
        norm = self.normalization
        if norm["scheme"] == "window":
            return {}
        return {
            "shift_intensity": _rounded(SHIFT_HU / norm["std"], 4),
            "noise_std": _rounded(NOISE_HU / norm["std"], 4),
        }

    def _cache(self) -> str:
        return "memory" if self._set_bytes() <= MEMORY_CACHE_GIB * GIB else "store"

    def config_dict(self) -> dict[str, Any]:
        """The recipe as a config mapping (validated by :func:`recipe_yaml`)."""
        gpu = not self.hardware.is_cpu
        return {
            "data": {
                "dataset": "datalist",
                "path": self.datalist,
                "image_key": self.image_key,
                "cache": self._cache(),
                "num_workers": 4 if gpu else 0,
            },
            "preprocessing": {
                "spacing": list(self.spacing.mm),
                "hu_window": list(PreprocessingSettings().hu_window),
                "normalization": self.normalization,
            },
            "patch": {
                "patch_size": list(self.patch.patch),
                "samples_per_volume": SAMPLES_PER_VOLUME,
                "pos_fraction": POS_FRACTION,
            },
            "augmentation": self._augmentation(),
            "model": {"name": NETWORK, **network_params(self.patch.depth, self.patch.width)},
            "loss": {"name": "dice_ce", "deep_supervision": True, "include_background": False, "batch": True},
            "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.99, "weight_decay": 3.0e-5},
            "schedule": {"warmup_epochs": 0, "decay": "poly", "poly_power": 0.9},
            "training": {
                "epochs": self.epochs,
                "batch_size": self.patch.batch_size,
                "device": "auto" if gpu else "cpu",
                "precision": "auto",
            },
            "validation": {"every": max(1, self.epochs // VALIDATIONS)},
            "output": {"run_dir": "runs/plan"},
        }

    def comments(self) -> dict[str, list[str]]:
        """Paragraphs to write above each section of the recipe: where its numbers come from."""
        pp, norm = self.patch, self.normalization
        median = " x ".join(str(v) for v in self.median_shape)
        side = round(self.hardware.patch_voxels ** (1 / 3))
        if norm["scheme"] == "ct_foreground":
            voxels = self.foreground.voxels if self.foreground is not None else 0
            normalisation = [
                f"normalization: nnU-Net's CT scheme, from {voxels} labelled voxels: clip to their 0.5th-99.5th "
                f"percentiles ({norm['clip'][0]:g} to {norm['clip'][1]:g} HU), subtract their mean "
                f"({norm['mean']:g} HU), divide by their SD ({norm['std']:g} HU).",
                "The fixed window instead: normalization: {scheme: window} (hu_window onto [0, 1]; previews "
                "are drawn with hu_window either way).",
            ]
            augmentation = [
                f"shift_intensity and noise_std are in normalised units (SDs of {norm['std']:g} HU): "
                f"{SHIFT_HU:g} and {NOISE_HU:g} HU, what the defaults (0.1, 0.02) are under the default "
                "600 HU window."
            ]
        else:
            normalisation = ["normalization: the HU window (no case holds a labelled voxel to measure)."]
            augmentation = []
        start = " x ".join(map(str, pp.start))
        if self.hardware.is_cpu:
            sizing = (
                f"patch_size: a cube in mm of {side}^3 voxels at the target spacing (time, not memory, bounds "
                f"a CPU), within the median body box ({median} voxels), each axis a multiple of 2^{pp.depth}. "
                f"batch_size {pp.batch_size}: nnU-Net's smallest (a float32 step takes about "
                f"{_size(pp.step_bytes)})."
            )
        else:
            sizing = (
                f"patch_size: a cube in mm of {side}^3 voxels at the target spacing within the median body box "
                f"({median} voxels), each axis a multiple of 2^{pp.depth}: {start}; shrunk {pp.shrunk} time(s) "
                f"to fit {self.hardware.describe()}. batch_size {pp.batch_size}: what its memory holds, at least "
                f"2, at most 5% of the set's voxels (traced step, mixed precision: {_size(pp.step_bytes)} of "
                f"{_size(pp.budget_bytes or 0.0)} usable; docs/planning.md)."
            )
        return {
            "data": [
                f"cache: the set preprocessed is about {_size(self._set_bytes())} (image and label, float32); "
                f"over {MEMORY_CACHE_GIB:g} GiB it goes to the preprocessed store (pe-seg preprocess fills it ahead)."
            ],
            "preprocessing": [f"spacing: {self.spacing.describe()}.", *normalisation],
            "patch": [sizing],
            "augmentation": augmentation,
            "model": [
                "MONAI DynUNet with residual blocks and deep supervision (nnU-Net's residual encoder U-Net): "
                f"{pp.width} channels doubling per level up to {MAX_CHANNELS}; depth {pp.depth}: the patch "
                f"halves while every axis keeps >= 4 voxels; {pp.parameters / 1e6:.1f} M weights."
            ],
            "loss": [
                "Dice + cross-entropy on every deep-supervision output (weights 1, 1/2, 1/4, ...), Dice over the "
                "batch and without the background (nnU-Net's)."
            ],
            "optimizer": ["SGD with Nesterov momentum 0.99, lr 0.01, weight decay 3e-5 (nnU-Net's)."],
            "schedule": ["poly decay (1 - t)^0.9 over the run, no warmup (nnU-Net's)."],
            "training": [
                f"epochs: about {TARGET_ITERATIONS:,} iterations (nnU-Net's 1000 epochs x 250) at "
                f"{self._iterations_per_epoch()} per epoch. batch_size: see patch."
            ],
            "validation": [f"about {VALIDATIONS} validations over the run."],
        }

    def _set_bytes(self) -> float:
        return float(np.prod(self.median_shape)) * self.cases * 8

    def _iterations_per_epoch(self) -> int:
        return iterations_per_epoch(self.cases, self.patch.batch_size)

    def to_dict(self) -> dict[str, Any]:
        """The plan's decisions, for logs and ``fingerprint.json``."""
        return {
            "hardware": self.hardware.describe(),
            "cases": self.cases,
            "target_spacing": {
                "mm": list(self.spacing.mm),
                "median_mm": list(self.spacing.median_mm),
                "anisotropic_axis": self.spacing.anisotropic_axis,
            },
            "median_shape_at_target": list(self.median_shape),
            "normalization": self.normalization,
            **self.patch.to_dict(),
            "epochs": self.epochs,
        }


def iterations_per_epoch(cases: int, batch_size: int) -> int:
    """Iterations of an epoch: the training cases (80% by default) times their patches, in batches."""
    train = max(1, round(cases * 0.8))
    return max(1, math.ceil(train * SAMPLES_PER_VOLUME / batch_size))


def median_shape(
    fingerprint: DatasetFingerprint, spacing: tuple[float, float, float]
) -> tuple[int, int, int]:
    """The median body box of the cases at ``spacing``, voxels along R, A, S."""
    voxels = np.median(fingerprint.body_mm / np.asarray(spacing), axis=0)
    x, y, z = (max(1, round(float(v))) for v in voxels)
    return (x, y, z)


def make_plan(
    fingerprint: DatasetFingerprint,
    hardware: Hardware,
    datalist: str | Path,
    image_key: str = "image",
    memory_of: MemoryOf = traced_memory,
) -> Plan:
    """Apply the plan rules to a fingerprint.

    Raises:
        InputDataError: no case of the set could be read.
        ConfigError: the GPU is too small for the smallest patch.
    """
    if not fingerprint.cases:
        raise InputDataError(f"{datalist}: none of its {fingerprint.listed} case(s) could be read")
    spacing = target_spacing([c.spacing for c in fingerprint.cases], [c.shape for c in fingerprint.cases])
    shape = median_shape(fingerprint, spacing.mm)
    patch = plan_patch(shape, spacing.mm, hardware, len(fingerprint.cases), memory_of)
    epochs = math.ceil(TARGET_ITERATIONS / iterations_per_epoch(len(fingerprint.cases), patch.batch_size))
    return Plan(
        str(Path(datalist).expanduser().resolve()),
        image_key,
        hardware,
        len(fingerprint.cases),
        spacing,
        shape,
        fingerprint.foreground,
        patch,
        epochs,
    )


def recipe_yaml(plan: Plan) -> str:
    """The plan as a recipe YAML, each section under comments that say where its numbers come from.

    The recipe is validated first (the schema that ``pe-seg train`` reads it with).
    """
    data = plan.config_dict()
    Config.from_dict(data)
    comments = plan.comments()
    header = [
        f"pe-seg plan: a recipe for {plan.datalist} ({plan.cases} case(s) read), for {plan.hardware.describe()}.",
        "Its numbers come from fingerprint.json beside it, by the rules of docs/planning.md (nnU-Net v2's, with "
        "pe-seg's network and memory estimate). Any key can be overridden with --set (configs/reference.yaml).",
    ]
    lines = [*_comment(header[:1]), "#   pe-seg train --config plan.yaml", *_comment(header[1:])]
    for name, section in data.items():
        if not section:
            continue
        lines += _comment(comments.get(name, []))
        lines.append(yaml.dump({name: section}, Dumper=_RecipeDumper, sort_keys=False).rstrip("\n"))
    return "\n".join(lines) + "\n"


def _comment(paragraphs: list[str]) -> list[str]:
    """Paragraphs as YAML comment lines of at most 110 characters, continuation lines indented."""
    lines = []
    for paragraph in paragraphs:
        lines += textwrap.wrap(
            paragraph, width=108, initial_indent="# ", subsequent_indent="#   ", break_on_hyphens=False
        )
    return lines
