"""Small nnU-Net v2 trained-model folders for tests and benchmarks, in nnU-Net's own formats.

``plans.json`` and ``dataset.json`` follow nnU-Net v2.8's layout (read by nnU-Net's own ``PlansManager``); each
``fold_N/checkpoint_final.pth`` is what ``nnUNetTrainer.save_checkpoint`` writes: the network's state dict,
an optimizer state, the trainer's logging (NumPy scalars), ``_best_ema``, ``init_args`` (with a
``torch.device``), the trainer name and the mirroring axes. The network is built by nnU-Net's own
``get_network_from_plans`` with random weights; the final layer's bias is set so that about ``positive`` of the
voxels of a typical input come out embolus, so that masks are not empty.

Needs ``nnunetv2`` (pe-seg's ``nnunet`` extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

CT_PROPERTIES = {
    "max": 1500.0,
    "mean": 47.0,
    "median": 45.0,
    "min": -1024.0,
    "percentile_00_5": -195.0,
    "percentile_99_5": 305.0,
    "std": 92.0,
}

NETWORKS = {
    "plain": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "resenc": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
}


def architecture(kind: str, stages: int, features: int) -> dict[str, Any]:
    """The plans' ``architecture`` entry of a ``plain`` or ``resenc`` (residual-encoder) U-Net."""
    kwargs: dict[str, Any] = {
        "n_stages": stages,
        "features_per_stage": [min(features * 2**s, 320) for s in range(stages)],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * stages,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
        "n_conv_per_stage_decoder": [1] * (stages - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if kind == "resenc":
        kwargs["n_blocks_per_stage"] = [1] + [2] * (stages - 1)
    else:
        kwargs["n_conv_per_stage"] = [2] * stages
    return {
        "network_class_name": NETWORKS[kind],
        "arch_kwargs": kwargs,
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def plans(
    kind: str = "plain",
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    patch: tuple[int, int, int] = (32, 32, 32),
    stages: int = 3,
    features: int = 8,
    transpose: tuple[int, int, int] = (0, 1, 2),
) -> dict[str, Any]:
    """An nnU-Net v2 ``plans.json`` with one 3d_fullres configuration (spacing and patch in transposed order)."""
    backward = [int(i) for i in np.argsort(transpose)]
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset901_TinyPE",
        "plans_name": "nnUNetResEncUNetMPlans" if kind == "resenc" else "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(transpose),
        "transpose_backward": backward,
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch),
                "median_image_size_in_voxels": [64, 64, 64],
                "spacing": list(spacing),
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
                "architecture": architecture(kind, stages, features),
                "batch_dice": True,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(CT_PROPERTIES)},
    }


def dataset(labels: dict[str, int] | None = None) -> dict[str, Any]:
    """An nnU-Net v2 ``dataset.json`` of one CT channel."""
    return {
        "channel_names": {"0": "CT"},
        "labels": labels or {"background": 0, "pulmonary_embolism": 1},
        "numTraining": 10,
        "file_ending": ".nii.gz",
    }


def trainer_checkpoint(
    network: torch.nn.Module,
    plans_json: dict[str, Any],
    fold: int,
    dataset_json: dict[str, Any],
    mirror_axes: tuple[int, ...],
) -> dict[str, Any]:
    """What ``nnUNetTrainer.save_checkpoint`` writes after one epoch."""
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    logging = {
        "mean_fg_dice": [np.float64(0.31)],
        "ema_fg_dice": [np.float64(0.031)],
        "dice_per_class_or_region": [[np.float64(0.31)]],
        "train_losses": [np.float32(-0.12)],
        "val_losses": [np.float32(-0.08)],
        "lrs": [0.01],
        "epoch_start_timestamps": [time.time() - 60.0],
        "epoch_end_timestamps": [time.time()],
    }
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": logging,
        "_best_ema": np.float64(0.031),
        "current_epoch": 1,
        "init_args": {
            "plans": plans_json,
            "configuration": "3d_fullres",
            "fold": fold,
            "dataset_json": dataset_json,
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": mirror_axes,
    }


def build_network(plans_json: dict[str, Any], dataset_json: dict[str, Any], seed: int) -> torch.nn.Module:
    """nnU-Net's own network of the plans, randomly initialised as nnU-Net initialises it."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans_json["configurations"]["3d_fullres"]["architecture"]
    torch.manual_seed(seed)
    return get_network_from_plans(
        arch["network_class_name"],
        arch["arch_kwargs"],
        arch["_kw_requires_import"],
        len(dataset_json["channel_names"]),
        len(dataset_json["labels"]),
        allow_init=True,
        deep_supervision=True,
    )


def ct_like(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """int16 HU of smooth structure around 100 HU (the tests' CTs)."""
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.normal(0, 1, shape), 2) * 800 + 100).astype(np.int16)


def normalise(hu: np.ndarray) -> np.ndarray:
    """nnU-Net's CT normalisation with :data:`CT_PROPERTIES`."""
    low, high = CT_PROPERTIES["percentile_00_5"], CT_PROPERTIES["percentile_99_5"]
    return (
        (np.clip(hu.astype(np.float32), low, high) - CT_PROPERTIES["mean"]) / CT_PROPERTIES["std"]
    ).astype(np.float32)


def set_positive_share(
    network: torch.nn.Module, patch: tuple[int, ...], positive: float, seed: int, hu: np.ndarray | None = None
) -> None:
    """Shift the final layer's bias so that about ``positive`` of the voxels come out embolus (channel 1) on
    ``hu`` (a CT, at most a few windows big; default: :func:`ct_like` of one window) after CT normalisation."""
    sample = ct_like(tuple(2 * p for p in patch), seed) if hu is None else hu
    x = torch.from_numpy(normalise(sample))[None, None]
    network.eval()
    with torch.no_grad():
        out = network(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        log_odds = (out[0, 1] - out[0, 0]).flatten()
        cut = torch.quantile(log_odds, 1.0 - positive)
        final = network.decoder.seg_layers[-1]
        final.bias[1] -= cut


def write_model(
    folder: Path,
    kind: str = "plain",
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    patch: tuple[int, int, int] = (32, 32, 32),
    folds: tuple[int, ...] = (0,),
    mirror_axes: tuple[int, ...] = (0, 1, 2),
    positive: float = 0.05,
    stages: int = 3,
    features: int = 8,
    transpose: tuple[int, int, int] = (0, 1, 2),
    labels: dict[str, int] | None = None,
) -> Path:
    """Write an nnU-Net v2 trained-model folder with random weights into ``folder``; return ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    plans_json = plans(kind, spacing, patch, stages, features, transpose)
    dataset_json = dataset(labels)
    (folder / "plans.json").write_text(json.dumps(plans_json, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    for fold in folds:
        network = build_network(plans_json, dataset_json, seed=100 + fold)
        set_positive_share(network, patch, positive, seed=fold)
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        checkpoint = trainer_checkpoint(network, plans_json, fold, dataset_json, mirror_axes)
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def nnunet_predictor(folder: Path, folds: tuple[int, ...], mirroring: bool) -> Any:
    """nnU-Net's own ``nnUNetPredictor`` on the folder, set up with ``manual_initialization`` (no trainer-class
    search), on the CPU in float32, as a reference."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_json = json.loads((folder / "plans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    manager = PlansManager(plans_json)
    configuration = manager.get_configuration("3d_fullres")
    parameters, axes = [], None
    for fold in folds:
        checkpoint = torch.load(folder / f"fold_{fold}" / "checkpoint_final.pth", weights_only=False)
        parameters.append(checkpoint["network_weights"])
        axes = checkpoint["inference_allowed_mirroring_axes"]
    network = get_network_from_plans(
        configuration.network_arch_class_name,
        configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import,
        len(dataset_json["channel_names"]),
        len(dataset_json["labels"]),
        allow_init=False,
        deep_supervision=False,
    )
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=mirroring,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        network, manager, configuration, parameters, dataset_json, "nnUNetTrainer", axes
    )
    return predictor


class _Float32Torch:
    """``torch`` with ``torch.half`` meaning float32 (see :func:`float32_sums`)."""

    half = torch.float32

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


@contextlib.contextmanager
def float32_sums() -> Iterator[None]:
    """nnU-Net's predictor with its sliding-window sums in float32 instead of float16.

    nnUNetPredictor 2.8 adds the Gaussian-weighted logits and the weights in float16 (``torch.half``). Near a
    window's corners the Gaussian (nnU-Net's, scaled to a maximum of 10) falls below float16's smallest
    normal number, so at the image's edges, where only such weights add up, its quotient is off by up to about
    1 in the logits (0.1 in probability on the tests' models). pe-seg sums in float32; so does this reference.
    """
    import nnunetv2.inference.predict_from_raw_data as module

    module.torch = _Float32Torch()  # type: ignore[assignment]
    try:
        yield
    finally:
        module.torch = torch


def read_with_nnunet(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """A CT file as nnU-Net's ``SimpleITKIO`` reads it: ``(1, z, y, x)`` and its properties."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    return SimpleITKIO().read_images([str(path)])


def sha256(path: Path) -> str:
    """SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mark_ran() -> None:
    Unsafe.ran = True


class Unsafe:
    """An object whose unpickling would run code (it only sets :attr:`ran`)."""

    ran = False

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_mark_ran, ())


def calibrate(
    folder: Path, data: np.ndarray, spacing_zyx: Any, positive: float = 0.05, mirroring: bool = False
) -> float:
    """Shift every fold's final-layer embolus bias so that ``positive`` of this input's voxels come out embolus
    in nnU-Net's prediction (with or without mirroring); returns the shift.

    Exact, not a search: a constant added to the embolus logit of every window passes unchanged through the
    Gaussian blending, the fold and mirror averages and the linear resampling back, so the embolus log-odds on
    the CT's grid moves by that constant.
    """
    paths = sorted(folder.glob("fold_*/checkpoint_final.pth"))
    folds = tuple(int(p.parent.name[len("fold_") :]) for p in paths)
    predictor = nnunet_predictor(folder, folds, mirroring)
    with float32_sums():
        _, probabilities = predictor.predict_single_npy_array(
            data, {"spacing": list(spacing_zyx)}, None, None, True
        )
    p = np.clip(probabilities[1].astype(np.float64), 1e-12, 1 - 1e-12)
    shift = float(np.quantile(np.log(p) - np.log1p(-p), 1.0 - positive))
    for path in paths:
        checkpoint = torch.load(path, weights_only=False)
        weights = checkpoint["network_weights"]
        key = max(
            (k for k in weights if k.startswith("decoder.seg_layers.") and k.endswith(".bias")),
            key=lambda k: int(k.split(".")[2]),
        )
        weights[key][1] -= shift
        torch.save(checkpoint, path)
    return shift


def recalibrate(folder: Path, hu: np.ndarray, patch: tuple[int, ...], positive: float = 0.05) -> None:
    """:func:`set_positive_share` on ``hu`` (a crop of a CT in the plans' axis order, about one window) for every
    fold of a written folder (cheaper than :func:`calibrate` on a whole large CT, and approximate)."""
    plans_json = json.loads((folder / "plans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    for path in sorted(folder.glob("fold_*/checkpoint_final.pth")):
        checkpoint = torch.load(path, weights_only=False)
        network = build_network(plans_json, dataset_json, seed=0)
        network.load_state_dict(checkpoint["network_weights"])
        set_positive_share(network, patch, positive, seed=0, hu=hu)
        checkpoint["network_weights"] = network.state_dict()
        torch.save(checkpoint, path)
