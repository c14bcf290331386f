"""DICOM SEG output: the clot mask as a binary Segmentation object that references its source CT series.

Written with highdicom: one frame per source slice holding clot (empty frames are omitted) with its plane
position, the source's StudyInstanceUID and FrameOfReferenceUID, and a ReferencedSeriesSequence /
SourceImageSequence naming the CT instances it was derived from, which is what attaches it to its study and
places it over the CT in viewers and PACS (OHIF, 3D Slicer, Orthanc, ...). The segment is coded as SNOMED CT
"Embolus" (55584005) in the category "Morphologically Abnormal Structure", anatomic region "Pulmonary artery".

Patient data: by default the SEG is built from a reduced copy of each source header holding only the UIDs,
modality and image-plane attributes above (:data:`ATTACH_KEYWORDS`), so that the Type 2 patient and study
attributes the SEG must carry (PatientName, PatientID, PatientBirthDate, PatientSex, AccessionNumber, StudyID,
StudyDate, StudyTime, ReferringPhysicianName) are present but empty, and nothing else of the source's Patient,
Study or equipment modules (other IDs, age, weight, institution, ...) is copied. With ``keep_phi=True`` the
whole source headers are used, and the SEG carries the source's patient and study attributes as highdicom
copies them (what PACS that file objects by PatientID need).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom

from pe_segmentation.errors import InputDataError, OutputError
from pe_segmentation.io.atomic import atomic_output
from pe_segmentation.io.volume import Volume
from pe_segmentation.versions import __version__

if TYPE_CHECKING:  # highdicom takes about a second to import: only write_dicom_seg imports it when it runs
    import highdicom as hd

#: The SEG's SeriesNumber is the source's plus this (1000 when the source has none).
SEG_SERIES_NUMBER_OFFSET = 1000

# Type 2 attributes the SEG copies from its source: present (maybe empty) in every scanner series, but not
# always in exports and test data. Missing ones are set empty on the in-memory copies of the source headers.
_TYPE2_FROM_SOURCE = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


#: What the SEG takes from each source header without ``keep_phi``: the UIDs and plane geometry that attach
#: it to its study, series and frame of reference, and nothing that identifies the patient.
ATTACH_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
    "InstanceNumber",
)


def can_write_dicom_seg(image: Volume) -> bool:
    """Whether ``image`` was read from a DICOM series whose files are listed in grid order."""
    files = image.metadata.get("files") or []
    return image.metadata.get("format") == "dicom" and len(files) == image.shape[2]


def _attach_only(header: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of ``header`` with only :data:`ATTACH_KEYWORDS` (the Type 2 attributes are added empty later)."""
    reduced = pydicom.Dataset()
    for keyword in ATTACH_KEYWORDS:
        if keyword in header:
            setattr(reduced, keyword, header[keyword].value)
    return reduced


def _source_headers(files: Sequence[str], keep_phi: bool = False) -> list[pydicom.Dataset]:
    """The source CT headers the SEG references, reduced to :data:`ATTACH_KEYWORDS` unless ``keep_phi``, with
    the Type 2 attributes the SEG copies present (empty when the source lacks them).

    Raises:
        InputDataError: a source file cannot be re-read.
    """
    headers: list[pydicom.Dataset] = []
    for name in files:
        try:
            header: pydicom.Dataset = pydicom.dcmread(name, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as err:
            raise InputDataError(f"{name}: cannot re-read the source header for DICOM SEG ({err})") from err
        if not keep_phi:
            header = _attach_only(header)
        for keyword in _TYPE2_FROM_SOURCE:
            if keyword not in header:
                setattr(header, keyword, "")
        headers.append(header)
    return headers


def write_dicom_seg(
    mask: np.ndarray,
    image: Volume,
    path: str | os.PathLike[str],
    *,
    model_name: str = "pe-seg",
    model_version: str = "",
    series_description: str = "PE segmentation (pe-seg)",
    keep_phi: bool = False,
) -> Path:
    """Write ``mask`` as a binary DICOM SEG referencing the series ``image`` was read from, atomically.

    Args:
        mask: uint8/bool ``[i, j, k]`` on ``image``'s grid (1 = embolus).
        image: a volume read by :func:`~pe_segmentation.io.dicom_reader.read_dicom_series` (its metadata lists
            the files and SOP instance UIDs in grid order).
        path: the output file (``.dcm``).
        model_name: the algorithm's name in the segment's AlgorithmIdentificationSequence.
        model_version: its version (e.g. the start of the model file's hash).
        series_description: SeriesDescription of the SEG series.
        keep_phi: copy the source's patient and study attributes (default: only what attaches the SEG to its
            study, with the patient attributes empty; see the module docstring).

    Raises:
        InputDataError: ``image`` is not from a DICOM series, or its files cannot be re-read.
        OutputError: the mask does not fit the image or the file cannot be written.
    """
    import highdicom as hd

    path = Path(path)
    if not can_write_dicom_seg(image):
        raise InputDataError(f"{path}: DICOM SEG needs an input read from a DICOM series")
    if mask.shape != image.shape:
        raise OutputError(f"{path}: mask shape {mask.shape} differs from the image's {image.shape}")
    sources = _source_headers(image.metadata["files"], keep_phi)
    source_number = image.metadata.get("series_number")
    # frames follow the source slices (k), each frame is rows (j) x columns (i)
    frames = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8).transpose(2, 1, 0))
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_embolus_segment(model_name, model_version)],
        series_instance_uid=hd.UID(),
        series_number=(int(source_number) if source_number is not None else 0) + SEG_SERIES_NUMBER_OFFSET,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="pe-seg",
        manufacturer_model_name=model_name[:64],
        software_versions=__version__,
        device_serial_number=(model_version or "0")[:64],
        omit_empty_frames=bool(frames.any()),  # an empty SEG ("no clot found") keeps all frames
        series_description=series_description,
    )
    with atomic_output(path) as tmp:
        seg.save_as(tmp)
    return path


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
