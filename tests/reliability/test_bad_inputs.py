"""A corpus of bad inputs run through the ``pe-seg`` command line, made here (no files committed).

Every bad case must fail with its own exit code (never 0, never 1 = a crash), print exactly one ``error:``
line that names the file and the problem, show no traceback without ``--debug`` and leave nothing in the
output folder. Usable-but-odd inputs must warn and go on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import make_affine, set_dicom_tags
from inference.helpers import tiny_config, write_checkpoint
from training.conftest import toy_config, write_toy_cases

from pe_segmentation.config import config_to_yaml
from pe_segmentation.errors import EXIT_CHECKPOINT, EXIT_CONFIG, EXIT_INPUT
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import write_volume

from .conftest import files_under


@dataclass
class Corpus:
    """What a case builder gets: a scratch folder, a DICOM writer, a CT and a working checkpoint."""

    root: Path
    write_series: Callable[..., Path]
    ct: Volume
    checkpoint: Path

    @property
    def out(self) -> Path:
        return self.root / "out"

    def infer(self, source: Path, checkpoint: Path | None = None) -> list[object]:
        return [
            "infer",
            "-i",
            source,
            "-o",
            self.out,
            "--checkpoint",
            checkpoint or self.checkpoint,
            "--device",
            "cpu",
            "--no-preview",
        ]

    def series(self, **kwargs: object) -> Path:
        return self.write_series(self.ct, "series", **kwargs)

    def nifti(self, name: str, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
        path = self.root / name
        nib.save(nib.Nifti1Image(array, make_affine() if affine is None else affine), path)
        return path

    def evaluate(self, label: Path, pred: Path | None = None) -> list[object]:
        pred = pred or write_volume(
            Volume(np.zeros(self.ct.shape, np.uint8), self.ct.affine), self.root / "pred" / "c.nii.gz"
        )
        return ["evaluate", "--pred", pred, "--label", label, "-o", self.out]

    def train(self, recipe: str) -> list[object]:
        path = self.root / "recipe.yaml"
        path.write_text(recipe)
        return ["train", "--config", path, "--run-dir", self.out, "--no-progress"]


@dataclass(frozen=True)
class Bad:
    """A case that must be refused: the command, the exit code, the problem and the file the message names."""

    argv: list[object]
    code: int
    problem: str
    names: Path


def _slices(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def _damage(c: Corpus, action: Callable[[Path], object], **kwargs: object) -> Path:
    folder = c.series(**kwargs)
    action(folder)
    return folder


def _dicom(c: Corpus, problem: str, action: Callable[[Path], object], **kwargs: object) -> Bad:
    folder = _damage(c, action, **kwargs)
    return Bad(c.infer(folder), EXIT_INPUT, problem, folder)


def _each(tags: Callable[[int], dict[str, object]]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        for k in range(len(_slices(folder))):
            set_dicom_tags(folder, k, **tags(k))

    return apply


def _non_image_objects(c: Corpus) -> Bad:
    folder = c.root / "sr"
    folder.mkdir()
    for number in range(2):
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # text SR
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.3", "1.2.3.4", "SR"
        ds.save_as(folder / f"sr{number}.dcm", enforce_file_format=True)
    return Bad(c.infer(folder), EXIT_INPUT, "no CT image series", folder)


def _empty(c: Corpus) -> Bad:
    (c.root / "empty").mkdir()
    return Bad(c.infer(c.root / "empty"), EXIT_INPUT, "no DICOM series", c.root / "empty")


def _no_dicom(c: Corpus) -> Bad:
    folder = c.root / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("not an image")
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return Bad(c.infer(folder), EXIT_INPUT, "no DICOM series", folder)


def _blank_uids(folder: Path) -> None:
    """What an anonymizer may do: empty SOP Class, SOP Instance and Series UIDs (the file meta keeps two)."""
    _each(lambda k: {"SOPClassUID": "", "SOPInstanceUID": "", "SeriesInstanceUID": ""})(folder)


def _position(k: int, dz: float = 0.0, dy: float = 0.0) -> dict[str, object]:
    return {"ImagePositionPatient": [10.0, -20.0 + dy * k, 30.0 + 2.0 * k + dz * (k % 2)]}


DICOM: dict[str, Callable[[Corpus], Bad]] = {
    "dicom-empty-folder": _empty,
    "dicom-no-dicom-files": _no_dicom,
    "dicom-non-image-objects-only": _non_image_objects,
    "dicom-missing-slice": lambda c: _dicom(c, "missing slices", lambda f: _slices(f)[3].unlink()),
    "dicom-duplicate-positions": lambda c: _dicom(
        c,
        "duplicate slice positions",
        lambda f: set_dicom_tags(
            f, 4, ImagePositionPatient=pydicom.dcmread(_slices(f)[3]).ImagePositionPatient
        ),
    ),
    "dicom-uneven-spacing": lambda c: _dicom(
        c, "non-uniform slice spacing", _each(lambda k: _position(k, dz=0.3))
    ),
    "dicom-gantry-tilt": lambda c: _dicom(c, "gantry tilt", _each(lambda k: _position(k, dy=0.5))),
    "dicom-mixed-sizes": lambda c: _dicom(
        c,
        "mixed slice sizes",
        lambda f: set_dicom_tags(f, 2, Rows=10, PixelData=np.zeros((10, 24), np.uint16).tobytes()),
    ),
    "dicom-mixed-orientation": lambda c: _dicom(
        c,
        "mixed ImageOrientationPatient",
        lambda f: set_dicom_tags(f, 2, ImageOrientationPatient=[1, 0, 0, 0, 0.9, 0.43589]),
    ),
    "dicom-truncated-file": lambda c: _dicom(
        c, "truncated file", lambda f: _slices(f)[5].write_bytes(_slices(f)[5].read_bytes()[:-50])
    ),
    "dicom-truncated-uid-less-file": lambda c: _dicom(
        c,
        "truncated file",
        lambda f: (_blank_uids(f), _slices(f)[5].write_bytes(_slices(f)[5].read_bytes()[:-50])),
    ),
    "dicom-missing-position": lambda c: _dicom(
        c, "ImagePositionPatient", lambda f: set_dicom_tags(f, 1, ImagePositionPatient=None)
    ),
    "dicom-not-ct": lambda c: _dicom(c, "no CT image series", _each(lambda k: {"Modality": "MR"})),
    "dicom-single-slice": lambda c: _dicom(
        c, "a single slice", lambda f: [p.unlink() for p in _slices(f)[1:]]
    ),
    "dicom-localizers-only": lambda c: _dicom(
        c, "localizer", _each(lambda k: {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    ),
}


def _volume(c: Corpus, name: str, problem: str, array: np.ndarray, affine: np.ndarray | None = None) -> Bad:
    path = c.nifti(name, array, affine)
    return Bad(c.infer(path), EXIT_INPUT, problem, path)


def _corrupt_gzip(c: Corpus) -> Bad:
    path = c.nifti("corrupt.nii.gz", c.ct.array)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return Bad(c.infer(path), EXIT_INPUT, "cannot read", path)


def _not_gzip(c: Corpus) -> Bad:
    path = c.root / "plain.nii.gz"
    path.write_bytes(b"\x00" * 400)
    return Bad(c.infer(path), EXIT_INPUT, "cannot read", path)


def _with(array: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    array = array.astype(np.float32)
    array[index] = value
    return array


def _nifti_forms(c: Corpus, name: str, sform: np.ndarray | None, qform: np.ndarray | None) -> Path:
    """A NIfTI file with the given sform and qform (``None``: that form's code is 0)."""
    image = nib.Nifti1Image(c.ct.array, make_affine())
    image.set_qform(qform, code=0 if qform is None else 1)
    image.set_sform(sform, code=0 if sform is None else 2)
    path = c.root / name
    nib.save(image, path)
    return path


def _bad_sform(c: Corpus, name: str, sform: np.ndarray) -> Bad:
    path = _nifti_forms(c, name, sform, None)
    return Bad(c.infer(path), EXIT_INPUT, "degenerate geometry", path)


VOLUMES: dict[str, Callable[[Corpus], Bad]] = {
    "volume-corrupt-gzip": _corrupt_gzip,
    "volume-not-gzip": _not_gzip,
    "volume-nan-voxels": lambda c: _volume(
        c, "nan.nii.gz", "NaN or infinite", _with(c.ct.array, (3, 4, 5), np.nan)
    ),
    "volume-inf-voxels": lambda c: _volume(
        c, "inf.nii.gz", "NaN or infinite", _with(c.ct.array, (0, 0, 0), -np.inf)
    ),
    "volume-zero-size-axis": lambda c: _volume(
        c, "flat.nii.gz", "empty axis", np.zeros((24, 0, 8), np.int16)
    ),
    "volume-4d": lambda c: _volume(
        c, "dynamic.nii.gz", "expected one 3D volume", np.zeros((24, 20, 8, 3), np.int16)
    ),
    "volume-2d": lambda c: _volume(c, "slice.nii.gz", "3D volume", np.zeros((24, 20), np.int16)),
    "volume-singular-sform": lambda c: _bad_sform(c, "singular.nii.gz", np.diag([0.7, 0.0, 2.0, 1.0])),
    "volume-collinear-sform": lambda c: _bad_sform(
        c, "collinear.nii.gz", np.array([[1.0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    ),
}


def _label_file(c: Corpus, name: str, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    folder = c.root / "labels"
    folder.mkdir(exist_ok=True)
    path = folder / name
    nib.save(nib.Nifti1Image(array, c.ct.affine if affine is None else affine), path)
    return path


def _label(c: Corpus, problem: str, array: np.ndarray, affine: np.ndarray | None = None) -> Bad:
    path = _label_file(c, "c.nii.gz", array, affine)
    return Bad(c.evaluate(path), EXIT_INPUT, problem, path)


def _training_label(
    c: Corpus,
    problem: str,
    shape: tuple[int, int, int],
    spacing: float = 2.0,
    value: float = 0,
    overrides: tuple[str, ...] = (),
) -> Bad:
    """A toy training set (24^3 images, 2 mm voxels) whose second label is replaced by one filled with
    ``value`` on a grid of ``shape`` and ``spacing``; ``overrides`` change the toy recipe."""
    datalist = write_toy_cases(c.root / "toy", cases=3)
    label = c.root / "toy" / "toy_01_seg.nii.gz"
    array = np.full(shape, value, np.float32 if value != int(value) else np.int16)
    nib.save(nib.Nifti1Image(array, np.diag([spacing, spacing, spacing, 1.0])), label)
    recipe = c.root / "recipe.yaml"
    recipe.write_text(config_to_yaml(toy_config(datalist, c.out, "training.epochs=1", *overrides)))
    return Bad(["train", "--config", recipe, "--no-progress"], EXIT_INPUT, problem, label)


LABELS: dict[str, Callable[[Corpus], Bad]] = {
    "label-train-shape-mismatch": lambda c: _training_label(c, "differ in shape", (24, 24, 20)),
    "label-train-geometry-mismatch": lambda c: _training_label(c, "differ in geometry", (24, 24, 24), 2.5),
    "label-train-float-values": lambda c: _training_label(c, "non-integer values", (24, 24, 24), value=0.3),
    "label-train-negative-values": lambda c: _training_label(c, "negative values", (24, 24, 24), value=-1),
    # found while training, in a DataLoader worker process: torch passes the error back as text only
    "label-train-float-values-in-worker": lambda c: _training_label(
        c, "non-integer values", (24, 24, 24), value=0.3, overrides=("data.cache=none", "data.num_workers=2")
    ),
    "label-shape-mismatch": lambda c: _label(c, "differ in shape", np.zeros((24, 20, 9), np.uint8)),
    "label-geometry-mismatch": lambda c: _label(
        c, "differ in geometry", np.zeros(c.ct.shape, np.uint8), make_affine(spacing=(0.7, 0.8, 2.5))
    ),
    "label-negative-values": lambda c: _label(c, "negative values", np.full(c.ct.shape, -1, np.int16)),
    "label-float-values": lambda c: _label(c, "non-integer values", np.full(c.ct.shape, 0.3, np.float32)),
}


RECIPE = "data:\n  path: {data}\npreprocessing:\n  spacing: null\nmodel:\n  name: unet\n"

CONFIGS: dict[str, Callable[[Corpus], Bad]] = {
    "config-unknown-key": lambda c: Bad(
        c.train("training:\n  epohcs: 3\n"),
        EXIT_CONFIG,
        "unknown key (did you mean 'epochs'?)",
        c.root / "recipe.yaml",
    ),
    "config-wrong-type": lambda c: Bad(
        c.train("training:\n  epochs: many\n"), EXIT_CONFIG, "training.epochs", c.root / "recipe.yaml"
    ),
    "config-negative-lr": lambda c: Bad(
        c.train("optimizer:\n  lr: -0.001\n"), EXIT_CONFIG, "optimizer.lr", c.root / "recipe.yaml"
    ),
    "config-missing-data-path": lambda c: Bad(
        c.train("training:\n  epochs: 1\n"), EXIT_CONFIG, "data.path", Path("data.path")
    ),
    "config-absent-data-path": lambda c: Bad(
        c.train(RECIPE.format(data=c.root / "nowhere.json")), EXIT_INPUT, "not found", c.root / "nowhere.json"
    ),
    "config-broken-yaml": lambda c: Bad(
        c.train("training: {epochs: 3\n"), EXIT_CONFIG, "invalid YAML", c.root / "recipe.yaml"
    ),
    "config-not-a-mapping": lambda c: Bad(
        c.train("- a\n- b\n"), EXIT_CONFIG, "expected a mapping", c.root / "recipe.yaml"
    ),
}


def _checkpoint(c: Corpus, name: str, problem: str, write: Callable[[Path], object]) -> Bad:
    path = c.root / name
    write(path)
    return Bad(c.infer(c.series(), path), EXIT_CHECKPOINT, problem, path)


def _other_architecture(path: Path) -> None:
    """Weights of a 3-level UNet under a config that says 2 levels."""
    write_checkpoint(path, tiny_config(model={"depth": 3}))
    data = torch.load(path, weights_only=True)
    data["config"] = tiny_config().to_dict()
    torch.save(data, path)


CHECKPOINTS: dict[str, Callable[[Corpus], Bad]] = {
    "checkpoint-truncated": lambda c: _checkpoint(
        c, "half.pt", "corrupt or truncated", lambda p: p.write_bytes(c.checkpoint.read_bytes()[:5000])
    ),
    "checkpoint-empty": lambda c: _checkpoint(
        c, "empty.pt", "corrupt or truncated", lambda p: p.write_bytes(b"")
    ),
    "checkpoint-other-architecture": lambda c: _checkpoint(c, "deeper.pt", "do not fit", _other_architecture),
    "checkpoint-not-a-checkpoint": lambda c: _checkpoint(
        c, "other.pt", "not a pe-seg checkpoint", lambda p: torch.save({"epoch": 3, "lr": 0.1}, p)
    ),
    "checkpoint-text-file": lambda c: _checkpoint(
        c, "notes.pt", "corrupt or truncated", lambda p: p.write_text("weights are elsewhere\n" * 20)
    ),
    "checkpoint-missing": lambda c: _checkpoint(c, "absent.pt", "not found", lambda p: None),
}

BAD = {**DICOM, **VOLUMES, **LABELS, **CONFIGS, **CHECKPOINTS}


def test_the_corpus_is_large_enough():
    assert len(BAD) >= 25
    assert {name.split("-")[0] for name in BAD} == {"dicom", "volume", "label", "config", "checkpoint"}


@pytest.fixture
def corpus(tmp_path, series_writer, hu_volume, tiny_checkpoint) -> Corpus:
    return Corpus(tmp_path, series_writer, hu_volume, tiny_checkpoint)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_refused_in_one_line(corpus, pe_seg, name):
    case = BAD[name](corpus)
    result = pe_seg(*case.argv)

    assert result.code == case.code, result.err
    assert "Traceback" not in result.err
    assert len(result.error_lines) == 1, result.err
    line = result.error_lines[0]
    assert line.startswith("error: "), line  # not "internal error"
    assert case.problem in line
    assert str(case.names) in line or case.names.name in line
    assert files_under(corpus.out) == []  # nothing partial, not even a hidden staging file


@pytest.mark.parametrize("name", ["dicom-missing-slice", "volume-nan-voxels", "checkpoint-truncated"])
def test_debug_shows_the_traceback(corpus, pe_seg, name):
    case = BAD[name](corpus)
    result = pe_seg("--debug", *case.argv)
    assert result.code == case.code
    assert "Traceback" in result.err
    assert files_under(corpus.out) == []


@dataclass(frozen=True)
class Odd:
    """A usable-but-odd input: the command must warn (``warning`` in stderr, naming ``names``) and go on."""

    argv: list[object]
    warning: str | None
    names: Path


def _odd_dicom(
    c: Corpus, warning: str | None, action: Callable[[Path], object] = lambda f: None, **kwargs: object
) -> Odd:
    folder = _damage(c, action, **kwargs)
    return Odd(c.infer(folder), warning, folder)


def _with_localizer(c: Corpus) -> Odd:
    study = {"study_instance_uid": "1.2.826.0.1.3680043.8.498.77"}
    c.write_series(c.ct, "study/ct", **study)
    scout = Volume(c.ct.array[:, :, :1], c.ct.affine)
    c.write_series(
        scout,
        "study/scout",
        series_number=9,
        extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
        **study,
    )
    return Odd(c.infer(c.root / "study"), None, c.root / "study")


def _two_series_in_one_folder(c: Corpus) -> Odd:
    """A thin and a thick CT series of one study, their files mixed in one folder: the thin one is read."""
    study = {"study_instance_uid": "1.2.826.0.1.3680043.8.498.78"}
    thin = c.write_series(c.ct, "thin", series_number=2, **study)
    thick = c.write_series(
        Volume(c.ct.array[:, :, ::2], c.ct.affine @ np.diag([1, 1, 2, 1])), "thick", series_number=3, **study
    )
    for path in thick.iterdir():
        path.rename(thin / f"thick_{path.name}")
    return Odd(c.infer(thin), None, thin)


def _junk_beside(folder: Path) -> None:
    """A stray file cut inside its header (a copy interrupted early) next to a whole series."""
    (folder / "IM99999.dcm").write_bytes(_slices(folder)[0].read_bytes()[:400])


def _odd_nifti(c: Corpus, name: str, warning: str, sform: np.ndarray | None, qform: np.ndarray | None) -> Odd:
    path = _nifti_forms(c, name, sform, qform)
    return Odd(c.infer(path), warning, path)


ODD: dict[str, Callable[[Corpus], Odd]] = {
    "dicom-missing-rescale": lambda c: _odd_dicom(
        c,
        "RescaleSlope/RescaleIntercept missing",
        lambda f: set_dicom_tags(f, 0, RescaleSlope=None, RescaleIntercept=None),
    ),
    "dicom-slight-spacing-jitter": lambda c: _odd_dicom(
        c, "slice spacing varies slightly", _each(lambda k: _position(k, dz=0.005))
    ),
    "dicom-signed-16-bit": lambda c: _odd_dicom(c, None, signed=True, rescale_intercept=0.0),
    "dicom-unsigned-12-bits-stored": lambda c: _odd_dicom(
        c, None, _each(lambda k: {"BitsStored": 12, "HighBit": 11}), rescale_intercept=-1024.0
    ),
    "dicom-unreadable-extra-file": lambda c: _odd_dicom(c, "unreadable file(s) ignored", _junk_beside),
    "dicom-derived": lambda c: _odd_dicom(
        c, "DERIVED", extra_tags={"ImageType": ["DERIVED", "SECONDARY", "AXIAL"]}
    ),
    "dicom-localizer-mixed-in": _with_localizer,
    "dicom-two-series-mixed-in-one-folder": _two_series_in_one_folder,
    "volume-4d-one-volume": lambda c: Odd(
        c.infer(c.nifti("one.nii.gz", c.ct.array[..., None])),
        "4D file with one volume",
        c.root / "one.nii.gz",
    ),
    "volume-no-qform-sform": lambda c: _odd_nifti(c, "bare.nii.gz", "no qform/sform", None, None),
    "volume-qform-sform-disagree": lambda c: _odd_nifti(
        c,
        "two.nii.gz",
        "qform and sform disagree",
        make_affine(),
        make_affine(origin_lps=(12.0, -20.0, 30.0)),
    ),
}


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_but_usable_input_warns_and_goes_on(corpus, pe_seg, name):
    case = ODD[name](corpus)
    result = pe_seg(*case.argv)

    assert result.code == 0, result.err
    assert result.error_lines == []
    if case.warning is not None:
        warned = [line for line in result.err.splitlines() if case.warning in line]
        assert warned, result.err
        assert str(case.names) in warned[0] or case.names.name in warned[0]
    (folder,) = corpus.out.iterdir()
    assert {"mask.nii.gz", "report.json"} <= set(files_under(folder))
    assert json.loads((folder / "report.json").read_text())["input"]["shape"] == list(corpus.ct.shape)
