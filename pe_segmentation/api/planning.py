"""``plan``: a data set's fingerprint and the training recipe planned from it, what ``pe-seg plan`` writes."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pe_segmentation.data.datasets import from_datalist
from pe_segmentation.errors import ConfigError, OutputError
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.planning import (
    DatasetFingerprint,
    Hardware,
    Plan,
    draw_fingerprint,
    fingerprint_dataset,
    make_plan,
    recipe_yaml,
)
from pe_segmentation.visualization import pyplot, save_figure

log = logging.getLogger(__name__)

FINGERPRINT_JSON = "fingerprint.json"
FINGERPRINT_PNG = "fingerprint.png"
PLAN_YAML = "plan.yaml"


@dataclass(frozen=True)
class PlanRun:
    """What :func:`plan` found and wrote.

    Attributes:
        fingerprint: the data set's fingerprint.
        plan: the rules applied to it.
        recipe: ``plan.yaml``.
        json: ``fingerprint.json`` (the fingerprint, and the plan's decisions under ``plan``).
        figure: ``fingerprint.png``.
    """

    fingerprint: DatasetFingerprint
    plan: Plan
    recipe: Path
    json: Path
    figure: Path


def hardware_for(gpu_memory: float | None = None, cpu: bool = False) -> Hardware:
    """The hardware to plan for: ``gpu_memory`` GB, the CPU, or (neither given) this machine's first GPU, else
    its CPU.

    Raises:
        ConfigError: both given, or a memory that is not a positive number.
    """
    if cpu and gpu_memory is not None:
        raise ConfigError("--gpu-memory and --cpu: give one of them (or neither, to plan for this machine)")
    if cpu:
        return Hardware(None)
    if gpu_memory is not None:
        return Hardware(float(gpu_memory))
    if torch.cuda.is_available():
        return Hardware(round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return Hardware(None)


def _datalist(dataset: str | os.PathLike[str]) -> Path:
    """The datalist JSON: ``dataset`` itself, or the ``datalist.json`` of a ``pe-seg synth`` folder."""
    path = Path(dataset).expanduser()
    if path.is_dir() and (path / "datalist.json").is_file():
        return path / "datalist.json"
    return path


def _log_summary(fingerprint: DatasetFingerprint, plan: Plan) -> None:
    log.info(
        "%d of %d case(s) read; %d without emboli; %d odd",
        len(fingerprint.cases),
        fingerprint.listed,
        fingerprint.cases_without_emboli,
        len(fingerprint.oddities),
    )
    for oddity in fingerprint.oddities:
        log.warning("%s: %s: %s", oddity.case, oddity.kind, oddity.detail)
    log.info("target spacing %s", plan.spacing.describe())
    norm = plan.normalization
    if norm["scheme"] == "ct_foreground":
        log.info(
            "normalisation ct_foreground: clip %g to %g HU, mean %g, SD %g",
            norm["clip"][0],
            norm["clip"][1],
            norm["mean"],
            norm["std"],
        )
    else:
        log.info("normalisation: the HU window (no labelled voxels)")
    patch = plan.patch
    log.info(
        "for %s: patch %s, batch %d, DynUNet depth %d width %d (step about %.1f GiB)",
        plan.hardware.describe(),
        " x ".join(map(str, patch.patch)),
        patch.batch_size,
        patch.depth,
        patch.width,
        patch.step_bytes / 2**30,
    )


def plan(
    dataset: str | os.PathLike[str],
    output: str | os.PathLike[str] = "plan",
    *,
    gpu_memory: float | None = None,
    cpu: bool = False,
    image_key: str = "image",
    seed: int = 0,
    progress: bool = False,
) -> PlanRun:
    """Fingerprint a data set and plan a training recipe for it (nnU-Net's rules; docs/planning.md).

    Args:
        dataset: an MSD-style datalist JSON (``training`` section), or a ``pe-seg synth`` folder.
        output: folder for ``plan.yaml``, ``fingerprint.json`` and ``fingerprint.png`` (created; files there
            of those names are replaced, each atomically).
        gpu_memory: plan for a GPU with this many GB (GiB, as ``nvidia-smi`` counts them).
        cpu: plan for the CPU. Neither: this machine's first GPU, else its CPU.
        image_key: the datalist entry holding the images (``dicom`` for the phantoms' DICOM series).
        seed: seeds the subsets of labelled voxels drawn from large cases.
        progress: a progress bar over the cases.

    Raises:
        InputDataError: an unreadable datalist, a missing file, or no case that can be read.
        ConfigError: both ``gpu_memory`` and ``cpu``, or a GPU too small for the smallest patch.
        OutputError: the output folder cannot be written.
    """
    hardware = hardware_for(gpu_memory, cpu)
    datalist = _datalist(dataset)
    items = from_datalist(datalist, image_key=image_key)
    fingerprint = fingerprint_dataset(items, seed=seed, progress=progress)
    planned = make_plan(fingerprint, hardware, datalist, image_key)
    recipe = recipe_yaml(planned)
    folder = Path(output).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{folder}: cannot create the output folder ({err.strerror or err})") from None
    summary = {"datalist": planned.datalist, **fingerprint.to_dict(), "plan": planned.to_dict()}
    atomic_write_text(folder / FINGERPRINT_JSON, json.dumps(summary, indent=2) + "\n")
    save_figure(draw_fingerprint(pyplot(), fingerprint, planned), folder / FINGERPRINT_PNG)
    atomic_write_text(folder / PLAN_YAML, recipe)
    _log_summary(fingerprint, planned)
    log.info("wrote %s, %s and %s", folder / PLAN_YAML, folder / FINGERPRINT_JSON, folder / FINGERPRINT_PNG)
    return PlanRun(
        fingerprint, planned, folder / PLAN_YAML, folder / FINGERPRINT_JSON, folder / FINGERPRINT_PNG
    )
