"""``infer``: clot masks for new CTs with a checkpoint or a bundle's weights, what ``pe-seg infer`` writes.

Per case, into ``output/<case>/``: ``mask.nii.gz`` (the input's own grid), ``seg.dcm`` (DICOM input),
``report.json``, ``preview.png`` and, on request, ``probability.nii.gz``. A case appears whole or not at all;
with several cases a failed case is reported in one line and the others are finished.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from pe_segmentation.errors import ConfigError
from pe_segmentation.inference import (
    CaseInput,
    CaseResult,
    OutputOptions,
    Predictor,
    PredictorSpec,
    discover_cases,
    file_sha256,
    launcher_shard,
    log_case_result,
    read_bundle_inference,
    run_cases,
)
from pe_segmentation.runtime import inference_device, under_launcher, visible_devices

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceSettings:
    """What to run and how: the weights, the predictor's options and the optional outputs.

    ``None`` in an option means the model's own setting (the ``inference`` section of its config), or the
    bundle's where a bundle is given.

    Attributes:
        checkpoint: the weights file (an nnU-Net v2 trained-model folder with ``nnunet``).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        predictor: keyword options of :class:`~pe_segmentation.inference.Predictor` (overlap, sw_batch_size,
            threshold, min_peak, min_volume_mm3, tta, fast, channels_last, qc, territory, memory_budget).
        save_probability, dicom_seg, preview: which optional outputs to write.
        nnunet: for an nnU-Net model folder, how to read it (``folds``, ``label``, ``checkpoint``); else ``None``.
    """

    checkpoint: Path
    precision: str = "auto"
    predictor: dict[str, Any] = field(default_factory=dict)
    save_probability: bool = False
    dicom_seg: bool = True
    preview: bool = True
    nnunet: dict[str, Any] | None = None

    def spec(self, **options: Any) -> PredictorSpec:
        """How to build this run's predictor on a device (a pe-seg checkpoint's or an nnU-Net model folder's),
        with further predictor ``options``: the one builder of ``pe-seg infer``, :func:`infer` and the bundle."""
        return PredictorSpec(str(self.checkpoint), self.precision, {**self.predictor, **options}, self.nnunet)


@dataclass(frozen=True)
class InferenceRun:
    """What :func:`infer` did: one result per case of this process, in input order.

    Attributes:
        results: each case's :class:`~pe_segmentation.inference.CaseResult` (folder, clots, time, or the error).
        output: the output folder.
        model: the model's identity as the reports carry it (name, spacing, checkpoint SHA-256, ...).
    """

    results: list[CaseResult]
    output: Path
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[CaseResult]:
        """The cases that failed."""
        return [result for result in self.results if not result.ok]


def inference_settings(
    checkpoint: str | os.PathLike[str] | None = None,
    bundle: str | os.PathLike[str] | None = None,
    *,
    precision: str = "auto",
    save_probability: bool | None = None,
    dicom_seg: bool | None = None,
    preview: bool | None = None,
    nnunet: str | os.PathLike[str] | None = None,
    folds: Sequence[str | int] | str | int | None = None,
    label: str | None = None,
    nnunet_checkpoint: str = "final",
    **predictor: Any,
) -> InferenceSettings:
    """The weights and settings of a run: a checkpoint with the given options, an nnU-Net v2 model folder
    (``nnunet``, with ``folds``, ``label`` and ``nnunet_checkpoint``), or a bundle's weights (or the nnU-Net model
    its ``nnunet_model_dir`` names) and the settings of its ``configs/inference.yaml``, where an option given here
    wins over the bundle's.

    Raises:
        ConfigError: not exactly one of ``checkpoint``, ``nnunet`` and ``bundle``; nnU-Net options without
            ``nnunet``; a value out of range; not a bundle.
        CheckpointError: the bundle's weights are missing.
    """
    if sum(source is not None for source in (checkpoint, bundle, nnunet)) != 1:
        raise ConfigError(
            "give the weights: a checkpoint (--checkpoint), an nnU-Net model folder (--nnunet) or a bundle "
            "folder (--bundle), one of them"
        )
    if nnunet is None and (folds is not None or label is not None):
        raise ConfigError("--folds and --label apply to an nnU-Net model folder (--nnunet)")
    if nnunet is not None:
        _check_options(predictor)
        options = {key: value for key, value in predictor.items() if value is not None}
        how = {
            "folds": None if folds is None else [folds] if isinstance(folds, (str, int)) else list(folds),
            "label": label,
            "checkpoint": nnunet_checkpoint,
        }
        return InferenceSettings(
            Path(nnunet),
            precision,
            options,
            save_probability=bool(save_probability),
            dicom_seg=dicom_seg is not False,
            preview=preview is not False,
            nnunet=how,
        )
    outputs = {"save_probability": save_probability, "dicom_seg": dicom_seg, "preview": preview}
    bundle_nnunet = None
    if bundle is not None:
        found = read_bundle_inference(bundle)
        checkpoint, bundle_nnunet = found.checkpoint, found.nnunet
        precision = found.precision if precision == "auto" else precision
        predictor = {**found.options, **{k: v for k, v in predictor.items() if v is not None}}
        outputs = {k: found.outputs[k] if v is None else v for k, v in outputs.items()}
    _check_options(predictor)
    assert checkpoint is not None
    defaults = {"save_probability": False, "dicom_seg": True, "preview": True}
    chosen = {k: defaults[k] if v is None else bool(v) for k, v in outputs.items()}
    options = {key: value for key, value in predictor.items() if value is not None}
    return InferenceSettings(
        Path(checkpoint),
        precision,
        options,
        save_probability=chosen["save_probability"],
        dicom_seg=chosen["dicom_seg"],
        preview=chosen["preview"],
        nnunet=bundle_nnunet,
    )


def _check_options(options: dict[str, Any]) -> None:
    """Refuse out-of-range predictor options in one line that names the flag."""
    checks = (
        ("threshold", "--threshold", lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
        ("min_peak", "--min-peak", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
        ("min_volume_mm3", "--min-volume", lambda v: v >= 0, ">= 0 mm^3"),
        ("overlap", "--overlap", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
        ("sw_batch_size", "--sw-batch-size", lambda v: v >= 1, ">= 1"),
        ("memory_budget", "--memory-budget", lambda v: v > 0, "> 0 GB"),
    )
    for key, flag, valid, wanted in checks:
        value = options.get(key)
        if value is not None and not valid(value):
            raise ConfigError(f"{flag} must be {wanted}, got {value:g}")


def infer(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    bundle: str | os.PathLike[str] | None = None,
    series_uid: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    workers: int | None = None,
    save_probability: bool | None = None,
    dicom_seg: bool | None = None,
    preview: bool | None = None,
    keep_phi: bool = False,
    anonymous_seg: bool = False,
    progress: bool = False,
    on_result: Callable[[CaseResult, int, int], None] = log_case_result,
    nnunet: str | os.PathLike[str] | None = None,
    folds: Sequence[str | int] | None = None,
    label: str | None = None,
    nnunet_checkpoint: str = "final",
    **predictor: Any,
) -> InferenceRun:
    """Segment pulmonary emboli in every case of ``input`` and write each case into ``output/<case>/``.

    Args:
        input: a DICOM series or study folder (the CT series is chosen by the series rule), a NIfTI/NRRD/MHA
            file, or a folder or glob of many such inputs.
        output: the output folder (one subfolder per case).
        checkpoint: a pe-seg checkpoint (``best.pt``, a bundle's ``model.pt``); or give ``bundle``.
        bundle: a pe-seg MONAI bundle folder: its weights and the settings of its ``configs/inference.yaml``
            (options given here win).
        series_uid: for one DICOM input with several series, the series to read.
        device: ``auto`` (CUDA when visible), ``cpu``, ``cuda`` (every visible GPU) or ``cuda:N``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        workers: worker processes for many cases (default: one per GPU of ``device="cuda"``, else one).
        save_probability, dicom_seg, preview: the optional outputs (``None``: the bundle's choice, else
            no probability map, a DICOM SEG for DICOM input and a preview).
        keep_phi: add the patient's identity to ``report.json`` (by default no output but ``seg.dcm`` has it).
        anonymous_seg: leave the CT's Patient and General Study modules out of ``seg.dcm`` (default: kept).
        progress: MONAI's progress bar over the sliding windows (one process only).
        on_result: called as each case finishes, with its result, the number done and the total.
        nnunet: an nnU-Net v2 trained-model folder to run instead of a checkpoint (needs the ``nnunet`` extra;
            docs/inference.md, "nnU-Net models").
        folds: the nnU-Net folds to average (default: every fold folder with the checkpoint).
        label: the embolus label's name in the nnU-Net model's ``dataset.json`` (default: found by name).
        nnunet_checkpoint: ``final`` or ``best``: each fold's ``checkpoint_final.pth`` or ``checkpoint_best.pth``.
        **predictor: options of :class:`~pe_segmentation.inference.Predictor`: ``overlap``, ``sw_batch_size``,
            ``threshold``, ``min_peak``, ``min_volume_mm3``, ``tta``, ``fast``, ``channels_last``, ``qc`` (``report`` or
            ``strict``), ``territory`` (``None``: the model's own), ``memory_budget`` (GB per process;
            ``None``: the machine's available memory less a margin).

    Returns:
        The run: one result per case of this process (under ``torchrun``, this rank's share).

    Raises:
        ConfigError, CheckpointError, InputDataError: one-line reasons; a single case's error propagates,
            while in a run of many cases failures are results.
        MemoryBudgetError: the memory budget cannot hold the network on one window (before any case), or a
            single case that does not fit it (before its network runs).
    """
    settings = inference_settings(
        checkpoint,
        bundle,
        precision=precision,
        save_probability=save_probability,
        dicom_seg=dicom_seg,
        preview=preview,
        nnunet=nnunet,
        folds=folds,
        label=label,
        nnunet_checkpoint=nnunet_checkpoint,
        **predictor,
    )
    cases, devices, prefix = _share_out(_cases(input, series_uid), device, workers)
    if not cases:
        log.info("%sno case for this process", prefix)
        return InferenceRun([], Path(output))
    outputs = _output_options(settings, keep_phi, anonymous_seg)
    return _predict(cases, Path(output), settings, outputs, devices, prefix, progress, on_result)


def _output_options(settings: InferenceSettings, keep_phi: bool, anonymous_seg: bool) -> OutputOptions:
    """The optional outputs and what they may say about the patient (the preview's HU window is set later)."""
    return OutputOptions(
        probability=settings.save_probability,
        dicom_seg=settings.dicom_seg,
        preview=settings.preview,
        keep_phi=keep_phi,
        anonymous_seg=anonymous_seg,
    )


def _predict(
    cases: list[CaseInput],
    output: Path,
    settings: InferenceSettings,
    outputs: OutputOptions,
    devices: list[torch.device],
    prefix: str,
    progress: bool,
    on_result: Callable[[CaseResult, int, int], None],
) -> InferenceRun:
    """Build the predictor once (a bad checkpoint is one error, not one per case), then run every case on
    ``devices``: in this process on one device, or one worker process per device. The preview's HU window
    is the model's."""
    many_workers = len(devices) > 1 and len(cases) > 1
    spec = settings.spec(progress=progress and not many_workers and not prefix)
    # worker processes build their own predictors, so this one then stays on the CPU
    first = spec(torch.device("cpu") if many_workers else devices[0])
    # an nnU-Net model names its folds' hashes itself (its first fold's as the model's)
    sha256 = first.model_info.get("sha256") or file_sha256(settings.checkpoint)
    model = {**first.model_info, "sha256": sha256}
    outputs = replace(outputs, hu_window=_hu_window(first))
    _log_start(prefix, len(cases), devices, first, settings, many_workers)
    build: Callable[[torch.device], Predictor] = spec if many_workers else (lambda _device: first)
    results = run_cases(cases, output, build, devices, outputs, model, on_result)
    run = InferenceRun(results, output, model)
    if len(results) > 1 or run.failed:
        failed = f"; failed: {', '.join(r.name for r in run.failed)}" if run.failed else ""
        done = len(results) - len(run.failed)
        log.info("%s%d of %d case(s) written to %s%s", prefix, done, len(results), output, failed)
    return run


def _cases(source: str | os.PathLike[str], series_uid: str | None) -> list[CaseInput]:
    """The cases of ``source``; ``series_uid`` picks the series of a single DICOM input."""
    cases = discover_cases(str(source))
    if series_uid is None:
        return cases
    if len(cases) != 1:
        raise ConfigError(f"--series-uid applies to one DICOM input; {source} holds {len(cases)} cases")
    return [CaseInput(cases[0].name, cases[0].path, series_uid)]


def _share_out(
    cases: Sequence[CaseInput], device: str, workers: int | None
) -> tuple[list[CaseInput], list[torch.device], str]:
    """This process's cases and devices, and its log prefix: under ``torchrun`` every ``WORLD_SIZE``-th case on
    GPU ``LOCAL_RANK`` (or the CPU); otherwise every case over the visible devices (``workers`` of them).

    Raises:
        ConfigError: ``workers`` below 1.
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if under_launcher():
        mine, rank, world = launcher_shard(cases)
        local = int(os.environ.get("LOCAL_RANK", rank))
        chosen = inference_device(device)
        return (
            mine,
            [torch.device("cuda", local) if chosen.type == "cuda" else chosen],
            f"rank {rank}/{world}: ",
        )
    devices = visible_devices(device)
    if workers is not None:
        devices = [devices[i % len(devices)] for i in range(workers)]
    return list(cases), devices, ""


def _hu_window(predictor: Predictor) -> tuple[float, float]:
    low, high = predictor.config.preprocessing.hu_window
    return float(low), float(high)


def _log_start(
    prefix: str,
    cases: int,
    devices: Sequence[torch.device],
    first: Predictor,
    settings: InferenceSettings,
    many_workers: bool,
) -> None:
    where = ", ".join(str(d) for d in devices) if many_workers else str(first.device)
    precision = "auto" if many_workers and settings.precision == "auto" else first.precision.name
    extras = "".join(f", {name}" for name in ("TTA", "fast") if settings.predictor.get(name.lower()))
    log.info("%s%d case(s); %s, %s precision%s", prefix, cases, where, precision, extras)
