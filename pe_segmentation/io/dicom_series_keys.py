"""Group files that have no SeriesInstanceUID into series, and give each such series a key.

Anonymizers blank or drop SeriesInstanceUID, or export one series per folder without any UID. SimpleITK and
dcm2niix still read such series; so does pe-seg, by grouping the files on what else identifies a series:

* the folder the file is in, its StudyInstanceUID if any, SeriesNumber and Modality;
* its grid: ImageOrientationPatient (within :data:`ORIENTATION_TOLERANCE`), PixelSpacing (within
  :data:`SPACING_TOLERANCE`, relative) and Rows x Columns;
* what tells reconstructions of one acquisition apart: ImageType, ConvolutionKernel, SliceThickness and
  AcquisitionNumber. A CTPA folder often holds soft-tissue and lung reconstructions and bolus-tracking slices on
  the same grid; they must not merge into one volume.

Each group gets a key, ``nouid-`` and 16 hex digits of a hash of these facts and of the folder's absolute path.
The key is stable (the same files in the same place give the same key, however the folder is reached), it
names the series in ``pe-seg info`` and selects it with ``--series-uid``, and it is never written anywhere as a
UID: it is not one, and a DICOM UID has no letters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.multival import MultiValue

from pe_segmentation.io.dicom_header import uid_value

#: Prefix of the keys made for series without a SeriesInstanceUID.
KEY_PREFIX = "nouid-"
#: Largest difference between direction cosines of files grouped into one series. Wider than the reader's
#: 1e-4 on purpose: a series split by rounding noise would be read short, while one merged by a looser
#: tolerance is refused as "mixed ImageOrientationPatient".
ORIENTATION_TOLERANCE = 1e-3
SPACING_TOLERANCE = 1e-3  # relative PixelSpacing difference within one group, for the same reason

#: The attributes compared exactly, in the order the warning names them.
EXACT_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesNumber",
    "Modality",
    "ImageType",
    "ConvolutionKernel",
    "SliceThickness",
    "AcquisitionNumber",
)


@dataclass(frozen=True)
class SeriesFacts:
    """What identifies the series of a file that has no SeriesInstanceUID.

    Attributes:
        folder: the absolute path of the file's folder.
        exact: the normalized text of :data:`EXACT_KEYWORDS` ("" when absent), then rows and columns.
        orientation: ImageOrientationPatient, or None when absent or unreadable.
        pixel_spacing: PixelSpacing, or None.
    """

    folder: str
    exact: tuple[str, ...]
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None

    def close_to(self, other: SeriesFacts) -> bool:
        """Whether ``other`` belongs to the same series: same exact facts, grid within tolerance."""
        return (
            (self.folder, self.exact) == (other.folder, other.exact)
            and _near(self.orientation, other.orientation, ORIENTATION_TOLERANCE, relative=False)
            and _near(self.pixel_spacing, other.pixel_spacing, SPACING_TOLERANCE, relative=True)
        )

    @property
    def key(self) -> str:
        """The series key: a hash of the facts (the grid rounded to 6 decimals), see the module docstring."""
        grid = [
            None if v is None else [round(x, 6) for x in v] for v in (self.orientation, self.pixel_spacing)
        ]
        text = repr((self.folder, self.exact, grid))
        return KEY_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """How the files were grouped, for the warning: the compared facts and their values."""
        named = [
            f"{keyword} {'present' if keyword == 'StudyInstanceUID' and value else value or '(none)'}"
            for keyword, value in zip(EXACT_KEYWORDS, self.exact, strict=False)
        ]
        rows, columns = self.exact[len(EXACT_KEYWORDS) :]
        return (
            f"folder {Path(self.folder).name}, {', '.join(named)}, ImageOrientationPatient, PixelSpacing "
            f"and {rows} x {columns} matrix"
        )


def _near(a: tuple[float, ...] | None, b: tuple[float, ...] | None, tolerance: float, relative: bool) -> bool:
    if a is None or b is None:
        return a is None and b is None
    first, second = np.asarray(a), np.asarray(b)
    scale = np.maximum(np.abs(first), 1e-9) if relative else 1.0
    return bool(np.all(np.abs(first - second) / scale <= tolerance))


def _text(value: object) -> str:
    """A tag value as comparable text: multi-valued joined by backslashes, numbers in one spelling."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_text(v) for v in value)
    if isinstance(value, float | int):  # DS and IS values are float and int subclasses
        return f"{float(value):.6g}"
    return str(value).strip()


def _numbers(value: object, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[attr-defined]  # a DS multi-value
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and np.isfinite(numbers).all() else None


def series_facts(ds: pydicom.Dataset, folder: Path) -> SeriesFacts:
    """The :class:`SeriesFacts` of a header read from a file in ``folder``."""
    exact = [uid_value(ds, "StudyInstanceUID") or ""]
    exact += [_text(ds.get(keyword)) for keyword in EXACT_KEYWORDS[1:]]
    exact += [_text(ds.get("Rows")), _text(ds.get("Columns"))]
    return SeriesFacts(
        folder=str(folder.resolve()),
        exact=tuple(exact),
        orientation=_numbers(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_numbers(ds.get("PixelSpacing"), 2),
    )


class UidlessGrouping:
    """Assigns the files of one scan that have no SeriesInstanceUID to series, file by file.

    The first file of a group (in the scan's sorted order) stands for it: later files join the group whose
    representative they are :meth:`SeriesFacts.close_to`, so noise in the last decimals never splits a series.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[str, tuple[str, ...]], list[SeriesFacts]] = {}

    def add(self, facts: SeriesFacts) -> SeriesFacts:
        """The representative facts of the group ``facts`` joins (``facts`` itself for a new group)."""
        candidates = self._groups.setdefault((facts.folder, facts.exact), [])
        for representative in candidates:
            if representative.close_to(facts):
                return representative
        candidates.append(facts)
        return facts
