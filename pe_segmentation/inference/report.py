"""The per-case JSON report: one entry per clot, totals, timings, and what produced them.

The report identifies the input by its DICOM UIDs, series number and geometry, never by patient name, ID,
birth date, accession number or file path (folder names often hold patient names); only ``--keep-phi`` adds a
``patient`` block (:func:`patient_identity`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from pe_segmentation.inference.postprocess import CONNECTIVITY, Box
from pe_segmentation.io.dicom_header import read_file_header
from pe_segmentation.io.volume import LPS_TO_RAS, Volume
from pe_segmentation.versions import package_versions

REPORT_VERSION = 2  # 2: the scan quality checks (qc), the territory and the study-level answer (study)
#: How ``study.score`` is defined (written into every report, so that a reader needs no docs).
STUDY_SCORE_RULE = (
    "the highest embolus probability inside the territory where emboli can be (lungs and pulmonary arteries); "
    "pe_present is true when at least one clot passes the threshold and the minimum volume"
)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rounded(values: np.ndarray, digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in values]


def clot_report(
    mask: np.ndarray,
    probability: np.ndarray | None,
    affine: np.ndarray,
    offset: tuple[int, int, int] = (0, 0, 0),
) -> list[dict[str, Any]]:
    """One entry per 26-connected clot, largest first, numbered from 1.

    Args:
        mask: binary mask (the whole grid, or a box of it starting at ``offset``).
        probability: embolus probability on the same voxels as ``mask`` (``None``: no probability fields).
        affine: voxel index to RAS mm of the whole grid.
        offset: index of ``mask[0, 0, 0]`` in the whole grid.

    Returns:
        Dicts with ``id``, ``voxels``, ``volume_ml``, ``centroid_ras_mm``, ``centroid_lps_mm`` (DICOM patient
        coordinates), ``bbox_voxels`` (inclusive ``[first, last]`` per axis of the whole grid), and
        ``max_probability`` / ``mean_probability`` over the clot's voxels.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if probability is not None and probability.shape != mask.shape:
        raise ValueError(f"probability shape {probability.shape} differs from the mask's {mask.shape}")
    labels, _ = ndimage.label(mask, structure=CONNECTIVITY)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    start = np.asarray(offset, dtype=np.int64)
    clots = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == index
        count = int(inside.sum())
        voxels = np.argwhere(inside) + [s.start for s in box] + start
        centroid = affine @ np.append(voxels.mean(axis=0), 1.0)
        clot: dict[str, Any] = {
            "voxels": count,
            "volume_ml": round(count * voxel_ml, 6),
            "centroid_ras_mm": _rounded(centroid[:3]),
            "centroid_lps_mm": _rounded((LPS_TO_RAS @ centroid)[:3]),
            "bbox_voxels": [[int(s.start + o), int(s.stop - 1 + o)] for s, o in zip(box, start, strict=True)],
        }
        if probability is not None:
            values = probability[box][inside]
            clot["max_probability"] = round(float(values.max()), 4)
            clot["mean_probability"] = round(float(values.mean()), 4)
        clots.append(clot)
    clots.sort(key=lambda c: (-c["voxels"], c["bbox_voxels"]))
    return [{"id": number, **clot} for number, clot in enumerate(clots, start=1)]


def input_identity(image: Volume) -> dict[str, Any]:
    """What identifies the input without naming the patient: DICOM UIDs and series facts, and geometry."""
    meta = image.metadata
    identity: dict[str, Any] = {"format": meta.get("format") or "unknown"}
    for key, name in (
        ("study_uid", "study_instance_uid"),
        ("series_uid", "series_instance_uid"),
        ("series_number", "series_number"),
        ("series_description", "series_description"),
        ("modality", "modality"),
    ):
        if meta.get(key) not in (None, ""):
            identity[name] = meta[key]
    if meta.get("sop_instance_uids"):  # a multi-frame file is one instance, however many slices it holds
        identity["instances"] = len(set(meta["sop_instance_uids"]))
    identity.update(
        {
            "shape": list(image.shape),
            "spacing_mm": _rounded(image.spacing, 4),
            "orientation": image.orientation_code,
            "affine": [[round(float(v), 6) for v in row] for row in image.affine],
        }
    )
    return identity


#: The report's ``patient`` block with ``--keep-phi``: report key -> DICOM keyword.
PATIENT_KEYWORDS = {
    "name": "PatientName",
    "id": "PatientID",
    "birth_date": "PatientBirthDate",
    "sex": "PatientSex",
    "accession_number": "AccessionNumber",
    "study_date": "StudyDate",
}


def patient_identity(image: Volume) -> dict[str, str]:
    """The patient's identity from the first source file of a DICOM input (``{}`` for other inputs).

    Only for ``--keep-phi``; the default report leaves it out.
    """
    files = image.metadata.get("files") or []
    if image.metadata.get("format") != "dicom" or not files:
        return {}
    # the reader's header parser: it also takes files an anonymizer wrote without file meta
    header = read_file_header(Path(files[0]))
    if header is None:
        return dict.fromkeys(PATIENT_KEYWORDS, "")
    return {key: str(header.ds.get(keyword, "") or "") for key, keyword in PATIENT_KEYWORDS.items()}


def software_versions() -> dict[str, str]:
    """Versions of the packages that shape a prediction."""
    return package_versions("highdicom")


def case_report(
    case: str,
    image: Volume,
    mask: np.ndarray,
    roi: Box | None,
    roi_probability: np.ndarray | None,
    settings: Mapping[str, Any],
    seconds: Mapping[str, float],
    model: Mapping[str, Any],
    outputs: Mapping[str, str],
    *,
    qc: Mapping[str, Any] | None = None,
    territory: Mapping[str, Any] | None = None,
    study_score: float | None = None,
) -> dict[str, Any]:
    """The report of one case (written as ``report.json``).

    Args:
        case: the case name (its output folder).
        image: the input CT (its metadata gives the identity).
        mask: the final mask on the input grid.
        roi: box of the mask's voxels (``None``: empty mask).
        roi_probability: probability inside ``roi``.
        settings: how the case was run (device, precision, threshold, ...).
        seconds: time per stage.
        model: the model's file name, hash, name, epoch, ...
        outputs: file names written for the case.
        qc: the scan quality checks (:meth:`ScanQuality.to_dict`); a failed check marks the findings
            unreliable.
        territory: windows run and skipped, clots dropped outside the territory.
        study_score: the study-level score (:data:`STUDY_SCORE_RULE`).
    """
    if roi is None:
        clots: list[dict[str, Any]] = []
    else:
        offset = (roi[0].start, roi[1].start, roi[2].start)
        clots = clot_report(mask[roi], roi_probability, image.affine, offset)
    voxel_ml = abs(float(np.linalg.det(image.affine[:3, :3]))) / 1000.0
    total_voxels = sum(c["voxels"] for c in clots)
    report = {
        "report_version": REPORT_VERSION,
        "case": case,
        "input": input_identity(image),
        "totals": {
            "clot_count": len(clots),
            "clot_burden_ml": round(total_voxels * voxel_ml, 6),
            "voxels": total_voxels,
        },
        "clots": clots,
        "study": _study(len(clots), study_score, qc),
        "settings": dict(settings),
        "seconds": {key: round(float(value), 3) for key, value in seconds.items()},
        "model": dict(model),
        "software": software_versions(),
        "outputs": dict(outputs),
    }
    if qc is not None:
        report["qc"] = dict(qc)
    if territory is not None:
        report["territory"] = dict(territory)
    return report


def _study(clot_count: int, score: float | None, qc: Mapping[str, Any] | None) -> dict[str, Any]:
    """The study-level answer: PE present or not, a score to rank studies by, and whether to trust it."""
    study: dict[str, Any] = {"pe_present": clot_count > 0}
    if score is not None:
        study["score"] = round(float(score), 6)
        study["score_rule"] = STUDY_SCORE_RULE
    if qc is not None:
        study["reliable"] = qc.get("verdict") != "fail"
    return study
