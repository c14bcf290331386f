"""The MONAI bundle running an nnU-Net v2 model (``nnunet_model_dir``), as ``pe-seg infer --nnunet`` runs it.

The same small model folder (:mod:`nnunet_models`, nnU-Net's formats, two folds of random weights) and CT go
through ``python -m monai.bundle run``'s ConfigWorkflow, through ``pe-seg infer --nnunet`` and through nnU-Net's
own ``nnUNetPredictor``. Skips without the ``nnunet`` extra.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

pytest.importorskip("nnunetv2.inference.predict_from_raw_data", exc_type=ImportError)
SimpleITK = pytest.importorskip("SimpleITK")

from pe_segmentation.errors import CheckpointError, PESegError  # noqa: E402

from . import nnunet_models  # noqa: E402

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "pe_segmentation"
#: The issue's bar for the probabilities against nnU-Net's (float32, territory off).
TOLERANCE = 1e-3


def _workflow(**override: Any) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.yaml"),
        workflow_type="infer",
        bundle_root=str(BUNDLE),
        device="$torch.device('cpu')",
        **override,
    )
    workflow.initialize()
    return workflow


def _write_ct(path: Path) -> Path:
    """A 36 x 36 x 20 CT at 0.9 x 0.9 x 1.2 mm (SimpleITK's (z, y, x) array), zero at two edges."""
    array = nnunet_models.ct_like((20, 36, 36), seed=4)
    array[:, :3, :] = 0
    array[-2:, :, :] = 0
    image = SimpleITK.GetImageFromArray(array)
    image.SetSpacing((0.9, 0.9, 1.2))
    image.SetOrigin((10.0, -20.0, 5.0))
    SimpleITK.WriteImage(image, str(path))
    return path


def _case(folder: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A case folder's probability and mask in SimpleITK's (z, y, x) order, and its report."""
    probability = np.asarray(nib.load(folder / "probability.nii.gz").dataobj).transpose(2, 1, 0)
    mask = np.asarray(nib.load(folder / "mask.nii.gz").dataobj).transpose(2, 1, 0)
    return probability, mask, json.loads((folder / "report.json").read_text(encoding="utf-8"))


def _pe_seg_error(err: BaseException) -> PESegError:
    """The pe-seg error under MONAI's "Failed to instantiate" wrapper."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, PESegError):
        cause = cause.__cause__
    assert cause is not None, f"no pe-seg error under {err!r}"
    return cause


def test_bundle_runs_the_nnunet_model_as_pe_seg_infer_does(tmp_path: Path, run_infer: Any) -> None:
    folder = nnunet_models.write_model(tmp_path / "model", folds=(0, 1))
    ct = _write_ct(tmp_path / "ct.nii.gz")
    # fold 1 alone: the two folds' average (the default) would not match the reference below
    workflow = _workflow(
        dataset_dir=str(ct),
        output_dir=str(tmp_path / "bundle"),
        nnunet_model_dir=str(folder),
        nnunet_folds=[1],
        precision="fp32",
        territory=False,
        save_probability=True,
    )
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()
    assert workflow.evaluator.state.output["ok"]
    flags = ("--precision", "fp32", "--no-territory", "--save-probability")
    assert run_infer("--nnunet", folder, "--folds", "1", "-i", ct, "-o", tmp_path / "cli", *flags) == 0

    probability, mask, report = _case(tmp_path / "bundle" / "ct")
    cli_probability, cli_mask, cli_report = _case(tmp_path / "cli" / "ct")
    # nnU-Net's own prediction with fold 1, independently of pe-seg
    data, properties = nnunet_models.read_with_nnunet(ct)
    predictor = nnunet_models.nnunet_predictor(folder, (1,), mirroring=False)
    with nnunet_models.float32_sums():
        _, expected = predictor.predict_single_npy_array(
            data, {"spacing": properties["spacing"]}, None, None, True
        )
    assert probability.shape == expected[1].shape == (20, 36, 36)
    assert float(np.abs(probability - expected[1]).max()) <= TOLERANCE
    assert 0.01 < float((probability >= 0.5).mean()) < 0.2  # the bias makes a few percent embolus
    assert np.array_equal(probability, cli_probability)
    assert np.array_equal(mask, cli_mask)
    assert mask.sum() > 0
    for key in ("clots", "totals", "model", "settings"):
        assert report[key] == cli_report[key], key
    # the report names the nnU-Net model, not the bundle's weights
    model = report["model"]
    assert model["kind"] == "nnunet"
    assert model["plans_sha256"] == nnunet_models.sha256(folder / "plans.json")
    assert [fold["fold"] for fold in model["folds"]] == ["1"]
    assert model["sha256"] == nnunet_models.sha256(folder / "fold_1" / "checkpoint_final.pth")
    assert report["settings"]["nnunet"]["folds"] == ["1"]
    assert report["settings"]["min_peak"] == 0.0  # an nnU-Net model's own, not the bundle weights' 0.99


def test_bundle_says_in_one_line_what_is_wrong_with_the_nnunet_model(tmp_path: Path, monkeypatch) -> None:
    ct = _write_ct(tmp_path / "ct.nii.gz")
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    workflow = _workflow(
        dataset_dir=str(ct), output_dir=str(tmp_path / "out"), nnunet_model_dir=str(not_a_model)
    )
    with pytest.raises(RuntimeError, match="Failed to instantiate") as raised:
        workflow.run()
    error = _pe_seg_error(raised.value)
    assert isinstance(error, CheckpointError)
    assert str(error) == f"{not_a_model}: not an nnU-Net model folder (no plans.json)"

    # a real model folder, but without the nnunet extra's dynamic_network_architectures
    folder = nnunet_models.write_model(tmp_path / "model")
    for name in [name for name in sys.modules if name.startswith("dynamic_network_architectures")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "dynamic_network_architectures", None)
    workflow = _workflow(dataset_dir=str(ct), output_dir=str(tmp_path / "out"), nnunet_model_dir=str(folder))
    with pytest.raises(RuntimeError, match="Failed to instantiate") as raised:
        workflow.run()
    error = _pe_seg_error(raised.value)
    assert isinstance(error, CheckpointError)
    assert "\n" not in str(error)
    assert "dynamic_network_architectures is not installed; install pe-seg's nnunet extra" in str(error)
    assert not (tmp_path / "out").exists()
