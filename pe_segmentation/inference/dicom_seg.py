"""DICOM SEG output: the clot mask as a binary Segmentation object that references its source CT.

Written with highdicom: one frame per source slice (or source frame, for a multi-frame source) holding clot,
empty frames omitted, each with its plane position and a reference to its source instance and frame; the
source's StudyInstanceUID and FrameOfReferenceUID; a ReferencedSeriesSequence naming the CT instances. That is
what files it into its study and places it over the CT in viewers and PACS (OHIF, 3D Slicer, Orthanc, ...).
The segment is coded as SNOMED CT "Embolus" (55584005) in the category "Morphologically Abnormal Structure",
anatomic region "Pulmonary artery".

Patient data: by default the SEG carries the source's Patient and General Study modules unchanged, as an
archive that files objects by patient and study needs, and nothing else that identifies the patient; with
``anonymous=True`` (``pe-seg infer --anonymous-seg``) both modules are left empty. See
:mod:`~pe_segmentation.inference.seg_sources`, which also says when a source gives no SEG
(:class:`DicomSegSkipped`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pe_segmentation.errors import InputDataError, OutputError
from pe_segmentation.inference.seg_sources import DicomSegSkipped, SegSources, seg_sources
from pe_segmentation.io.atomic import atomic_output
from pe_segmentation.io.volume import Volume
from pe_segmentation.versions import __version__

if TYPE_CHECKING:  # highdicom takes about a second to import: only write_dicom_seg imports it when it runs
    import highdicom as hd

log = logging.getLogger(__name__)

#: The SEG's SeriesNumber is the source's plus this (1000 when the source has none).
SEG_SERIES_NUMBER_OFFSET = 1000

#: What highdicom raises on a source it cannot build a SEG from (a missing or inconsistent attribute).
_REFUSALS = (ValueError, TypeError, AttributeError, KeyError, IndexError)


def can_write_dicom_seg(image: Volume) -> bool:
    """Whether ``image`` was read from DICOM whose files (one per slice, in grid order) are listed."""
    files = image.metadata.get("files") or []
    return image.metadata.get("format") == "dicom" and len(files) == image.shape[2]


def write_dicom_seg(
    mask: np.ndarray,
    image: Volume,
    path: str | os.PathLike[str],
    *,
    model_name: str = "pe-seg",
    model_version: str = "",
    series_description: str = "PE segmentation (pe-seg)",
    anonymous: bool = False,
) -> Path:
    """Write ``mask`` as a binary DICOM SEG referencing the DICOM source ``image`` was read from, atomically.

    Args:
        mask: uint8/bool ``[i, j, k]`` on ``image``'s grid (1 = embolus).
        image: a volume read by pe-seg's DICOM reader: its metadata lists the source file of each slice in grid
            order (``files``) and, for a multi-frame source, each slice's 1-based frame number (``frames``).
        path: the output file (``.dcm``).
        model_name: the algorithm's name in the segment's AlgorithmIdentificationSequence.
        model_version: its version (e.g. the start of the model file's hash).
        series_description: SeriesDescription of the SEG series.
        anonymous: leave the source's Patient and General Study modules out (empty); by default the SEG
            carries them unchanged (see the module docstring).

    Raises:
        DicomSegSkipped: the source lacks what a SEG needs (the reason is one line); nothing is written.
        InputDataError: ``image`` is not from DICOM.
        OutputError: the mask does not fit the image or the file cannot be written.
    """
    path = Path(path)
    if not can_write_dicom_seg(image):
        raise InputDataError(f"{path}: DICOM SEG needs an input read from DICOM")
    if mask.shape != image.shape:
        raise OutputError(f"{path}: mask shape {mask.shape} differs from the image's {image.shape}")
    sources = seg_sources(image, anonymous)
    source_number = image.metadata.get("series_number")
    series_number = (int(source_number) if source_number is not None else 0) + SEG_SERIES_NUMBER_OFFSET
    seg = _segmentation(
        sources, _seg_frames(mask, sources), model_name, model_version, series_description, series_number
    )
    with atomic_output(path) as tmp:
        seg.save_as(tmp)
    return path


def _seg_frames(mask: np.ndarray, sources: SegSources) -> np.ndarray:
    """The SEG's frames in the source's frame order, each rows (j) x columns (i): slice k of a single-frame
    source is frame k; of a multi-frame source, the frame the slice was read from."""
    slices = np.asarray(mask, dtype=np.uint8).transpose(2, 1, 0)
    if sources.frames is None:
        return np.ascontiguousarray(slices)
    frames = np.zeros((sources.number_of_frames, *slices.shape[1:]), np.uint8)
    frames[np.asarray(sources.frames) - 1] = slices
    return frames


def _segmentation(
    sources: SegSources,
    frames: np.ndarray,
    model_name: str,
    model_version: str,
    series_description: str,
    series_number: int,
) -> hd.seg.Segmentation:
    """The highdicom Segmentation of ``frames`` over ``sources``.

    Raises:
        DicomSegSkipped: highdicom refuses the source (an attribute missing or inconsistent across slices).
    """
    import highdicom as hd

    try:
        return hd.seg.Segmentation(
            source_images=sources.headers,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_embolus_segment(model_name, model_version)],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="pe-seg",
            manufacturer_model_name=model_name[:64],
            software_versions=__version__,
            device_serial_number=(model_version or "0")[:64],
            omit_empty_frames=bool(frames.any()),  # an empty SEG ("no clot found") keeps all frames
            series_description=series_description,
        )
    except _REFUSALS as err:
        log.debug("highdicom refused the source", exc_info=True)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DicomSegSkipped(f"highdicom cannot build a SEG from this source ({reason})") from err


def _embolus_segment(model_name: str, model_version: str) -> hd.seg.SegmentDescription:
    """The SEG's one segment: a pulmonary embolus (SNOMED CT codes, see the module docstring) found
    automatically by the named model, so that viewers show what it is and which algorithm drew it."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name,
        family=codes.cid7162.ArtificialIntelligence,
        version=model_version or __version__,
        source="pe-seg",
    )
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Pulmonary embolus",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Embolus,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[codes.SCT.PulmonaryArtery],
    )
