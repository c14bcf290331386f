"""Read one DICOM file's header (no pixels) and say whether the file is whole, what UIDs it carries, and
whether it holds pixel data.

Series discovery (:mod:`pe_segmentation.io.dicom_scan`) needs three facts from each file that pydicom does not
give directly:

* **Does the file end early?** pydicom stops quietly at the end of a file cut inside its header, and reads a
  value cut short as if it were whole. So "truncated" is decided here from the bytes: the last header element
  must end exactly at the end of the file (or where the pixel data starts), native pixel data must be as long
  as its element says, and encapsulated (compressed) pixel data must reach its sequence delimiter. A file that
  passes these checks is whole, whatever attributes it lacks.
* **Its UIDs.** Anonymizers blank UIDs (empty strings) or drop them; an empty value counts as missing. The
  SOP Class and SOP Instance UIDs are taken from the file meta (MediaStorageSOPClassUID/-InstanceUID) when the
  data set lacks them, and the file says which ones it took from there.
* **Is it a DICOM file at all?** Files without the 128-byte preamble and file meta (a raw data set, as some
  anonymizers and old archives write them) are read when their first bytes are a group 0002 or 0008 element,
  as GDCM does.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError

#: PixelData, FloatPixelData and DoubleFloatPixelData: where pydicom's ``stop_before_pixels`` stops.
PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
#: The UIDs whose absence a series reports (``missing_uids``), in the order DICOM lists them.
UID_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
)
#: Data set UIDs that the file meta repeats, and the file meta keyword that holds each.
FILE_META_UIDS = {"SOPClassUID": "MediaStorageSOPClassUID", "SOPInstanceUID": "MediaStorageSOPInstanceUID"}
DEFLATED = "1.2.840.10008.1.2.1.99"
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)
_EXPLICIT_PIXEL_VRS = {b"OB", b"OW", b"OF", b"OD", b"OV", b"UN"}


@dataclass
class FileHeader:
    """One file's header and what series discovery needs to know about the file.

    Attributes:
        path: the file.
        ds: its data set without pixel data (the file meta in ``ds.file_meta`` when the file has one).
        pixel_offset: where the pixel data element starts, or None when the file has none.
        ends_early: where a file that is cut short ends ("inside its header", "inside its pixel data"), or None
            for a whole file.
        uids: keyword -> value of the :data:`UID_KEYWORDS` the file carries (SOP UIDs maybe from the file meta).
        missing_uids: the :data:`UID_KEYWORDS` the data set lacks (absent or empty).
        uids_from_file_meta: the SOP UIDs taken from the file meta because the data set lacks them.
    """

    path: Path
    ds: pydicom.Dataset
    pixel_offset: int | None
    ends_early: str | None
    uids: dict[str, str]
    missing_uids: frozenset[str]
    uids_from_file_meta: frozenset[str]

    @property
    def transfer_syntax(self) -> str:
        """The file meta's TransferSyntaxUID; implicit VR little endian for a raw data set without one."""
        return str(getattr(self.ds.get("file_meta", None), "TransferSyntaxUID", "1.2.840.10008.1.2"))


def read_file_header(path: Path) -> FileHeader | None:
    """Read ``path``'s header and check that the file is whole; None when it is not a DICOM file.

    Raises:
        OSError, ValueError, EOFError, ...: what pydicom raises on a header it cannot parse.
    """
    with open(path, "rb") as handle:
        ds = _parse(handle)
        if ds is None:
            return None
        offset, size = handle.tell(), os.fstat(handle.fileno()).st_size
        little_endian = ds.original_encoding[1] is not False
        if str(getattr(ds.get("file_meta", None), "TransferSyntaxUID", "")) == DEFLATED:
            # pydicom inflated the data set into memory: file offsets say nothing; GDCM judges the pixels
            pixel_offset, ends_early = (offset if "Rows" in ds else None), None
        else:
            pixel_offset, ends_early = _check_length(handle, ds, offset, size, little_endian)
    uids, missing, from_meta = _uids(ds)
    return FileHeader(path, ds, pixel_offset, ends_early, uids, missing, from_meta)


def _parse(handle: BinaryIO) -> pydicom.Dataset | None:
    """The data set up to its pixel data, from a Part 10 file or a raw data set; None when not DICOM."""
    try:
        return pydicom.dcmread(handle, stop_before_pixels=True)
    except InvalidDicomError:
        handle.seek(0)
        if not _looks_like_raw_data_set(handle.read(8)):
            return None
    handle.seek(0)
    ds = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
    return ds if len(ds) else None


def _looks_like_raw_data_set(head: bytes) -> bool:
    """Whether a file starts with a group 0002 or 0008 element, in explicit or implicit VR little endian."""
    if len(head) < 8:
        return False
    group, _element = struct.unpack("<HH", head[:4])
    explicit = head[4:6].isalpha() and head[4:6].isupper()
    return group in (0x0002, 0x0008) and (explicit or struct.unpack("<L", head[4:8])[0] < 0x10000)


def _check_length(
    handle: BinaryIO, ds: pydicom.Dataset, offset: int, size: int, little_endian: bool
) -> tuple[int | None, str | None]:
    """Where the pixel data starts (None: no pixel data), and where the file ends early (None: it is whole).

    ``offset`` is where pydicom stopped: the pixel data element, or the end of what it could read.
    """
    endian = "<" if little_endian else ">"
    handle.seek(offset)
    head = handle.read(12)
    if len(head) >= 4 and _tag(struct.unpack(endian + "HH", head[:4])) in PIXEL_DATA_TAGS:
        return offset, None if _pixel_data_whole(
            handle, offset, head, size, endian
        ) else "inside its pixel data"
    if _header_ends_early(handle, ds, size, endian):
        return None, "inside its header"
    return None, None


def _tag(group_element: tuple[int, ...]) -> int:
    return group_element[0] << 16 | group_element[1]


def _pixel_data_whole(handle: BinaryIO, offset: int, head: bytes, size: int, endian: str) -> bool:
    """Whether the pixel data element at ``offset`` (its first bytes in ``head``) is all in the file."""
    if len(head) < 8:
        return False
    if head[4:6] in _EXPLICIT_PIXEL_VRS:  # explicit VR: tag, VR, 2 reserved bytes, 4-byte length
        if len(head) < 12:
            return False
        length, start = struct.unpack(endian + "L", head[8:12])[0], offset + 12
    else:  # implicit VR: tag, 4-byte length
        length, start = struct.unpack(endian + "L", head[4:8])[0], offset + 8
    if length == _UNDEFINED_LENGTH:
        return _fragments_whole(handle, start, size, endian)
    return start + length <= size


def _fragments_whole(handle: BinaryIO, position: int, size: int, endian: str) -> bool:
    """Whether encapsulated pixel data starting at ``position`` reaches its sequence delimiter in the file.

    Each item (basic offset table, then fragments) is a tag and a length; the walk seeks over the values,
    so it costs a few reads per file. An element that is neither an item nor the delimiter is left for the
    decoder to judge (malformed is not the same as cut short).
    """
    while True:
        handle.seek(position)
        item = handle.read(8)
        if len(item) < 8:
            return False
        group, element, length = struct.unpack(endian + "HHL", item)
        if (group, element) == _SEQUENCE_END:
            return True
        if (group, element) != _ITEM:
            return True
        position += 8 + length
        if position > size:
            return False


def _header_ends_early(handle: BinaryIO, ds: pydicom.Dataset, size: int, endian: str) -> bool:
    """For a file without pixel data: whether it ends inside its header rather than after its last element.

    Must run before any value is accessed (pydicom then still holds the raw elements with their positions).
    """
    if not len(ds):
        return True  # a file meta and nothing after it, or a cut inside the file meta
    last = ds.get_item(max(ds.keys()))
    length, value_tell = getattr(last, "length", None), getattr(last, "value_tell", None)
    if length is None or value_tell is None:
        return False  # an element pydicom has already parsed: it was whole
    if length == _UNDEFINED_LENGTH:  # a sequence (or item) of undefined length ends with its delimiter
        handle.seek(max(size - 8, 0))
        return handle.read(8) != struct.pack(endian + "HHL", *_SEQUENCE_END, 0)
    return value_tell + length != size


def uid_value(ds: pydicom.Dataset, keyword: str) -> str | None:
    """A UID attribute's value, or None when absent or empty (how anonymizers blank it)."""
    value = ds.get(keyword)
    text = "" if value is None else str(value).strip().rstrip("\x00")
    return text or None


def _uids(ds: pydicom.Dataset) -> tuple[dict[str, str], frozenset[str], frozenset[str]]:
    """The file's UIDs (SOP UIDs from the file meta when the data set lacks them), the keywords the data set
    lacks, and those taken from the file meta."""
    meta = ds.get("file_meta", None)
    uids: dict[str, str] = {}
    missing, from_meta = set(), set()
    for keyword in UID_KEYWORDS:
        value = uid_value(ds, keyword)
        if value is None:
            missing.add(keyword)
            meta_keyword = FILE_META_UIDS.get(keyword)
            value = uid_value(meta, meta_keyword) if meta is not None and meta_keyword else None
            if value is not None:
                from_meta.add(keyword)
        if value is not None:
            uids[keyword] = value
    return uids, frozenset(missing), frozenset(from_meta)
