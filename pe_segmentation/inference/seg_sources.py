"""The source headers a DICOM SEG references, reduced to what the SEG may take from them.

highdicom copies the SEG's Patient and Study modules from the first source header, and places and references
its frames by the source headers' UIDs and plane geometry. So what a header holds here is what the SEG gets:

- always the UIDs, modality, character set and plane geometry (:data:`ATTACH_KEYWORDS`; the functional groups
  of a multi-frame source);
- by default also every attribute of the source's Patient and General Study modules, unchanged
  (:data:`PATIENT_MODULE`, :data:`GENERAL_STUDY_MODULE`), so that an archive files the SEG into the patient and
  study of its CT. Nothing else (Patient Study module: age, weight; equipment: institution) is copied;
- with ``anonymous`` neither module: their Type 2 attributes are present and empty, and only StudyInstanceUID
  (Type 1) still ties the SEG to its study.

A source that lacks a UID the SEG must reference gives no SEG (:class:`DicomSegSkipped`, with the reason in one
line); pe-seg makes up no UID in the source's place. Anonymizers that blank the dataset's SOPClassUID and
SOPInstanceUID often leave them in the file meta (MediaStorageSOPClassUID, MediaStorageSOPInstanceUID): the SEG
references them from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from pe_segmentation.io.dicom_header import read_file_header
from pe_segmentation.io.volume import Volume


class DicomSegSkipped(Exception):
    """No DICOM SEG can be made from this source; the message is the one-line reason. It costs the SEG only:
    the case's mask and report are written."""


#: PS3.3 C.7.1.1 Patient module: copied unchanged into the SEG unless ``anonymous``.
PATIENT_MODULE = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "TypeOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "EthnicGroupCodeSequence",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "QualityControlSubject",
)

#: PS3.3 C.7.2.1 General Study module: copied unchanged into the SEG unless ``anonymous``.
GENERAL_STUDY_MODULE = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName",
    "ConsultingPhysicianIdentificationSequence",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence",
    "RequestingService",
    "RequestingServiceCodeSequence",
    "ReferencedStudySequence",
    "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
)

#: What the SEG takes from every source header: the UIDs and plane geometry that attach it to its study, series
#: and frame of reference (for a multi-frame source, its functional groups), and nothing that names the patient.
ATTACH_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Modality",
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
    "InstanceNumber",
    "NumberOfFrames",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)

# Type 2 attributes highdicom reads from the first source: present (maybe empty) in every scanner series, not
# always in exports and test data. Missing ones are set empty on the reduced copies.
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

#: The UIDs every source must have for the SEG to reference it, in the order they are checked.
REFERENCED_UIDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
)

# where the file meta holds a dataset UID too
_FILE_META_UIDS = {"SOPClassUID": "MediaStorageSOPClassUID", "SOPInstanceUID": "MediaStorageSOPInstanceUID"}


@dataclass(frozen=True)
class SegSources:
    """The reduced headers of the source and which source frame each slice of the grid is.

    Attributes:
        headers: single-frame source: one header per slice k, in grid order; multi-frame: the one header.
        frames: multi-frame source: the 1-based frame number of each slice k; ``None`` for single frames.
    """

    headers: list[pydicom.Dataset]
    frames: list[int] | None = None

    @property
    def number_of_frames(self) -> int:
        """Frames of the SEG's pixel array before empty ones are left out: the source's frame count."""
        if self.frames is None:
            return len(self.headers)
        return int(self.headers[0].get("NumberOfFrames") or 0)


def seg_sources(image: Volume, anonymous: bool = False) -> SegSources:
    """The source headers of ``image`` (read by pe-seg's DICOM reader), reduced as the module docstring says.

    Raises:
        DicomSegSkipped: a source file cannot be re-read, lacks a UID the SEG must reference, or the frame
            numbers of a multi-frame source do not fit it.
    """
    files = [str(name) for name in image.metadata["files"]]
    keep = ATTACH_KEYWORDS if anonymous else (*ATTACH_KEYWORDS, *PATIENT_MODULE, *GENERAL_STUDY_MODULE)
    frames = image.metadata.get("frames")
    if frames is None:
        headers = [_reduced(_read(name), keep) for name in files]
        _check_references(headers)
        return SegSources(headers)
    if len(set(files)) != 1:
        raise DicomSegSkipped(
            f"the slices come from {len(set(files))} multi-frame objects; a SEG references one"
        )
    header = _reduced(_read(files[0]), keep)
    _check_references([header])
    numbers = [int(number) for number in frames]
    available = int(header.get("NumberOfFrames") or 0)
    if (
        len(numbers) != len(files)
        or len(set(numbers)) != len(numbers)
        or not all(1 <= n <= available for n in numbers)
    ):
        raise DicomSegSkipped(f"the slices' frame numbers do not fit the source's {available} frame(s)")
    return SegSources([header], numbers)


def _read(name: str) -> pydicom.Dataset:
    """A source file's header, parsed as the reader parses it (also files written without file meta)."""
    try:
        header = read_file_header(Path(name))
    except (OSError, ValueError, EOFError, pydicom.errors.InvalidDicomError) as err:
        raise DicomSegSkipped(f"cannot re-read a source header ({type(err).__name__}: {err})") from err
    if header is None:
        raise DicomSegSkipped(f"{name} is no longer a DICOM file")
    return header.ds


def _reduced(header: pydicom.Dataset, keep: Sequence[str]) -> pydicom.Dataset:
    """A copy of ``header`` with only the ``keep`` attributes, the SOP UIDs taken from the file meta where the
    dataset's are blank, and the Type 2 attributes highdicom reads present (empty where the source lacks them)."""
    reduced = pydicom.Dataset()
    for keyword in keep:
        if keyword in header:
            reduced[keyword] = header[keyword]
    meta = getattr(header, "file_meta", None) or pydicom.Dataset()
    for keyword, meta_keyword in _FILE_META_UIDS.items():
        if not _text(reduced.get(keyword)) and _text(meta.get(meta_keyword)):
            setattr(reduced, keyword, _text(meta.get(meta_keyword)))
    for keyword in _TYPE2_FROM_SOURCE:
        if keyword not in reduced:
            setattr(reduced, keyword, "")
    return reduced


def _check_references(headers: Sequence[pydicom.Dataset]) -> None:
    """Raise :class:`DicomSegSkipped` naming the first UID the SEG must reference that a source lacks."""
    for keyword in REFERENCED_UIDS:
        missing = sum(1 for header in headers if not _text(header.get(keyword)))
        if missing:
            where = " (nor its file meta)" if keyword in _FILE_META_UIDS else ""
            of = f" in {missing} of {len(headers)} files" if len(headers) > 1 else ""
            raise DicomSegSkipped(f"the source has no {keyword}{where}{of}, which a DICOM SEG must reference")


def _text(value: object) -> str:
    """An attribute's value as stripped text ('' for missing or empty)."""
    return str(value if value is not None else "").strip()
