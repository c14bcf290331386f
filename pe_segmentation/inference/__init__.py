"""Inference: predict clot masks for new CTs and write NIfTI, DICOM SEG, a JSON report and a PNG preview.

Segment one CT from Python::

    from pe_segmentation.inference import Predictor

    predictor = Predictor.from_checkpoint("runs/unet/checkpoints/best.pt", device="auto", precision="auto")
    prediction = predictor.predict("patient_001/")  # DICOM folder, NIfTI/NRRD/MHA file
    prediction.mask  # a Volume: uint8, the input's shape and affine

``pe-seg infer`` (:mod:`pe_segmentation.commands.infer`) adds case discovery (:func:`discover_cases`), the
outputs (:func:`write_case`) and multi-case / multi-GPU runs (:func:`run_cases`). See docs/inference.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use: the training engine imports ``inference.inferer`` while the predictor
# imports the engine, so an eager package import would be circular (and would make the engine load highdicom).
_EXPORTS = {
    "CaseInput": "cases",
    "discover_cases": "cases",
    "inference_device": "devices",
    "inference_precision": "devices",
    "stitch_device": "devices",
    "visible_devices": "devices",
    "write_dicom_seg": "dicom_seg",
    "build_inferer": "inferer",
    "OutputOptions": "outputs",
    "save_preview": "outputs",
    "write_case": "outputs",
    "GridMapping": "postprocess",
    "bounding_box": "postprocess",
    "probability_to_mask": "postprocess",
    "remove_small_components": "postprocess",
    "FAST_OVERLAP": "predictor",
    "FAST_SPACING_FACTOR": "predictor",
    "EmbolusLogit": "predictor",
    "Prediction": "predictor",
    "Predictor": "predictor",
    "flip_combinations": "predictor",
    "case_report": "report",
    "clot_report": "report",
    "file_sha256": "report",
    "CaseResult": "runner",
    "PredictorSpec": "runner",
    "run_case": "runner",
    "run_cases": "runner",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = [
    "FAST_OVERLAP",
    "FAST_SPACING_FACTOR",
    "CaseInput",
    "CaseResult",
    "EmbolusLogit",
    "GridMapping",
    "OutputOptions",
    "Prediction",
    "Predictor",
    "PredictorSpec",
    "bounding_box",
    "build_inferer",
    "case_report",
    "clot_report",
    "discover_cases",
    "file_sha256",
    "flip_combinations",
    "inference_device",
    "inference_precision",
    "probability_to_mask",
    "remove_small_components",
    "run_case",
    "run_cases",
    "save_preview",
    "stitch_device",
    "visible_devices",
    "write_case",
    "write_dicom_seg",
]
