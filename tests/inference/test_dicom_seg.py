"""DICOM SEG: valid for highdicom and pydicom, referencing the right source instances, frames where they belong."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import make_affine

from pe_segmentation.errors import InputDataError
from pe_segmentation.inference.dicom_seg import SEG_SERIES_NUMBER_OFFSET, can_write_dicom_seg, write_dicom_seg
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.volume import Volume


@pytest.fixture
def oblique_series(series_writer):
    image = Volume(
        np.full((20, 16, 10), 40, np.int16), make_affine((0.7, 0.8, 2.0), euler_deg=(10.0, 20.0, 30.0))
    )
    # files numbered in shuffled slice order: the SEG must follow positions, not file names
    folder = series_writer(image, "ct", series_number=4, file_order=[3, 1, 0, 2, 9, 8, 4, 5, 7, 6])
    return read_dicom_series(folder).volume


def _frames_by_source(seg: hd.seg.Segmentation, volume: Volume) -> dict[str, np.ndarray]:
    uids = volume.metadata["sop_instance_uids"]
    referenced = {
        item.ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for item in derivation.SourceImageSequence
    }
    present = [uid for uid in uids if uid in referenced]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=present, segment_numbers=[1])
    return {uid: pixels[n, :, :, 0] for n, uid in enumerate(present)}


def test_seg_references_the_source_and_holds_each_slice_of_the_mask(tmp_path, oblique_series):
    volume = oblique_series
    mask = np.zeros(volume.shape, np.uint8)
    mask[3:7, 4:9, 2:5] = 1
    mask[15, 2, 8] = 1
    path = write_dicom_seg(
        mask, volume, tmp_path / "seg.dcm", model_name="pe-seg unet", model_version="abc123"
    )

    raw = pydicom.dcmread(path)
    assert raw.Modality == "SEG"
    assert raw.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert raw.SeriesNumber == 4 + SEG_SERIES_NUMBER_OFFSET
    seg = hd.seg.segread(path)
    assert seg.StudyInstanceUID == volume.metadata["study_uid"]
    first_source = pydicom.dcmread(volume.metadata["files"][0], stop_before_pixels=True)
    assert seg.FrameOfReferenceUID == first_source.FrameOfReferenceUID
    # the source's Patient and General Study modules, unchanged: the SEG files into the CT's patient and study
    assert (seg.PatientName, seg.PatientID, seg.StudyDate) == (
        first_source.PatientName,
        first_source.PatientID,
        first_source.StudyDate,
    )
    assert seg.PatientName == "PHANTOM^PE"
    anonymous = pydicom.dcmread(write_dicom_seg(mask, volume, tmp_path / "anonymous.dcm", anonymous=True))
    assert (anonymous.PatientName, anonymous.PatientID, anonymous.StudyDate) == ("", "", "")
    assert anonymous.StudyInstanceUID == first_source.StudyInstanceUID  # Type 1: what still attaches it
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == volume.metadata["series_uid"]
    assert [i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence] == volume.metadata[
        "sop_instance_uids"
    ]
    description = seg.SegmentSequence[0]
    assert description.SegmentLabel == "Pulmonary embolus"
    assert description.SegmentedPropertyTypeCodeSequence[0].CodeValue == "55584005"
    assert description.SegmentAlgorithmType == "AUTOMATIC"

    frames = _frames_by_source(seg, volume)
    assert seg.NumberOfFrames == 4  # slices 2, 3, 4 and 8 hold clot; empty frames are omitted
    for k, uid in enumerate(volume.metadata["sop_instance_uids"]):
        expected = mask[:, :, k].T  # rows = j, columns = i
        if expected.any():
            np.testing.assert_array_equal(frames[uid], expected)
        else:
            assert uid not in frames

    # the frames' positions are the source slices' positions
    positions = {
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID: [
            float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient
        ]
        for frame in seg.PerFrameFunctionalGroupsSequence
    }
    for name, uid in zip(volume.metadata["files"], volume.metadata["sop_instance_uids"], strict=True):
        if uid in positions:
            source = pydicom.dcmread(name, stop_before_pixels=True)
            assert positions[uid] == pytest.approx([float(v) for v in source.ImagePositionPatient], abs=1e-4)


def test_an_empty_mask_gives_a_valid_seg_with_every_frame(tmp_path, oblique_series):
    path = write_dicom_seg(np.zeros(oblique_series.shape, np.uint8), oblique_series, tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    assert seg.NumberOfFrames == oblique_series.shape[2]
    assert all(not frame.any() for frame in _frames_by_source(seg, oblique_series).values())


def test_seg_needs_a_dicom_source(tmp_path, oblique_series):
    volume = Volume(np.zeros((4, 4, 3), np.int16), np.eye(4), {"format": ".nii.gz"})
    assert not can_write_dicom_seg(volume)
    assert can_write_dicom_seg(oblique_series)
    with pytest.raises(InputDataError, match="DICOM SEG needs"):
        write_dicom_seg(np.zeros((4, 4, 3), np.uint8), volume, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()
