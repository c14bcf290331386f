"""pe-seg: pulmonary-embolism segmentation on CT pulmonary angiography, built on MONAI.

The library API (:mod:`pe_segmentation.api`): one function per job, with the outputs of its ``pe-seg``
command::

    import pe_segmentation as pe

    pe.synth("data/phantoms", cases=8, seed=0)
    pe.plan("data/phantoms", "plan", gpu_memory=24)  # fingerprint and plan.yaml
    run = pe.train("configs/unet.yaml", ["data.path=data/phantoms"])
    pe.infer("study_dicom/", "predictions/", run.best_checkpoint)
    pe.evaluate("predictions/", "data/phantoms/labels", "evaluation/", prob="predictions/")

The layers below it, and what lives where: docs/architecture.md.
"""

from __future__ import annotations

from pe_segmentation.api import evaluate, infer, plan, synth, train
from pe_segmentation.versions import __version__

__all__ = ["__version__", "evaluate", "infer", "plan", "synth", "train"]
