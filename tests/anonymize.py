"""What anonymizers and exports do to a DICOM series, done to a written phantom series for the tests: UIDs
blanked, file meta dropped, pixels recompressed as JPEG 2000 lossless."""

from __future__ import annotations

from pathlib import Path

import pydicom
import SimpleITK as sitk

JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def blank_uids(folder: Path) -> None:
    """What the issue's anonymizer did: empty SOP Class, SOP Instance and Series UIDs; file meta kept."""
    for path in files_of(folder):
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.SOPInstanceUID = ds.SeriesInstanceUID = ""
        ds.save_as(path)


def drop_file_meta(folder: Path) -> None:
    """Rewrite every file as a raw data set: no preamble, no 'DICM', no file meta (implicit VR little endian)."""
    for path in files_of(folder):
        ds = pydicom.dcmread(path)
        del ds.file_meta
        ds.preamble = None
        pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
        assert path.read_bytes()[:2] == b"\x08\x00"  # starts with a group 0008 element, not a preamble


def to_jpeg2000(folder: Path) -> None:
    """Recompress every file as JPEG 2000 lossless with SimpleITK/GDCM, keeping its header and UIDs."""
    for path in files_of(folder):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.SetOutputPixelType(sitk.sitkInt16)  # 16 bits stored: GDCM's JPEG 2000 coder takes at most 31
        image = reader.Execute()
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(path))
        writer.SetUseCompression(True)
        writer.SetCompressor("JPEG2000")
        writer.KeepOriginalImageUIDOn()
        writer.Execute(image)
        assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEG2000_LOSSLESS
