"""What a pe-seg MONAI bundle folder says about prediction: its weights and the settings of its
``configs/inference.yaml``, read without loading the weights (``pe-seg infer --bundle``, :func:`pe_segmentation.infer`).

The bundle's own adapters live in :mod:`pe_segmentation.bundle`; this module only reads a bundle folder, so
that the library API below the bundle layer can take one.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from pe_segmentation.errors import CheckpointError, ConfigError
from pe_segmentation.inference.predictor import Predictor

#: Where a bundle keeps its weights, their recipe and its configs, relative to the bundle root.
MODEL_FILE = "models/model.pt"
RECIPE_FILE = "configs/recipe.yaml"
INFERENCE_CONFIG = "configs/inference.yaml"
METADATA_FILE = "configs/metadata.json"
#: The predictor's arguments that say how to read an nnU-Net model folder (``nnunet_model_dir``), and the
#: keyword of :meth:`~pe_segmentation.inference.nnunet.NnUNetModelPredictor.from_folder` each one is.
NNUNET_ARGUMENTS = {"nnunet_folds": "folds", "nnunet_label": "label", "nnunet_checkpoint": "checkpoint"}


def as_flag(value: Any, name: str) -> bool:
    """A yes/no setting given in a config or on the command line, where ``--flag false`` arrives as the string
    ``"false"`` (which ``bool()`` would take for true).

    Raises:
        ConfigError: anything but a bool, 0/1 or true/false/yes/no/on/off.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def predictor_options() -> tuple[str, ...]:
    """The keyword options of :class:`~pe_segmentation.inference.predictor.Predictor` a bundle may set."""
    parameters = inspect.signature(Predictor.__init__).parameters.values()
    return tuple(
        p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in ("progress", "model_info")
    )


@dataclass(frozen=True)
class BundleInference:
    """What a bundle's ``configs/inference.yaml`` says about prediction.

    Attributes:
        root: the bundle folder.
        checkpoint: its weights (``ckpt_path``), or the nnU-Net model folder ``nnunet_model_dir`` names.
        precision: the predictor's precision.
        options: keyword options of the predictor it sets (``None`` values: the model's own default).
        outputs: ``save_probability``, ``dicom_seg`` and ``preview`` of its evaluator.
        nnunet: with ``nnunet_model_dir``, how to read that folder (``folds``, ``label``, ``checkpoint``); else
            ``None``.
    """

    root: Path
    checkpoint: Path
    precision: str
    options: dict[str, Any]
    outputs: dict[str, bool]
    nnunet: dict[str, Any] | None = None


def read_bundle_inference(bundle_dir: str | os.PathLike[str]) -> BundleInference:
    """Read the weights and inference settings of a bundle (its ``configs/inference.yaml``, resolved with
    ``bundle_root`` set to ``bundle_dir``), without loading the weights. Where it sets ``nnunet_model_dir``, the
    weights are that nnU-Net v2 model folder (read when the predictor is built).

    Raises:
        ConfigError: not a bundle folder, or settings that cannot be resolved.
        CheckpointError: the weights file is missing.
    """
    root = Path(bundle_dir).expanduser().resolve()
    path = root / INFERENCE_CONFIG
    if not path.is_file():
        raise ConfigError(f"{root}: not a pe-seg bundle folder (no {INFERENCE_CONFIG})")
    parser = ConfigParser()
    parser.read_config(str(path))
    parser["bundle_root"] = str(root)
    try:
        checkpoint = Path(parser.get_parsed_content("ckpt_path"))
        predictor = parser["predictor"]
        model_dir = (
            parser.get_parsed_content("predictor#nnunet_model_dir")
            if "nnunet_model_dir" in predictor
            else None
        )
        nnunet = None
        if model_dir:
            checkpoint = Path(str(model_dir)).expanduser()
            nnunet = {
                keyword: parser.get_parsed_content(f"predictor#{key}")
                for key, keyword in NNUNET_ARGUMENTS.items()
                if key in predictor
            }
        options = {
            key: parser.get_parsed_content(f"predictor#{key}")
            for key in predictor_options()
            if key in predictor
        }
        precision = (
            str(parser.get_parsed_content("predictor#precision")) if "precision" in predictor else "auto"
        )
        evaluator = parser["evaluator"]
        outputs = {
            key: as_flag(parser.get_parsed_content(f"evaluator#{key}"), key) if key in evaluator else default
            for key, default in (("save_probability", False), ("dicom_seg", True), ("preview", True))
        }
    except (KeyError, ValueError, TypeError, AttributeError, SyntaxError, NameError) as err:
        raise ConfigError(
            f"{path}: cannot resolve the inference settings ({type(err).__name__}: {err})"
        ) from None
    if nnunet is None and not checkpoint.is_file():
        raise CheckpointError(
            f"{checkpoint}: the bundle's weights are missing (build them with `make bundle-weights`)"
        )
    return BundleInference(root, checkpoint, precision, options, outputs, nnunet)
