"""pe-seg as a MONAI bundle: the small adapters that let ``python -m monai.bundle`` drive pe-seg's own builders.

The bundle (``bundles/pe_segmentation/``) holds no second implementation: its configs name this package's
functions (``_target_: pe_segmentation....``), which call the library API (:mod:`pe_segmentation.api`) as
``pe-seg`` does. What MONAI's ``ConfigWorkflow`` needs and pe-seg does not already have is here:

* :class:`BundleTrainer` (:mod:`.trainer`): the bundle's ``train#trainer``. Its ``run()`` is
  :func:`pe_segmentation.train` on the cases of ``train#dataset#data``, with ``train#handlers`` attached to the
  trainer; the best weights are then exported into the bundle (:func:`export_weights`, :mod:`.weights`).
* :class:`CaseInferenceEngine` (:mod:`.inference`): the bundle's ``evaluator`` for inference, a MONAI
  ``Evaluator`` whose every iteration is one case of ``pe-seg infer`` (the same predictor and writers), and
  :func:`bundle_predictor`, its ``predictor``: the bundle's weights or an nnU-Net v2 model folder
  (``nnunet_model_dir``), built as ``pe-seg infer`` builds them.
* :class:`EvaluationHandler` (:mod:`.evaluation`): scores the predictions against the cases' labels with
  :func:`pe_segmentation.evaluate`.
* :func:`recipe_config`, :func:`train_transforms` and the case lists :func:`training_cases`,
  :func:`labelled_cases`, :func:`input_cases` (:mod:`.configs`), read when first used so that a bundle parses
  (``ConfigWorkflow.initialize()``, ``check_properties()``) with no data present.
* :func:`check_metadata` (:mod:`.metadata`): ``configs/metadata.json`` against the mandatory fields of the
  MONAI bundle specification.

``models/model.pt`` is a pe-seg checkpoint holding only the network weights and the resolved config they were
trained with (``weights_only``-loadable); ``configs/recipe.yaml`` is that same config as YAML, the recipe that
``configs/train.yaml`` retrains. ``python -m pe_segmentation.bundle export RUN_CHECKPOINT BUNDLE_DIR`` writes both
(:mod:`.cli`; ``scripts/bundle_weights.sh`` / ``make bundle-weights`` trains the demo recipe and calls it).
"""

from __future__ import annotations

from pe_segmentation.bundle.configs import (
    CaseList,
    input_cases,
    labelled_cases,
    recipe_config,
    train_transforms,
    training_cases,
)
from pe_segmentation.bundle.evaluation import EvaluationHandler
from pe_segmentation.bundle.inference import CaseInferenceEngine, bundle_predictor
from pe_segmentation.bundle.metadata import (
    INPUT_TENSOR_FIELDS,
    METADATA_FIELDS,
    OUTPUT_TENSOR_FIELDS,
    check_metadata,
    model_problems,
)
from pe_segmentation.bundle.trainer import BundleTrainer
from pe_segmentation.bundle.weights import export_weights, portable_config

__all__ = [
    "INPUT_TENSOR_FIELDS",
    "METADATA_FIELDS",
    "OUTPUT_TENSOR_FIELDS",
    "BundleTrainer",
    "CaseInferenceEngine",
    "CaseList",
    "EvaluationHandler",
    "bundle_predictor",
    "check_metadata",
    "export_weights",
    "input_cases",
    "labelled_cases",
    "model_problems",
    "portable_config",
    "recipe_config",
    "train_transforms",
    "training_cases",
]
