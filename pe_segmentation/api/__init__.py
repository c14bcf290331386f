"""The library API: the functions that ``pe-seg``, the MONAI bundle and users call.

Each is one job end to end, with the same outputs as its command::

    import pe_segmentation as pe

    pe.synth("data/phantoms", cases=8, seed=0)                       # pe-seg synth
    pe.plan("data/phantoms", "plan", gpu_memory=24)                  # pe-seg plan
    pe.preprocess("configs/unet.yaml", ["data.path=data/phantoms"])   # pe-seg preprocess (optional)
    run = pe.train("configs/unet.yaml", ["data.path=data/phantoms"])  # pe-seg train
    pe.infer("study_dicom/", "predictions/", run.best_checkpoint)     # pe-seg infer
    pe.evaluate("predictions/", "data/phantoms/labels", "evaluation/", prob="predictions/")  # pe-seg evaluate

Errors a user can fix are :class:`~pe_segmentation.errors.PESegError` subclasses with a one-line message and
an exit code of their own.
"""

from __future__ import annotations

from pe_segmentation.api.checkpoints import set_checkpoint_spacing
from pe_segmentation.api.evaluation import evaluate, log_summary
from pe_segmentation.api.inference import InferenceRun, InferenceSettings, infer, inference_settings
from pe_segmentation.api.planning import PlanRun, plan
from pe_segmentation.api.preprocessing import preprocess
from pe_segmentation.api.synthesis import synth
from pe_segmentation.api.training import dataset_overrides, plot_training_run, train, training_config

__all__ = [
    "InferenceRun",
    "InferenceSettings",
    "PlanRun",
    "dataset_overrides",
    "evaluate",
    "infer",
    "inference_settings",
    "log_summary",
    "plan",
    "plot_training_run",
    "preprocess",
    "set_checkpoint_spacing",
    "synth",
    "train",
    "training_config",
]
