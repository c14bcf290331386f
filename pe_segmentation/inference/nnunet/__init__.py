"""nnU-Net v2 models in pe-seg: ``pe-seg infer --nnunet MODEL_DIR``.

An nnU-Net v2 trained-model folder (``plans.json``, ``dataset.json``, ``fold_N/checkpoint_final.pth``) is read
safely (:func:`load_nnunet_model`: ``weights_only`` checkpoints, the network built from the plans with
``dynamic_network_architectures``) and run by :class:`NnUNetModelPredictor`, pe-seg's predictor with nnU-Net's
preprocessing, windows, mirroring and resampling. Needs pe-seg's ``nnunet`` extra (docs/inference.md,
"nnU-Net models").
"""

from __future__ import annotations

from pe_segmentation.inference.nnunet.folder import (
    CHECKPOINT_NAMES,
    NnUNetFold,
    NnUNetModel,
    load_nnunet_model,
)
from pe_segmentation.inference.nnunet.network import build_network, load_trainer_checkpoint
from pe_segmentation.inference.nnunet.predictor import NnUNetModelPredictor, nnunet_config
from pe_segmentation.inference.nnunet.preprocessing import NnUNetInput, NnUNetPlan, preprocess_nnunet
from pe_segmentation.inference.nnunet.windows import (
    FoldEnsemble,
    nnunet_gaussian,
    nnunet_steps,
    nnunet_tiling,
)

__all__ = [
    "CHECKPOINT_NAMES",
    "FoldEnsemble",
    "NnUNetFold",
    "NnUNetInput",
    "NnUNetModel",
    "NnUNetModelPredictor",
    "NnUNetPlan",
    "build_network",
    "load_nnunet_model",
    "load_trainer_checkpoint",
    "nnunet_config",
    "nnunet_gaussian",
    "nnunet_steps",
    "nnunet_tiling",
    "preprocess_nnunet",
]
