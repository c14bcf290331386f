"""Answers a radiologist can trust, with the shipped bundle model on phantoms: no clots where no lungs are, a
refusal under ``--qc strict``, the quality checks in ``pe-seg info``, and the same clots whatever the input's
spacing (the model always runs at the spacing it was trained at)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pe_segmentation.cli import main as pe_seg
from pe_segmentation.data.phantom import Phantom, PhantomSettings, Tissue, generate_phantom
from pe_segmentation.errors import EXIT_INPUT
from pe_segmentation.inference.predictor import Predictor
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import write_volume

BUNDLE_MODEL = Path(__file__).resolve().parents[2] / "bundles" / "pe_segmentation" / "models" / "model.pt"
#: The demo's phantoms, which the bundle model was trained on: 160 x 160 x 128 voxels at 2.24 x 2.24 x 2.5 mm.
TRAINING_SHAPE = (160, 160, 128)
SEED = 4242  # a seed no recipe was tuned on


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(BUNDLE_MODEL, device="cpu")


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return generate_phantom(PhantomSettings.for_field(shape=TRAINING_SHAPE), SEED)


def _lungs_as_soft_tissue(phantom: Phantom) -> Volume:
    """The phantom with its lungs and airways filled with 45 +- 15 HU soft tissue: no lungs in view."""
    array = phantom.image.array.copy()
    where = np.isin(phantom.tissues, [Tissue.LUNG, Tissue.AIRWAY])
    array[where] = np.rint(np.random.default_rng(0).normal(45.0, 15.0, np.count_nonzero(where)))
    return Volume(array, phantom.image.affine)


def _soft_tissue_block(phantom: Phantom) -> Volume:
    """A block of 45 +- 15 HU soft tissue in air, the size of a trunk: the scan of no chest at all."""
    array = np.full(phantom.image.shape, -1000, np.int16)
    body = (slice(20, 140), slice(30, 130), slice(None))
    array[body] = np.rint(np.random.default_rng(1).normal(45.0, 15.0, array[body].shape))
    return Volume(array, phantom.image.affine)


@pytest.mark.parametrize("make", [_lungs_as_soft_tissue, _soft_tissue_block], ids=["no lungs", "no chest"])
def test_a_scan_without_lungs_gets_no_clot_and_a_failed_lung_check(predictor, phantom, make):
    scan = make(phantom)
    prediction = predictor.predict(scan)
    assert prediction.quality is not None
    assert prediction.quality.check("lungs").verdict == "fail"
    assert "no lungs" in prediction.quality.check("lungs").reason
    assert prediction.roi is None
    assert not prediction.mask.array.any()
    assert prediction.territory["windows_run"] == 0  # and no window was run at all
    # the same model without the territory runs every window (on the chest without lungs it reports clots,
    # in its mediastinum and chest wall: the checks are what stops them)
    unconfined = Predictor.from_checkpoint(BUNDLE_MODEL, device="cpu", territory=False).predict(scan)
    if make is _lungs_as_soft_tissue:
        assert unconfined.mask.array.any()
    assert unconfined.territory["windows_skipped"] == 0
    assert prediction.territory["windows_skipped"] == unconfined.territory["windows_run"] > 0


def test_qc_strict_refuses_a_scan_without_lungs_in_one_line(phantom, tmp_path, capsys):
    source = tmp_path / "abdomen.nii.gz"
    write_volume(_lungs_as_soft_tissue(phantom), source)
    output = tmp_path / "out"
    args = [
        "infer",
        "-i",
        str(source),
        "-o",
        str(output),
        "--checkpoint",
        str(BUNDLE_MODEL),
        "--device",
        "cpu",
    ]
    assert pe_seg([*args, "--qc", "strict"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "abdomen.nii.gz" in err
    assert "not a usable CTPA" in err
    assert "no lungs in view" in err
    assert "Traceback" not in err
    assert not (output / "abdomen").exists()  # nothing half-written
    # the default mode writes the case, with the failed checks in its report and on the console
    assert pe_seg(args) == 0
    assert "its findings are unreliable" in capsys.readouterr().err
    assert (output / "abdomen" / "report.json").is_file()


def test_info_shows_the_scan_quality_checks(phantom, tmp_path, capsys):
    source = tmp_path / "ctpa.nii.gz"
    write_volume(phantom.image, source)
    assert pe_seg(["info", "-i", str(source)]) == 0
    out = capsys.readouterr().out
    assert "scan quality: PASS" in out
    for name in ("chest", "lungs", "contrast", "slice_spacing"):
        assert f"  {name}: pass - " in out


def test_a_finer_input_runs_on_the_models_own_grid(predictor, phantom):
    # the same chest sampled at 1.6 x 1.6 x 2.0 mm: the model resamples it to its own 2.24 x 2.24 x 2.5 mm, so
    # the network sees the grid it sees for the input at the training spacing, and answers on the input's grid
    fine = generate_phantom(PhantomSettings.for_field(shape=(224, 224, 160)), SEED)
    coarse_run = predictor.predict(phantom.image)
    fine_run = predictor.predict(fine.image)
    assert fine_run.details["spacing_mm"] == pytest.approx([2.24, 2.24, 2.5])
    # the body crop is found on each input's own grid, so the network grids may differ by a voxel either side
    assert (
        np.abs(np.subtract(fine_run.details["network_grid"], coarse_run.details["network_grid"])).max() <= 2
    )
    assert fine_run.mask.shape == fine.image.shape
    assert fine_run.quality is not None
    assert fine_run.quality.verdict == "pass"
    assert fine_run.quality.check("slice_spacing").value == pytest.approx(2.0)
    # the windows tile only the territory's box: fewer than over the whole grid, none without territory
    assert fine_run.territory["windows_run"] > 0
    assert fine_run.territory["windows_skipped"] > 0
