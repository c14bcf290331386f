"""nnU-Net v2 models in pe-seg (``pe-seg infer --nnunet``), checked against nnU-Net's own ``nnUNetPredictor``.

Small model folders are written in nnU-Net's formats with random weights (:mod:`nnunet_models`); each test runs
the same folder and the same CT through ``nnUNetPredictor`` (set up with ``manual_initialization``, float32
sliding-window sums: :func:`nnunet_models.float32_sums` says why) and through pe-seg in float32 with the
territory off, and compares the embolus probabilities on the CT's grid. Skips without the ``nnunet`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2.inference.predict_from_raw_data", exc_type=ImportError)
SimpleITK = pytest.importorskip("SimpleITK")

from pe_segmentation.errors import CheckpointError, ConfigError, MemoryBudgetError  # noqa: E402
from pe_segmentation.inference.nnunet import (  # noqa: E402
    NnUNetModelPredictor,
    load_nnunet_model,
    nnunet_steps,
)
from pe_segmentation.inference.nnunet.resampling import resample_data  # noqa: E402
from pe_segmentation.io.dicom_writer import write_dicom_series  # noqa: E402
from pe_segmentation.io.volume import Volume  # noqa: E402

from . import nnunet_models  # noqa: E402

#: The issue's bar for the probabilities (float32, territory and window skipping off).
TOLERANCE = 1e-3


def smooth_ct(shape_zyx: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """int16 HU in SimpleITK's (z, y, x) order (:func:`nnunet_models.ct_like`), with zero rows and planes at
    two edges, so that nnU-Net's crop to non-zero has something to crop."""
    array = nnunet_models.ct_like(shape_zyx, seed)
    array[:, :3, :] = 0
    array[-2:, :, :] = 0
    return array


def write_ct(path: Path, array_zyx: np.ndarray, spacing_xyz: tuple[float, float, float]) -> Path:
    image = SimpleITK.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin((10.0, -20.0, 5.0))
    SimpleITK.WriteImage(image, str(path))
    return path


def reference(folder: Path, folds: tuple[int, ...], mirroring: bool, data: np.ndarray, spacing_zyx: Any):
    """nnUNetPredictor's segmentation and embolus probability, in SimpleITK's (z, y, x) order."""
    predictor = nnunet_models.nnunet_predictor(folder, folds, mirroring)
    with nnunet_models.float32_sums():
        seg, probabilities = predictor.predict_single_npy_array(
            data, {"spacing": list(spacing_zyx)}, None, None, True
        )
    return seg, probabilities[1]


def pe_seg_probability(folder: Path, source: Any, folds: tuple[int, ...], tta: bool) -> np.ndarray:
    """pe-seg's embolus probability on the input grid, transposed to SimpleITK's (z, y, x) order."""
    predictor = NnUNetModelPredictor.from_folder(
        folder, folds=folds, device="cpu", precision="fp32", territory=False, tta=tta, min_volume_mm3=0
    )
    prediction = predictor.predict(source, full_probability=True)
    assert prediction.probability is not None
    return prediction.probability.array.transpose(2, 1, 0)


CASES = {
    # kind, model spacing (plans' order), CT spacing (x, y, z), mirror axes (None: no mirroring), folds,
    # transpose_forward, CT shape (z, y, x)
    "plain-isotropic": ("plain", (1.0, 1.0, 1.0), (0.8, 0.9, 1.3), None, (0,), (0, 1, 2), (30, 44, 50)),
    "resenc-mirroring-2-axes": (
        "resenc",
        (1.0, 1.0, 1.0),
        (0.8, 0.9, 1.3),
        (1, 2),
        (0,),
        (0, 1, 2),
        (24, 40, 40),
    ),
    "plain-anisotropic-2folds": (
        "plain",
        (3.0, 0.8, 0.8),
        (0.7, 0.7, 3.5),
        None,
        (0, 1),
        (0, 1, 2),
        (30, 44, 50),
    ),
    "plain-thick-slices-mirroring": (
        "plain",
        (1.0, 1.0, 1.0),
        (0.6, 0.6, 4.0),
        (0, 1, 2),
        (0,),
        (0, 1, 2),
        (9, 40, 44),
    ),
    "plain-transposed": ("plain", (1.0, 1.2, 0.9), (0.8, 0.9, 1.3), None, (0,), (2, 0, 1), (30, 44, 50)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_probabilities_match_nnunet(tmp_path: Path, case: str) -> None:
    kind, model_spacing, ct_spacing, axes, folds, transpose, shape = CASES[case]
    mirroring = axes is not None
    folder = nnunet_models.write_model(
        tmp_path / "model",
        kind=kind,
        spacing=model_spacing,
        folds=folds,
        transpose=transpose,
        mirror_axes=axes or (0, 1, 2),
    )
    ct = write_ct(tmp_path / "ct.nii.gz", smooth_ct(shape), ct_spacing)
    data, properties = nnunet_models.read_with_nnunet(ct)
    nnunet_models.calibrate(folder, data, properties["spacing"], mirroring=mirroring)
    seg, expected = reference(folder, folds, mirroring, data, properties["spacing"])
    ours = pe_seg_probability(folder, ct, folds, mirroring)
    assert ours.shape == expected.shape == shape
    assert float(np.abs(ours - expected).max()) <= TOLERANCE
    share = float((expected >= 0.5).mean())
    assert 0.02 < share < 0.1, f"the bias should make about 5% embolus, got {share:.3f}"
    assert np.array_equal((ours >= 0.5).astype(np.uint8), seg.astype(np.uint8))


def test_dicom_input_matches_nnunet_on_the_same_series(tmp_path: Path) -> None:
    """A DICOM series: pe-seg reads the folder; nnU-Net gets the series as SimpleITK reads it."""
    folder = nnunet_models.write_model(tmp_path / "model", kind="plain", spacing=(1.0, 1.0, 1.0))
    array_xyz = smooth_ct((24, 40, 44), seed=3).transpose(2, 1, 0)
    affine = np.diag([0.8, 0.9, 1.5, 1.0])
    affine[:3, 3] = (-20.0, -30.0, 100.0)
    write_dicom_series(Volume(array_xyz, affine), tmp_path / "series")
    reader = SimpleITK.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "series")))
    image = reader.Execute()
    data = SimpleITK.GetArrayFromImage(image)[None].astype(np.float32)
    _, expected = reference(folder, (0,), False, data, image.GetSpacing()[::-1])
    ours = pe_seg_probability(folder, tmp_path / "series", (0,), False)
    assert ours.shape == expected.shape
    assert float(np.abs(ours - expected).max()) <= TOLERANCE


def test_cli_writes_every_output_with_the_model_identity(tmp_path: Path, run_infer: Any) -> None:
    folder = nnunet_models.write_model(tmp_path / "model", folds=(0, 1))
    ct = write_ct(tmp_path / "ct.nii.gz", smooth_ct((20, 36, 36)), (0.9, 0.9, 1.2))
    code = run_infer(
        "--nnunet",
        folder,
        "--folds",
        "0",
        "1",
        "-i",
        ct,
        "-o",
        tmp_path / "out",
        "--precision",
        "fp32",
        "--no-territory",
        "--save-probability",
    )
    assert code == 0
    case = tmp_path / "out" / "ct"
    assert {p.name for p in case.iterdir()} >= {
        "mask.nii.gz",
        "report.json",
        "preview.png",
        "probability.nii.gz",
    }
    report = json.loads((case / "report.json").read_text())
    model = report["model"]
    assert model["kind"] == "nnunet"
    assert model["configuration"] == "3d_fullres"
    assert [f["fold"] for f in model["folds"]] == ["0", "1"]
    expected_sha = nnunet_models.sha256(folder / "fold_0" / "checkpoint_final.pth")
    assert model["sha256"] == model["folds"][0]["sha256"] == expected_sha
    assert model["plans_sha256"] == nnunet_models.sha256(folder / "plans.json")
    assert model["label"] == {"name": "pulmonary_embolism", "channel": 1}
    assert report["settings"]["nnunet"]["patch_size"] == [32, 32, 32]
    mask = SimpleITK.ReadImage(str(case / "mask.nii.gz"))
    assert mask.GetSize() == (36, 36, 20)
    assert report["totals"]["clot_count"] >= 1  # the bias makes a few percent of the voxels embolus


def test_steps_are_nnunets() -> None:
    """nnU-Net's own docstring example: 110 voxels, windows of 64, step 0.5: starts 0, 23, 46."""
    assert nnunet_steps([110, 64, 40], [64, 64, 32], 0.5) == [[0, 23, 46], [0], [0, 8]]


def test_unsafe_checkpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = nnunet_models.write_model(tmp_path / "model")
    path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["logging"]["hook"] = nnunet_models.Unsafe()
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as err:
        load_nnunet_model(folder)
    message = str(err.value)
    assert "\n" not in message
    assert "refused by weights_only loading" in message
    assert str(path) in message
    assert not nnunet_models.Unsafe.ran


def test_label_is_found_by_name_or_given(tmp_path: Path) -> None:
    folder = nnunet_models.write_model(tmp_path / "pe", labels={"background": 0, "PE": 1})
    assert load_nnunet_model(folder).label == ("PE", 1)
    other = nnunet_models.write_model(tmp_path / "other", labels={"background": 0, "vessel_defect": 1})
    assert load_nnunet_model(other).label == ("vessel_defect", 1)  # the only foreground label
    assert load_nnunet_model(other, label="vessel_defect").label == ("vessel_defect", 1)
    with pytest.raises(ConfigError, match="--label 'clot' is not among"):
        load_nnunet_model(other, label="clot")
    with pytest.raises(ConfigError, match="background"):
        load_nnunet_model(other, label="background")


def test_plans_may_name_only_network_modules(tmp_path: Path) -> None:
    folder = nnunet_models.write_model(tmp_path / "model")
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["nonlin"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(CheckpointError, match=r"only torch\.nn"):
        load_nnunet_model(folder).build_networks()


def test_territory_skips_windows_and_leaves_zero_outside(tmp_path: Path) -> None:
    """With a territory (here an L in the network grid's first rows), windows tile only its box, the map is a
    probability of about 1e-13 elsewhere, and candidates mostly outside it are dropped and counted."""
    folder = nnunet_models.write_model(tmp_path / "model", spacing=(1.0, 1.0, 1.0))
    ct = write_ct(tmp_path / "ct.nii.gz", smooth_ct((64, 36, 36)), (1.0, 1.0, 1.0))
    predictor = NnUNetModelPredictor.from_folder(folder, device="cpu", precision="fp32", min_volume_mm3=0)

    def slab(quality: Any, volume: Any, affine: Any, shape: tuple[int, int, int]) -> np.ndarray:
        territory = np.zeros(shape, dtype=np.uint8)
        # network axis 0 is the CT's z (no transposition, same spacing, no crop along z); an L in its first
        # rows, so that its box holds voxels outside it
        territory[:10, :18] = 1
        territory[:10, :, :5] = 1
        return territory

    predictor._network_territory = slab  # type: ignore[method-assign]
    prediction = predictor.predict(ct, full_probability=True)
    assert prediction.territory["used"]
    assert prediction.territory["windows_skipped"] > 0
    assert prediction.territory["dropped_clots"] > 0  # 5% positive voxels: candidates lie everywhere
    assert prediction.probability is not None
    z_last = prediction.probability.array.transpose(2, 1, 0)
    assert float(z_last[12:].max()) < 1e-6
    assert float(z_last[:8].max()) > 0.5
    assert 0.5 < prediction.study_score <= 1.0


def test_memory_budget_covers_nnunet_models(tmp_path: Path) -> None:
    folder = nnunet_models.write_model(tmp_path / "model")
    with pytest.raises(MemoryBudgetError, match="too small for this network"):
        NnUNetModelPredictor.from_folder(folder, device="cpu", memory_budget=0.05)


@pytest.mark.parametrize("axis", [None, 0, 2])
def test_axis_by_axis_resampling_is_nnunets(axis: int | None) -> None:
    """pe-seg's separable cubic resampling against nnU-Net's ``resample_data_or_seg`` (scikit-image's resize of
    the whole volume, or per plane with nearest along ``axis``), to float32 rounding."""
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg

    rng = np.random.default_rng(1)
    data = nnunet_models.normalise(nnunet_models.ct_like((20, 26, 31), seed=1))
    data += rng.normal(0, 0.1, data.shape).astype(np.float32)  # some detail between the smooth structures
    for shape in [(27, 19, 40), (12, 26, 50)]:
        expected = resample_data_or_seg(data[None], shape, False, axis, 3, axis is not None, 0)[0]
        ours = resample_data(data, shape, axis)
        assert ours.dtype == np.float32
        assert ours.shape == expected.shape
        assert float(np.abs(ours - expected).max()) < 1e-5
