"""Write one case's results: mask, probability map, DICOM SEG, JSON report and PNG preview.

Every file is written atomically (:mod:`pe_segmentation.io.atomic`); :func:`write_case` additionally writes a
case into a hidden staging folder that is renamed into place only when every file is there, so a case that
fails leaves nothing behind (:func:`staged_case_folder`).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pe_segmentation.errors import OutputError
from pe_segmentation.inference.dicom_seg import can_write_dicom_seg, write_dicom_seg
from pe_segmentation.inference.predictor import Prediction
from pe_segmentation.inference.report import case_report, patient_identity
from pe_segmentation.inference.scan_quality import ScanQuality
from pe_segmentation.inference.seg_sources import DicomSegSkipped
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import write_volume
from pe_segmentation.visualization import OverlayPanel, save_overlay_grid

log = logging.getLogger(__name__)

MASK_NAME = "mask.nii.gz"
PROBABILITY_NAME = "probability.nii.gz"
SEG_NAME = "seg.dcm"
REPORT_NAME = "report.json"
PREVIEW_NAME = "preview.png"


_SCALAR_LIST = re.compile(r"\[\n\s+([^\[\]{}]*?)\n\s*\]")


def report_json(report: Mapping[str, Any]) -> str:
    """Indented JSON with lists of numbers (coordinates, boxes, affine rows) kept on one line."""
    text = json.dumps(report, indent=2)
    return _SCALAR_LIST.sub(lambda m: "[" + re.sub(r",\n\s+", ", ", m.group(1)) + "]", text) + "\n"


@dataclass(frozen=True)
class OutputOptions:
    """Which files a case gets besides the mask and the report.

    Attributes:
        probability: ``probability.nii.gz`` (float32 embolus probability on the input grid).
        dicom_seg: ``seg.dcm`` when the input is DICOM (skipped, with the reason in the log and the report's
            ``skipped_outputs``, when the source lacks what a SEG needs).
        preview: ``preview.png``.
        hu_window: display window of the preview, in HU.
        keep_phi: keep the patient's identity in the report (``--keep-phi``): a ``patient`` block. Off by
            default: the report, logs, file names and preview do not name the patient.
        anonymous_seg: leave the source's Patient and General Study modules out of ``seg.dcm``
            (``--anonymous-seg``, for SEGs that leave the hospital). Off by default: the SEG carries them
            unchanged, so that the archive holding the CT files it into the same patient and study.
    """

    probability: bool = False
    dicom_seg: bool = True
    preview: bool = True
    hu_window: tuple[float, float] = (-100.0, 500.0)
    keep_phi: bool = False
    anonymous_seg: bool = False


def _process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (``True`` when that cannot be told)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _this_host() -> str:
    """This machine's name as it appears in staging folder names (no ``-``, which separates the fields)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _owner() -> str:
    """``HOST-PID``: which process on which machine a staging folder belongs to."""
    return f"{_this_host()}-{os.getpid()}"


def _remove_dead_staging(output: Path, case: str) -> None:
    """Remove the staging (``.partial-HOST-PID``) and replaced (``.old-HOST-PID``) folders of ``case`` whose
    process is gone: what a run killed mid-case (SIGKILL, power loss) leaves behind. Hidden, never under the
    case's name. Only folders of this machine are judged (an output folder on a network share may hold another
    machine's case in progress); names without a host (pe-seg 0.1 wrote ``.partial-PID``) count as local."""
    here = _this_host()
    for path in output.glob(f".{glob.escape(case)}.*-*"):
        kind, _, owner = path.name[len(case) + 2 :].partition("-")
        host, _, pid = owner.rpartition("-")
        if (
            kind in ("partial", "old")
            and host in ("", here)
            and pid.isdigit()
            and not _process_alive(int(pid))
        ):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged_case_folder(output: Path, case: str) -> Iterator[Path]:
    """Yield a hidden folder to write a case into; on success it replaces ``output/case`` whole.

    On any error the staging folder is removed and an existing ``output/case`` is left as it was. Staging
    folders of this case left by processes that died are removed first.
    """
    final = output / case
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{output}: cannot create output folder ({err.strerror or err})") from err
    _remove_dead_staging(output, case)
    staging = output / f".{case}.partial-{_owner()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        old = output / f".{case}.old-{_owner()}"
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{final}: cannot write ({err.strerror or err})") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _ras_view(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The array flipped/transposed to the closest RAS axes (a view) and the affine of that view."""
    ornt = nib.orientations.io_orientation(affine)
    view = nib.orientations.apply_orientation(array, ornt)
    return view, affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)


def save_preview(
    image: Volume,
    mask: np.ndarray,
    clots: list[Mapping[str, Any]],
    path: Path,
    hu_window: tuple[float, float] = (-100.0, 500.0),
    title: str = "",
    max_panels: int = 4,
) -> Path:
    """Axial slices (closest RAS orientation) through the centroids of the largest clots, mask in red.

    With no clot, the middle axial slice is shown.
    """
    ct, affine = _ras_view(image.array, image.affine)
    labels, _ = _ras_view(mask, image.affine)
    to_index = np.linalg.inv(affine)
    chosen: list[tuple[int, str]] = []
    for clot in clots:
        k = int(np.rint((to_index @ np.append(clot["centroid_ras_mm"], 1.0))[2]))
        k = min(max(k, 0), ct.shape[2] - 1)
        if all(k != seen for seen, _ in chosen):
            chosen.append((k, f"clot {clot['id']}: {clot['volume_ml']:.2f} mL (axial {k})"))
        if len(chosen) == max_panels:
            break
    if not chosen:
        chosen = [(ct.shape[2] // 2, f"no clot found (axial {ct.shape[2] // 2})")]
    low, high = hu_window
    panels = [
        OverlayPanel(
            np.clip((ct[:, :, k].astype(np.float32) - low) / (high - low), 0, 1), labels[:, :, k], text
        )
        for k, text in sorted(chosen)
    ]
    return save_overlay_grid(panels, path, columns=len(panels), title=title or None)


def write_case(
    prediction: Prediction,
    folder: Path,
    case: str,
    options: OutputOptions,
    model: Mapping[str, Any],
    settings: Mapping[str, Any],
    seconds: Mapping[str, float] | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Write every output of one case into ``folder`` (the report last, with the write timings).

    Args:
        prediction: the predictor's result.
        folder: the case's output folder (normally a staging folder, see :func:`staged_case_folder`).
        case: the case name.
        options: which optional files to write.
        model: the model's identity for the report (file name, hash, name, ...).
        settings: how the case was run, for the report.
        seconds: timings measured before the prediction's own (e.g. discovery); added to the report.
        started: ``time.perf_counter()`` when the case began; the report's ``total`` counts from it.

    Returns:
        The report.
    """
    timings = {**(seconds or {}), **prediction.seconds}
    probability = prediction.probability if options.probability else None
    outputs: dict[str, str] = {"mask": MASK_NAME}
    if probability is not None:
        outputs["probability"] = PROBABILITY_NAME
    # NIfTI compression runs in C without the GIL: it overlaps the DICOM SEG, report and preview
    with ThreadPoolExecutor(max_workers=1) as pool:
        nifti = pool.submit(_write_nifti, prediction.mask, probability, folder)
        skipped: dict[str, str] = {}
        if options.dicom_seg and can_write_dicom_seg(prediction.image):
            skipped = _write_seg(prediction, folder, model, options.anonymous_seg, timings, outputs)
        report = case_report(
            case,
            prediction.image,
            prediction.mask.array,
            prediction.roi,
            prediction.roi_probability,
            settings,
            timings,
            model,
            outputs,
            qc=None if prediction.quality is None else prediction.quality.to_dict(),
            territory=prediction.territory or None,
            study_score=prediction.study_score if prediction.quality is not None else None,
        )
        if options.preview:
            _add_preview(report, prediction, folder / PREVIEW_NAME, case, options.hu_window)
        report["seconds"]["write_nifti"] = round(nifti.result(), 3)
    report["outputs"]["report"] = REPORT_NAME
    if skipped:
        report["skipped_outputs"] = skipped
        log.warning("%s: no %s: %s", case, SEG_NAME, skipped["dicom_seg"])
    if options.keep_phi:
        report["patient"] = patient_identity(prediction.image)
    if started is not None:
        report["seconds"]["total"] = round(time.perf_counter() - started, 3)
    atomic_write_text(folder / REPORT_NAME, report_json(report))
    return report


def _write_nifti(mask: Volume, probability: Volume | None, folder: Path) -> float:
    """Write the mask (and the probability map); the seconds it took."""
    begin = time.perf_counter()
    write_volume(mask, folder / MASK_NAME)
    if probability is not None:
        write_volume(probability, folder / PROBABILITY_NAME)
    return time.perf_counter() - begin


def _write_seg(
    prediction: Prediction,
    folder: Path,
    model: Mapping[str, Any],
    anonymous: bool,
    timings: dict[str, float],
    outputs: dict[str, str],
) -> dict[str, str]:
    """Write the mask as a DICOM SEG of the input, noting its file in ``outputs`` and its time in ``timings``;
    ``{"dicom_seg": reason}`` when the source gives no SEG (:class:`DicomSegSkipped`), else ``{}``."""
    start = time.perf_counter()
    try:
        write_dicom_seg(
            prediction.mask.array,
            prediction.image,
            folder / SEG_NAME,
            model_name=f"pe-seg {model.get('name') or 'model'}",
            model_version=str(model.get("sha256", ""))[:16],
            anonymous=anonymous,
        )
    except DicomSegSkipped as skipped:
        return {"dicom_seg": str(skipped)}
    timings["write_dicom_seg"] = time.perf_counter() - start
    outputs["dicom_seg"] = SEG_NAME
    return {}


def _add_preview(
    report: dict[str, Any], prediction: Prediction, path: Path, case: str, hu_window: tuple[float, float]
) -> None:
    """Write the preview PNG through the report's clots; note it (and its time) in the report."""
    start = time.perf_counter()
    totals = report["totals"]
    save_preview(
        prediction.image,
        prediction.mask.array,
        report["clots"],
        path,
        hu_window,
        title=_preview_title(case, totals, prediction.quality),
    )
    report["outputs"]["preview"] = PREVIEW_NAME
    report["seconds"]["write_preview"] = round(time.perf_counter() - start, 3)


def _preview_title(case: str, totals: Mapping[str, Any], quality: ScanQuality | None) -> str:
    """The preview's title: the clots, and on a second line the scan's quality verdict with the checks that
    did not pass."""
    title = f"{case}: {totals['clot_count']} clot(s), {totals['clot_burden_ml']:.2f} mL"
    if quality is None:
        return title
    # the checks' names only: a panel is three inches wide, the reasons are in the report and on the console
    flagged = [check.name for check in quality.checks if check.verdict != "pass"]
    return f"{title}\nscan QC: {quality.verdict.upper()}" + (f" ({', '.join(flagged)})" if flagged else "")
