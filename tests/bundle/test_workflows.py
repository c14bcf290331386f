"""The bundle's configs run through MONAI's ConfigWorkflow (what `python -m monai.bundle run` does) on tiny
phantoms, with pe-seg's own trainer and predictor underneath."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from pe_segmentation.api import inference_settings
from pe_segmentation.bundle import BundleTrainer, CaseInferenceEngine, bundle_predictor
from pe_segmentation.cli import main as pe_seg
from pe_segmentation.config import load_config
from pe_segmentation.errors import CheckpointError, ConfigError, PESegError
from pe_segmentation.inference import read_bundle_inference
from pe_segmentation.inference.predictor import Predictor
from pe_segmentation.runtime.checkpoint import load_checkpoint

from .conftest import BUNDLE


def _workflow(bundle: Path, kind: str, *configs: str, **override) -> ConfigWorkflow:
    files = [str(bundle / "configs" / name) for name in configs]
    return ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        workflow_type=kind,
        bundle_root=str(bundle),
        **override,
    )


@pytest.mark.slow
def test_train_workflow_trains_with_pe_seg_and_exports_the_weights(bundle_copy, phantoms, tmp_path):
    run_dir = tmp_path / "run"
    workflow = _workflow(
        bundle_copy,
        "train",
        "train.yaml",
        dataset_dir=str(phantoms),
        output_dir=str(run_dir),
        max_epochs=1,
        progress=False,
        # a MONAI handler given the MONAI way: it must land on pe-seg's SupervisedTrainer
        **{
            "train#handlers": [
                {"_target_": "MetricLogger", "loss_transform": "$lambda output: output['loss'].item()"}
            ]
        },
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert isinstance(workflow.trainer, BundleTrainer)
    assert workflow.max_epochs == 1  # the MONAI property, through to the run's training.epochs
    assert len(workflow.train_dataset.data) == 3
    result = workflow.run()[0]
    workflow.finalize()

    # pe-seg's SupervisedTrainer ran one epoch (2 training phantoms x 2 patches / batch 2), with the user's handler
    assert result.epochs_run == 1
    assert result.iterations == 2
    losses = [loss for _, loss in workflow.train_handlers[0].loss]
    assert len(losses) == 2
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert float(rows[0]["train_loss"]) == pytest.approx(np.mean(losses), rel=1e-4)
    assert [r["epoch"] for r in rows] == ["1"]
    assert rows[0]["val_dice"] != ""
    assert json.loads((run_dir / "datalist.json").read_text())["training"] == workflow.train_dataset.data
    assert len(json.loads((run_dir / "split.json").read_text())["validation"]) == 1

    # the best weights replaced the bundle's, with the recipe (layout of the data set, no machine paths)
    exported = load_checkpoint(bundle_copy / "models" / "model.pt")
    best = load_checkpoint(result.best_checkpoint)
    assert exported["kind"] == "bundle"
    assert exported["trainer"]["epoch"] == 1
    assert all(torch.equal(exported["model"][k], best["model"][k]) for k in best["model"])
    recipe = load_config(bundle_copy / "configs" / "recipe.yaml")
    assert recipe.to_dict() == exported["config"]
    assert {k: recipe.model.params[k] for k in ("base_channels", "depth")} == {"base_channels": 4, "depth": 2}
    assert (recipe.data.dataset, recipe.data.path, recipe.training.epochs) == ("synthetic", None, 1)
    # the tiny recipe's spacing is null: the run trained at its phantoms' own grid, 48 x 48 x 40 voxels over the
    # phantoms' 358.4 x 358.4 x 320 mm, i.e. 7.4667 x 7.4667 x 8 mm (rounded to 0.1 um by pe-seg synth), recorded in the weights and the recipe
    assert recipe.preprocessing.spacing == (7.4667, 7.4667, 8.0)
    assert exported["spacing"] == {"mm": [7.4667, 7.4667, 8.0], "source": "training-set median rule"}
    assert best["config"]["preprocessing"]["spacing"] == [7.4667, 7.4667, 8.0]
    Predictor.from_checkpoint(bundle_copy / "models" / "model.pt", device="cpu")  # ready for inference


def test_trainer_refuses_a_transform_other_than_the_config_chain(bundle_copy, phantoms, tmp_path):
    workflow = _workflow(
        bundle_copy,
        "train",
        "train.yaml",
        dataset_dir=str(phantoms),
        output_dir=str(tmp_path / "run"),
        **{"train#preprocessing": "$monai.transforms.Compose([])"},
    )
    workflow.initialize()
    with pytest.raises(ConfigError, match="train#dataset#transform"):
        workflow.trainer.cases()


def _prediction(folder: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    probability = np.asarray(nib.load(folder / "probability.nii.gz").dataobj)
    mask = nib.load(folder / "mask.nii.gz")
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return probability, np.asarray(mask.dataobj), {**report, "affine": mask.affine.tolist()}


def _plain_probability(image: Path, output: Path, *flags: str) -> np.ndarray:
    """The probability map of ``pe-seg infer`` with the bundle's checkpoint (not its settings) on ``image``."""
    checkpoint = str(BUNDLE / "models" / "model.pt")
    args = [
        "infer",
        "--checkpoint",
        checkpoint,
        "--input",
        str(image),
        "--output",
        str(output),
        "--device",
        "cpu",
    ]
    assert pe_seg([*args, "--save-probability", *flags]) == 0
    return _prediction(output / image.name.removesuffix(".nii.gz"))[0]


def test_inference_workflow_writes_what_pe_seg_infer_writes(phantoms, tmp_path):
    image = phantoms / "images" / "phantom_001.nii.gz"
    # the plain CLI with the bundle's checkpoint first: its probability map gives a threshold that leaves a few
    # clots whatever the weights (briefly trained demo weights may find none at 0.5)
    plain_probability = _plain_probability(image, tmp_path / "plain")
    threshold = float(np.quantile(plain_probability, 0.999))
    assert 0.0 < threshold < 1.0

    workflow = _workflow(
        BUNDLE,
        "infer",
        "inference.yaml",
        dataset_dir=str(image),
        output_dir=str(tmp_path / "bundle"),
        save_probability=True,
        threshold=threshold,
        min_peak=0.0,  # every clot at the threshold, as the plain checkpoint keeps them
        device="$torch.device('cpu')",
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert isinstance(workflow.evaluator, CaseInferenceEngine)
    workflow.run()
    workflow.finalize()
    assert workflow.evaluator.state.output["name"] == "phantom_001"
    assert workflow.evaluator.state.output["ok"]
    # the same input through the CLI with the bundle's weights and settings
    assert (
        pe_seg(
            [
                "infer",
                "--bundle",
                str(BUNDLE),
                "--input",
                str(image),
                "--output",
                str(tmp_path / "cli"),
                "--device",
                "cpu",
                "--save-probability",
                "--threshold",
                repr(threshold),
                "--min-peak",
                "0",
            ]
        )
        == 0
    )

    probability, mask, report = _prediction(tmp_path / "bundle" / "phantom_001")
    source = nib.load(image)
    assert mask.shape == source.shape
    assert np.allclose(report["affine"], source.affine, atol=1e-4)
    assert probability.max() > probability.min()  # a real prediction, not a constant map
    # the plain checkpoint at the same threshold gives the same map (candidates dropped outside the territory
    # are zero in it, so the map depends on the threshold)
    assert np.array_equal(
        probability, _plain_probability(image, tmp_path / "plain_at", "--threshold", repr(threshold))
    )
    assert mask.sum() > 0
    assert report["totals"]["clot_count"] == len(report["clots"]) > 0
    assert np.array_equal(mask, probability >= threshold)
    cli_probability, cli_mask, cli_report = _prediction(tmp_path / "cli" / "phantom_001")
    assert np.array_equal(probability, cli_probability)
    assert np.array_equal(mask, cli_mask)
    for key in ("clots", "totals", "model", "settings", "affine"):
        assert report[key] == cli_report[key], key
    assert report["settings"]["threshold"] == threshold
    assert report["model"]["kind"] == "bundle"
    assert len(report["model"]["sha256"]) == 64


def test_evaluate_workflow_scores_the_predictions(phantoms, tmp_path):
    workflow = _workflow(
        BUNDLE,
        "eval",
        "inference.yaml",
        "evaluate.yaml",
        dataset_dir=str(phantoms),
        output_dir=str(tmp_path / "predictions"),
        evaluation_dir=str(tmp_path / "evaluation"),
        bootstrap_resamples=20,
        device="$torch.device('cpu')",
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert [item["label"] for item in workflow.dataset.data] == sorted(
        str(p) for p in (phantoms / "labels").glob("*.nii.gz")
    )
    workflow.run()
    metrics = workflow.evaluator.state.metrics
    summary = json.loads((tmp_path / "evaluation" / "summary.json").read_text())
    rows = list(csv.DictReader((tmp_path / "evaluation" / "per_case.csv").open()))
    assert [r["case"] for r in rows] == ["phantom_000", "phantom_001", "phantom_002"]
    assert metrics["dice"] == pytest.approx(summary["voxel"]["dice"]["mean"], abs=1e-6)  # summary: 6 decimals
    assert metrics["dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]), abs=1e-6)
    assert 0.0 <= metrics["embolus_sensitivity"] <= 1.0
    assert metrics["fp_per_scan"] >= 0
    assert (tmp_path / "evaluation" / "froc.csv").is_file()  # probability maps were written for FROC
    assert (tmp_path / "predictions" / "phantom_002" / "probability.nii.gz").is_file()


def test_bundle_settings_reach_pe_seg_infer(bundle_copy):
    config = bundle_copy / "configs" / "inference.yaml"
    text = config.read_text(encoding="utf-8")
    text = text.replace("threshold: null", "threshold: 0.3").replace("tta: false", "tta: true")
    config.write_text(text.replace("preview: true", "preview: false"), encoding="utf-8")
    settings = read_bundle_inference(bundle_copy)
    assert settings.checkpoint == (bundle_copy / "models" / "model.pt").resolve()
    assert settings.options["threshold"] == 0.3
    assert settings.options["tta"] is True
    assert settings.options["overlap"] is None  # null: the model's own inference.overlap
    assert settings.outputs == {"save_probability": False, "dicom_seg": True, "preview": False}


def test_bundle_nnunet_model_reaches_pe_seg_infer(bundle_copy, tmp_path):
    """A bundle whose inference.yaml names an nnU-Net model: `pe-seg infer --bundle` runs that model, with the
    nnU-Net model's own min_peak (the bundle weights' 0.99 does not apply), and needs no models/model.pt.
    (tests/inference/test_nnunet_bundle.py runs such a bundle.)"""
    config = bundle_copy / "configs" / "inference.yaml"
    text = config.read_text(encoding="utf-8")
    text = text.replace("nnunet_model_dir: null", f"nnunet_model_dir: {tmp_path / 'nnunet'}")
    config.write_text(text.replace("nnunet_label: null", "nnunet_label: PE"), encoding="utf-8")
    (bundle_copy / "models" / "model.pt").unlink()
    found = read_bundle_inference(bundle_copy)
    assert found.checkpoint == tmp_path / "nnunet"
    assert found.nnunet == {"folds": None, "label": "PE", "checkpoint": "final"}
    assert found.options["min_peak"] is None
    settings = inference_settings(bundle=bundle_copy, tta=True)
    assert (settings.checkpoint, settings.nnunet) == (tmp_path / "nnunet", found.nnunet)
    assert settings.predictor == {
        "tta": True,
        "channels_last": True,
        "territory": True,
        "qc": "report",
        "fast": False,
    }
    assert settings.spec().nnunet == found.nnunet


def test_bundle_nnunet_options_need_the_model_folder():
    with pytest.raises(ConfigError, match=r"^nnunet_folds and nnunet_label apply to an nnU-Net model folder"):
        bundle_predictor(BUNDLE / "models" / "model.pt", "cpu", nnunet_folds=[0])


def test_pe_seg_infer_bundle_errors(tmp_path, bundle_copy, capsys):
    with pytest.raises(SystemExit) as exit_info:  # neither --checkpoint nor --bundle: a usage error
        pe_seg(["infer", "--input", "x.nii.gz", "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    assert pe_seg(["infer", "--bundle", str(tmp_path), "--input", "x.nii.gz", "--output", str(tmp_path)]) == 4
    assert "not a pe-seg bundle folder" in capsys.readouterr().err
    (bundle_copy / "models" / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="make bundle-weights"):
        read_bundle_inference(bundle_copy)


@pytest.mark.parametrize(
    ("kind", "configs"),
    [
        ("infer", ("inference.yaml",)),
        ("infer", ("inference.yaml", "evaluate.yaml")),
        ("train", ("train.yaml",)),
        ("train", ("train.yaml", "multi_gpu_train.yaml")),
    ],
)
def test_every_config_parses_and_checks_with_no_data(kind, configs, tmp_path):
    """MONAI Label, the model zoo's CI and other tools parse a bundle before any data exists: initialize() and
    check_properties() (which builds the dataset, network, inferer and engines) must pass with the default
    dataset_dir missing, and a run must then say in one line that the data is missing."""
    missing = tmp_path / "no_data_here"
    workflow = _workflow(BUNDLE, kind, *configs, dataset_dir=str(missing), output_dir=str(tmp_path / "out"))
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.dataset_dir == str(missing)
    data = (workflow.dataset if kind == "infer" else workflow.train_dataset).data
    assert "not yet read" in repr(data)  # nothing was looked up while parsing
    with pytest.raises(PESegError, match="no_data_here"):
        len(data)
    assert not (tmp_path / "out").exists()
    workflow.finalize()
