"""Multi-frame CT (Legacy Converted Enhanced CT, Enhanced CT): read like the single-frame series it came from.

The objects are made by highdicom from a single-frame phantom series, then reordered, moved into per-frame
functional groups, compressed or damaged (:mod:`enhanced_ct`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import make_affine
from enhanced_ct import (
    convert_to_multiframe,
    drop_frame,
    edit_multiframe,
    per_frame,
    positions,
    same_position,
)
from monai.transforms import LoadImage
from pydicom.uid import JPEGLosslessSV1, JPEGLSLossless, RLELossless

from pe_segmentation.errors import InputDataError
from pe_segmentation.io import load_volume
from pe_segmentation.io.dicom_multiframe import ENHANCED_CT_IMAGE_STORAGE
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.dicom_scan import scan_dicom_folder
from pe_segmentation.io.monai_reader import PESegReader
from pe_segmentation.io.series_choice import choose_series
from pe_segmentation.io.volume import Volume

OBLIQUE = make_affine(euler_deg=(20.0, -10.0, 35.0))
SHUFFLED = [5, 2, 7, 0, 3, 6, 1, 4]  # the stored frame order of the shuffled objects (8 frames)


@pytest.fixture
def original(hu_volume: Volume, series_writer: Callable[..., Path]) -> Path:
    """An oblique single-frame series of 8 slices (the :func:`hu_volume` voxels)."""
    return series_writer(Volume(hu_volume.array, OBLIQUE), "original")


def assert_same_volume(volume: Volume, reference: Volume) -> None:
    np.testing.assert_array_equal(volume.array, reference.array)
    assert volume.array.dtype == reference.array.dtype
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-4)


@pytest.mark.parametrize("syntax", [None, RLELossless, JPEGLSLossless], ids=["explicit", "rle", "jpegls"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
def test_converted_series_reads_like_its_single_frame_original(original, tmp_path, syntax, shuffled):
    path = tmp_path / "enhanced" / "ct.dcm"
    convert_to_multiframe(original, path, frame_order=SHUFFLED if shuffled else None, transfer_syntax=syntax)
    reference = read_dicom_series(original).volume

    volume = read_dicom_series(path.parent).volume

    assert_same_volume(volume, reference)
    meta, header = volume.metadata, pydicom.dcmread(path, stop_before_pixels=True)
    assert meta["format"] == "dicom"
    assert meta["files"] == [str(path)] * 8
    assert meta["sop_instance_uids"] == [header.SOPInstanceUID] * 8
    assert (meta["series_uid"], meta["study_uid"]) == (
        header.SeriesInstanceUID,
        reference.metadata["study_uid"],
    )
    assert meta["series_number"] == reference.metadata["series_number"]
    assert meta["warnings"] == []
    # frame f of the file lies where slice k of the original does, for the k-th entry of "frames"
    stored = positions(path)
    original_positions = [pydicom.dcmread(f).ImagePositionPatient for f in reference.metadata["files"]]
    np.testing.assert_allclose([stored[f - 1] for f in meta["frames"]], original_positions, atol=1e-4)
    assert sorted(meta["frames"]) == list(range(1, 9))
    monotonic = meta["frames"] in (sorted(meta["frames"]), sorted(meta["frames"], reverse=True))
    assert monotonic != shuffled
    assert "frames" not in reference.metadata


def test_a_multiframe_file_is_an_input_of_its_own(original, tmp_path):
    path = convert_to_multiframe(original, tmp_path / "enhanced" / "ct.dcm", frame_order=SHUFFLED)
    assert_same_volume(load_volume(path), read_dicom_series(original).volume)


def _per_frame_everything(ds: pydicom.Dataset) -> None:
    """Enhanced CT with every functional group per frame and a different RescaleIntercept on each frame."""
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT_IMAGE_STORAGE
    per_frame("PlaneOrientationSequence", "ImageOrientationPatient", lambda i, value: value)(ds)
    per_frame("PixelMeasuresSequence", "PixelSpacing", lambda i, value: value)(ds)
    per_frame("PixelValueTransformationSequence", "RescaleIntercept", lambda i, value: float(value) - 10 * i)(
        ds
    )
    shift = 10 * np.arange(int(ds.NumberOfFrames))[:, None, None]  # the same HU with the lower intercepts
    ds.PixelData = (ds.pixel_array.astype(np.int32) + shift).astype(np.uint16).tobytes()


@pytest.mark.parametrize("compress", [False, True], ids=["explicit", "rle"])
def test_per_frame_groups_and_per_frame_rescale_give_the_same_hu(original, tmp_path, compress):
    path = convert_to_multiframe(original, tmp_path / "enhanced" / "ct.dcm", frame_order=SHUFFLED)

    def edit(ds: pydicom.Dataset) -> None:
        _per_frame_everything(ds)
        if compress:
            ds.compress(RLELossless)

    edit_multiframe(path, edit)
    reference = read_dicom_series(original).volume

    volume = read_dicom_series(path.parent).volume

    assert volume.array.dtype == np.float32  # several rescales: floats, as for a single-frame series
    np.testing.assert_array_equal(volume.array, reference.array.astype(np.float32))
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-4)


def _half_slope(ds: pydicom.Dataset) -> None:
    """RescaleSlope 0.5 (shared) with doubled stored values: the same HU, decoded to floats."""
    ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope = 0.5
    ds.PixelData = (ds.pixel_array.astype(np.int32) * 2 + 1024).astype(np.uint16).tobytes()
    ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleIntercept = -1536


@pytest.mark.parametrize("syntax", [None, RLELossless], ids=["explicit-by-pydicom", "rle-by-gdcm"])
def test_a_fractional_slope_gives_float_hu(original, tmp_path, syntax):
    path = convert_to_multiframe(original, tmp_path / "enhanced" / "ct.dcm", frame_order=SHUFFLED)
    edit_multiframe(path, lambda ds: (_half_slope(ds), syntax and ds.compress(syntax)))

    volume = read_dicom_series(path.parent).volume

    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, read_dicom_series(original).volume.array.astype(np.float32))


def test_the_monai_reader_loads_a_multiframe_file(original, tmp_path):
    path = convert_to_multiframe(original, tmp_path / "enhanced" / "ct.dcm", frame_order=SHUFFLED)
    reference = read_dicom_series(original).volume

    image = LoadImage(reader=PESegReader(), image_only=True)(str(path))

    np.testing.assert_array_equal(np.asarray(image), reference.array.astype(np.float32))
    np.testing.assert_allclose(np.asarray(image.affine), reference.affine, atol=1e-4)


def test_original_and_its_conversion_with_the_same_uid_stay_two_series(original, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(original, study / "single")
    uid = str(pydicom.dcmread(next(original.iterdir())).SeriesInstanceUID)
    path = convert_to_multiframe(original, study / "enhanced" / "ct.dcm", series_instance_uid=uid)
    reference = read_dicom_series(original).volume

    scan = scan_dicom_folder(study)

    assert [len(s.slices) for s in scan.series] == [8, 8]  # not one series of 16 duplicate slices
    assert sorted(s.n_files for s in scan.series) == [1, 8]
    assert [s.summary()["rejected"] for s in scan.series] == [None, None]
    assert {s.slices[0].path.parent for s in scan.series} == {study / "single", path.parent}
    for series_uid in (None, uid):
        assert_same_volume(read_dicom_series(study, series_uid).volume, reference)


def test_a_multiframe_object_competes_by_the_series_rule(hu_volume, series_writer, tmp_path):
    series_writer(Volume(hu_volume.array[:, :, :4], OBLIQUE), "study/short", series_number=1)
    longer = series_writer(Volume(hu_volume.array, OBLIQUE), "longer", series_number=2)
    path = convert_to_multiframe(longer, tmp_path / "study" / "enhanced" / "ct.dcm")

    chosen = choose_series(scan_dicom_folder(tmp_path / "study"))

    assert chosen.slices[0].path == path  # the most slices
    assert len(chosen.slices) == 8


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-50])


def _edit(edit: Callable[[pydicom.Dataset], None]) -> Callable[[Path], object]:
    return lambda path: edit_multiframe(path, edit)


def _no_position(ds: pydicom.Dataset) -> None:
    del ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence


def _per_frame_rescale_as_jpeg_lossless(ds: pydicom.Dataset) -> None:
    """Per-frame rescales in a transfer syntax pydicom cannot decode here (JPEG lossless; only GDCM can)."""
    per_frame("PixelValueTransformationSequence", "RescaleIntercept", lambda i, value: float(value) - i)(ds)
    ds.compress(RLELossless)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1


TILTED = [1, 0, 0, 0, 0.9, 0.43589]
REFUSALS: dict[str, tuple[Callable[[Path], object], str]] = {
    "gap": (_edit(drop_frame(3)), "missing slices"),
    "duplicate-position": (_edit(same_position(4, as_index=3)), "duplicate slice positions"),
    "mixed-orientation": (
        _edit(
            per_frame(
                "PlaneOrientationSequence", "ImageOrientationPatient", lambda i, v: TILTED if i == 2 else v
            )
        ),
        "mixed ImageOrientationPatient (ct.dcm frame 3 differs)",
    ),
    "mixed-pixel-spacing": (
        _edit(per_frame("PixelMeasuresSequence", "PixelSpacing", lambda i, v: [0.5, 0.5] if i == 5 else v)),
        "mixed PixelSpacing",
    ),
    "missing-position": (_edit(_no_position), "frame 2: missing or invalid ImagePositionPatient"),
    "truncated": (_truncate, "truncated file"),
    "per-frame-rescale-without-a-pydicom-decoder": (
        _edit(_per_frame_rescale_as_jpeg_lossless),
        "frames with different RescaleSlope/RescaleIntercept need pydicom to decode them",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_damaged_multiframe_objects_are_refused_in_one_line(original, tmp_path, case):
    damage, problem = REFUSALS[case]
    path = convert_to_multiframe(original, tmp_path / "enhanced" / "ct.dcm")
    damage(path)

    with pytest.raises(InputDataError) as refused:
        read_dicom_series(path.parent)

    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert problem in message
