"""Which cases an ``--input`` names: one CT, or many.

* a NIfTI/NRRD/MHA file: one case, named after the file (``case_001.nii.gz`` -> ``case_001``);
* a DICOM file: its series (the other files of the series in its folder), named after the folder;
* a flat folder of DICOM files (no subfolder, no volume file): one case, a series or a study whose series is
  picked by the series rule of :mod:`pe_segmentation.io.dicom_scan` when it is read;
* any other folder: every volume file under it is a case, and its DICOM files are grouped by
  StudyInstanceUID: one study is one case, whose series is picked by the series rule (so a study folder with
  one subfolder per series is one case), several studies give one case each, named after the folder that
  holds the study;
* a glob pattern (``'scans/*.nii.gz'``, ``'patients/*'``): each match is one case as above (a matched
  folder is one series or study).

Discovery reads DICOM headers only. A study without a usable CT series still becomes a case that fails with
its reason, so that in a multi-case run it is reported while the others are segmented.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.dicom_scan import DicomScan, SeriesInfo, scan_dicom_folder
from pe_segmentation.io.loader import input_kind
from pe_segmentation.io.series_choice import choose_series
from pe_segmentation.io.volume_files import case_name, is_volume_file

log = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class CaseInput:
    """One CT to segment.

    Attributes:
        name: the case name, used as its output folder (unique within a run).
        path: a volume file, a DICOM file or a folder holding the series.
        series_uid: for DICOM, the series to read (``None``: the series rule decides when reading).
        error: why the case cannot be read, found during discovery (reported when the case runs).
    """

    name: str
    path: Path
    series_uid: str | None = None
    error: str | None = None


def _unique(cases: list[CaseInput]) -> list[CaseInput]:
    """Make names unique (``name``, ``name_2``, ...) in discovery order."""
    seen: dict[str, int] = {}
    result = []
    for case in cases:
        name = case.name or "case"
        count = seen.get(name, 0) + 1
        seen[name] = count
        if count > 1:
            name = f"{name}_{count}"
            while name in seen:
                count += 1
                name = f"{case.name}_{count}"
            seen[name] = 1
        result.append(CaseInput(name, case.path, case.series_uid, case.error))
    return result


def _safe_name(parts: tuple[str, ...], fallback: str) -> str:
    name = "_".join(p for p in parts if p not in ("", ".")).strip()
    name = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)
    return name.strip("._") or fallback


def _common_folder(series: list[SeriesInfo]) -> Path:
    folders = {str(s.path.parent) for info in series for s in info.slices}
    return Path(os.path.commonpath(sorted(folders)))


def _study_cases(root: Path, scan: DicomScan) -> list[CaseInput]:
    """One case per StudyInstanceUID among the scan's image series; series whose files carry none (anonymized)
    are one case per folder, so that two such patients under one root do not merge into one case."""
    studies: dict[str, list[SeriesInfo]] = {}
    for series in scan.series:
        if series.slices:
            study = series.study_uid or f"folder {_common_folder([series])}"
            studies.setdefault(study, []).append(series)
    cases = []
    for number, series_list in enumerate(studies.values(), start=1):
        folder = _common_folder(series_list)
        relative = folder.relative_to(root).parts if folder != root else ()
        name = _safe_name(relative, root.name) if relative else _safe_name((root.name,), "dicom")
        if len(studies) > 1 and not relative:
            name = f"{name}_study{number}"
        sub_scan = DicomScan(folder=folder, series=series_list, non_dicom_files=[], unreadable_files=[])
        try:
            chosen = choose_series(sub_scan).series_uid
        except InputDataError as err:
            cases.append(CaseInput(name, folder, None, str(err)))
            continue
        cases.append(CaseInput(name, folder, chosen))
    return sorted(cases, key=lambda case: case.name)  # the scan orders series by UID, which users do not see


def _folder_cases(root: Path) -> list[CaseInput]:
    """Volume files under ``root`` (each a case) and its DICOM studies (each a case)."""
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    if entries and not any(p.is_dir() or is_volume_file(p) for p in entries) and _is_dicom(entries[0]):
        # a flat folder of DICOM files (a series or a study): one case, whose headers are read once, when
        # the series rule picks the series
        return [CaseInput(_safe_name((root.name,), "dicom"), root)]
    volumes = sorted(p for p in root.rglob("*") if p.is_file() and is_volume_file(p))
    cases = [
        CaseInput(_safe_name((*p.relative_to(root).parent.parts, case_name(p)), "case"), p) for p in volumes
    ]
    try:
        scan = scan_dicom_folder(root)
    except InputDataError:
        scan = None
    if scan is not None and any(s.slices for s in scan.series):
        cases += _study_cases(root, scan)
    if not cases:
        raise InputDataError(f"{root}: no DICOM series and no NIfTI/NRRD/MHA files found")
    return cases


def _is_dicom(path: Path) -> bool:
    try:
        return input_kind(path) == "dicom"
    except InputDataError:
        return False


def _single(path: Path) -> list[CaseInput]:
    if path.is_dir():
        return _folder_cases(path)
    kind = input_kind(path)  # raises for a missing path or a file that is neither
    if kind == "volume":
        return [CaseInput(case_name(path), path)]
    return [CaseInput(_safe_name((path.parent.name,), "dicom"), path)]


def discover_cases(spec: str | os.PathLike[str]) -> list[CaseInput]:
    """The cases named by ``--input`` (see the module docstring), with unique names.

    Raises:
        InputDataError: the path does not exist, a glob matches nothing, or nothing segmentable is found.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.exists() or not (_GLOB_CHARS & set(text)):
        return _unique(_single(path))
    matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text)))
    if not matches:
        raise InputDataError(f"{text}: the pattern matches no file or folder")
    cases: list[CaseInput] = []
    dicom_folders: set[Path] = set()
    for match in matches:
        if match.is_dir():
            cases.append(CaseInput(_safe_name((match.name,), "case"), match))
        elif is_volume_file(match):
            cases.append(CaseInput(case_name(match), match))
        elif match.parent not in dicom_folders:  # 'series/*.dcm' names one series, not one case per file
            try:
                if input_kind(match) == "dicom":
                    dicom_folders.add(match.parent)
                    cases.append(CaseInput(_safe_name((match.parent.name,), "dicom"), match))
            except InputDataError:
                log.warning("%s: neither DICOM nor a volume file; skipped", match)
    if not cases:
        raise InputDataError(f"{text}: the pattern matches no DICOM series or volume file")
    return _unique(cases)
