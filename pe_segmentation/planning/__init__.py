"""Planning a training recipe from the data: a data set's fingerprint, and nnU-Net's rules applied to it.

``pe-seg plan`` (:func:`pe_segmentation.api.plan`) reads every case once (:func:`fingerprint_dataset`: spacings,
shapes, body boxes, the HU inside the labels, the emboli and their sizes, anything odd), then applies the plan
rules (:func:`make_plan`: target spacing, CT normalisation, patch and batch for a GPU's memory or the CPU,
network depth and width, deep supervision) and writes the recipe (:func:`recipe_yaml`) that ``pe-seg train``
takes, with a figure of the fingerprint (:func:`draw_fingerprint`).

Modules: :mod:`~pe_segmentation.planning.fingerprint`, :mod:`~pe_segmentation.planning.rules`,
:mod:`~pe_segmentation.planning.memory` (the traced memory estimate), :mod:`~pe_segmentation.planning.recipe`
and :mod:`~pe_segmentation.planning.figure`. How the rules compare with nnU-Net's: docs/planning.md.
"""

from __future__ import annotations

from pe_segmentation.planning.figure import draw_fingerprint
from pe_segmentation.planning.fingerprint import (
    CaseFingerprint,
    DatasetFingerprint,
    ForegroundIntensities,
    Oddity,
    fingerprint_dataset,
)
from pe_segmentation.planning.memory import NetworkMemory, network_memory, saved_activation_bytes
from pe_segmentation.planning.recipe import Plan, make_plan, recipe_yaml
from pe_segmentation.planning.rules import Hardware, PatchPlan, network_params, plan_patch

__all__ = [
    "CaseFingerprint",
    "DatasetFingerprint",
    "ForegroundIntensities",
    "Hardware",
    "NetworkMemory",
    "Oddity",
    "PatchPlan",
    "Plan",
    "draw_fingerprint",
    "fingerprint_dataset",
    "make_plan",
    "network_memory",
    "network_params",
    "plan_patch",
    "recipe_yaml",
    "saved_activation_bytes",
]
