"""Inference: predict clot masks for new CTs and write NIfTI, DICOM SEG, a JSON report and a PNG preview.

Segment one CT from Python::

    from pe_segmentation.inference import Predictor

    predictor = Predictor.from_checkpoint("runs/unet/checkpoints/best.pt", device="auto", precision="auto")
    prediction = predictor.predict("patient_001/")  # DICOM folder, NIfTI/NRRD/MHA file
    prediction.mask  # a Volume: uint8, the input's shape and affine

:func:`pe_segmentation.infer` (what ``pe-seg infer`` and the bundle call) adds case discovery
(:func:`discover_cases`), the outputs (:func:`write_case`) and multi-case / multi-GPU runs (:func:`run_cases`).
See docs/inference.md.
"""

from __future__ import annotations

from pe_segmentation.inference.bundle_folder import BundleInference, as_flag, read_bundle_inference
from pe_segmentation.inference.case_run import CaseResult, log_case_result, run_case
from pe_segmentation.inference.cases import CaseInput, discover_cases
from pe_segmentation.inference.dicom_seg import write_dicom_seg
from pe_segmentation.inference.memory import MemoryGuard
from pe_segmentation.inference.outputs import OutputOptions, save_preview, write_case
from pe_segmentation.inference.postprocess import (
    GridMapping,
    bounding_box,
    probability_to_mask,
    remove_small_components,
)
from pe_segmentation.inference.predictor import FAST_OVERLAP, FAST_SPACING_FACTOR, Prediction, Predictor
from pe_segmentation.inference.preprocessing import PreparedImage, preprocess_volume
from pe_segmentation.inference.report import case_report, clot_report, file_sha256
from pe_segmentation.inference.runner import PredictorSpec, launcher_shard, run_cases
from pe_segmentation.inference.seg_sources import DicomSegSkipped
from pe_segmentation.inference.window_network import EmbolusLogit, flip_combinations

__all__ = [
    "FAST_OVERLAP",
    "FAST_SPACING_FACTOR",
    "BundleInference",
    "CaseInput",
    "CaseResult",
    "DicomSegSkipped",
    "EmbolusLogit",
    "GridMapping",
    "MemoryGuard",
    "OutputOptions",
    "Prediction",
    "Predictor",
    "PredictorSpec",
    "PreparedImage",
    "as_flag",
    "bounding_box",
    "case_report",
    "clot_report",
    "discover_cases",
    "file_sha256",
    "flip_combinations",
    "launcher_shard",
    "log_case_result",
    "preprocess_volume",
    "probability_to_mask",
    "read_bundle_inference",
    "remove_small_components",
    "run_case",
    "run_cases",
    "save_preview",
    "write_case",
    "write_dicom_seg",
]
