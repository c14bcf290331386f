"""No patient data in outputs but the DICOM SEG, which files into the CT's patient and study: a DICOM input with
known, distinctive identifiers, and every output scanned.

Every file a run writes is searched byte for byte (and gzip-decompressed, so NIfTI headers are read too),
together with everything printed: reports, logs, DICOM SEG, PNG, TensorBoard event files, configs, splits.
The rule: by default only ``seg.dcm`` holds the identifiers, as the source's Patient and General Study modules
unchanged (an archive files a SEG by patient and study); ``--anonymous-seg`` leaves them out of it too;
``--keep-phi`` adds them to ``report.json``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from inference.helpers import make_ct
from training.conftest import toy_config

from pe_segmentation.config import config_to_yaml
from pe_segmentation.io.dicom_writer import write_dicom_series
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import write_volume

from .conftest import files_under

#: Identifiers no output may hold; each also appears nowhere in pe-seg's own text.
IDENTITY = {
    "PatientName": "QUORVANDEL^ISOLDE^MARGIT",
    "PatientID": "PIDX-3317-0582",
    "PatientBirthDate": "19380217",
    "AccessionNumber": "ACCN90817345",
}
#: The strings searched for: each identifier and the parts of the name.
NEEDLES = [
    *(value.encode() for value in IDENTITY.values()),
    b"QUORVANDEL",
    b"ISOLDE",
    b"MARGIT",
]


def _blobs(path: Path) -> list[bytes]:
    """The file's bytes, plus the decompressed bytes of a gzip file (``.nii.gz``)."""
    data = path.read_bytes()
    blobs = [data]
    if data[:2] == b"\x1f\x8b":
        blobs.append(gzip.decompress(data))
    return blobs


def leaks(folder: Path, *texts: str) -> list[str]:
    """``file: needle`` for every identifier found in a file under ``folder`` or in ``texts``."""
    found = []
    for name in files_under(folder):
        for blob in _blobs(folder / name):
            found += [f"{name}: {n.decode()}" for n in NEEDLES if n in blob or n.lower() in blob.lower()]
    for index, text in enumerate(texts):
        found += [f"text {index}: {n.decode()}" for n in NEEDLES if n.decode().lower() in text.lower()]
    return sorted(set(found))


def _ct_series(folder: Path, volume: Volume, index: int) -> Path:
    write_dicom_series(
        volume,
        folder,
        patient_name=IDENTITY["PatientName"],
        patient_id=IDENTITY["PatientID"],
        uid_seed=f"phi-{index}",
        extra_tags={
            "PatientBirthDate": IDENTITY["PatientBirthDate"],
            "AccessionNumber": IDENTITY["AccessionNumber"],
            "PatientSex": "F",
            "InstitutionName": "Hospital of Testing",
        },
    )
    return folder


@pytest.fixture
def identified_series(tmp_path) -> Path:
    """A small CT series (40 x 36 x 30) whose headers carry :data:`IDENTITY`."""
    return _ct_series(tmp_path / "input" / "ct", make_ct(np.diag([-1.5, -1.5, 2.5, 1.0])), 0)


def test_the_scan_finds_identifiers_where_they_are(identified_series, tmp_path):
    assert leaks(identified_series)  # the input itself: the needles are really there
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "x.gz").write_bytes(gzip.compress(b"..." + IDENTITY["PatientID"].encode()))
    assert leaks(packed) == [f"x.gz: {IDENTITY['PatientID']}"]


@pytest.mark.parametrize("anonymous_seg", [False, True], ids=["default", "anonymous-seg"])
def test_inference_outputs_and_logs_carry_no_patient_data_but_the_seg(
    anonymous_seg, identified_series, tmp_path, pe_seg, tiny_checkpoint
):
    out = tmp_path / "out"
    info = pe_seg("info", "-i", identified_series, "--json")
    flags = ["--anonymous-seg"] if anonymous_seg else []
    result = pe_seg(
        "infer",
        "-i",
        identified_series,
        "-o",
        out,
        "--checkpoint",
        tiny_checkpoint,
        "--device",
        "cpu",
        "--save-probability",
        *flags,
    )
    assert result.code == 0, result.err
    assert set(files_under(out)) == {
        f"ct/{n}" for n in ("mask.nii.gz", "probability.nii.gz", "preview.png", "report.json", "seg.dcm")
    }
    found = leaks(out, result.out, result.err, info.out, info.err)
    # the SEG alone, and only by default, holds every identifier; the report, logs, NIfTI and preview none
    assert found == ([] if anonymous_seg else sorted(f"ct/seg.dcm: {n.decode()}" for n in NEEDLES))
    assert "patient" not in json.loads((out / "ct" / "report.json").read_text())

    seg = pydicom.dcmread(out / "ct" / "seg.dcm")
    source = pydicom.dcmread(sorted(identified_series.iterdir())[0], stop_before_pixels=True)
    # what attaches the SEG to its study and places it over the CT
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber"):
        assert keyword in seg
        assert str(seg[keyword].value) == ("" if anonymous_seg else str(source[keyword].value)), keyword
    assert "InstitutionName" not in seg  # the equipment module is not patient or study data: not copied


def test_keep_phi_keeps_the_identity(identified_series, tmp_path, pe_seg, tiny_checkpoint):
    out = tmp_path / "out"
    result = pe_seg(
        "infer",
        "-i",
        identified_series,
        "-o",
        out,
        "--checkpoint",
        tiny_checkpoint,
        "--device",
        "cpu",
        "--no-preview",
        "--keep-phi",
    )
    assert result.code == 0, result.err
    report = json.loads((out / "ct" / "report.json").read_text())
    assert report["patient"]["name"] == IDENTITY["PatientName"]
    assert report["patient"]["id"] == IDENTITY["PatientID"]
    assert report["patient"]["accession_number"] == IDENTITY["AccessionNumber"]
    seg = pydicom.dcmread(out / "ct" / "seg.dcm")
    assert (str(seg.PatientName), seg.PatientID, seg.PatientBirthDate) == (
        IDENTITY["PatientName"],
        IDENTITY["PatientID"],
        IDENTITY["PatientBirthDate"],
    )
    assert seg.AccessionNumber == IDENTITY["AccessionNumber"]
    assert {line.split(": ")[0] for line in leaks(out)} == {"ct/report.json", "ct/seg.dcm"}


def test_training_on_dicom_writes_no_patient_data(tmp_path, pe_seg):
    """Logs, TensorBoard events, config, split, metrics and checkpoints of a run trained on DICOM series."""
    rng = np.random.default_rng(0)
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    entries = []
    for index in range(3):
        image = rng.normal(40.0, 20.0, (24, 24, 24)).astype(np.float32)
        label = np.zeros(image.shape, np.uint8)
        label[6 + index : 14 + index, 8:16, 5:13] = 1
        image[label > 0] += 360.0
        series = _ct_series(
            tmp_path / "data" / f"case{index}", Volume(image.astype(np.int16), affine), index + 1
        )
        write_volume(Volume(label, affine), tmp_path / "data" / f"case{index}_seg.nii.gz")
        entries.append({"image": str(series), "label": str(tmp_path / "data" / f"case{index}_seg.nii.gz")})
    datalist = tmp_path / "data" / "datalist.json"
    datalist.write_text(json.dumps({"training": entries}))
    recipe = tmp_path / "recipe.yaml"
    config = toy_config(datalist, tmp_path / "run", "training.epochs=1", "patch.samples_per_volume=1")
    recipe.write_text(config_to_yaml(config))

    result = pe_seg("train", "--config", recipe)

    assert result.code == 0, result.err
    written = files_under(tmp_path / "run")
    assert "train.log" in written
    assert any(name.startswith("tensorboard/") for name in written)
    assert any(name.startswith("checkpoints/") for name in written)
    assert leaks(tmp_path / "run", result.out, result.err) == []
