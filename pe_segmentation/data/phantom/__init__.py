"""Synthetic CT pulmonary angiography phantoms with pulmonary emboli, for demos, tests and training checks.

Real CTPA with embolus masks is private, so pe-seg makes its own data. A phantom is a chest in HU: air,
fat (about -100), muscle and soft tissue (30-60), ribs, sternum and spine (300 to over 1000), lungs with texture
(about -850), heart and aorta, and a branching contrast-filled pulmonary artery tree (300-450 HU, trunk radius
about 14 mm down to about 2 mm) holding emboli: filling defects of 30-80 HU, partial (wall-adherent) or
occlusive, with a partial-volume blur and Gaussian noise on top, stored as int16 HU.

Two profiles: ``uniform`` (the library default) keeps one fixed grid and look; ``clinical`` (``pe-seg synth``'s
default) draws per case a scanner (grid, slice thickness, kernel, noise, contrast timing, dense SVC contrast
with streaks, lower-lobe motion; :mod:`.scanner`) and PE mimics labelled 0 (dark pulmonary veins, mixing
artefacts, hilar lymph nodes, mucus-filled bronchi; :mod:`.mimics`). Normal scans without emboli come from
``generate_dataset(..., negative_fraction=...)``.

Emboli follow FUMPE's 35 expert masks (:mod:`.fumpe_figures`): per case the emboli of one of its patients with
volumes jittered (1-15 per case, median 2; about 65% central/lobar > 500 mm^3, 25% segmental 50-500 mm^3, 10%
small < 50 mm^3), large ones as casts along the branches, some saddle emboli (details in
:mod:`pe_segmentation.data.phantom.emboli`; the realised figures beside FUMPE's: :mod:`.calibration`). Labels: 0 background,
1 embolus, optionally 2 patent artery. Everything is in millimetres, so anatomy and volumes do not depend on the
voxel size, and a seed reproduces a case exactly.

Typical use::

    from pe_segmentation.data.phantom import PhantomSettings, generate_phantom, generate_dataset

    phantom = generate_phantom(PhantomSettings.for_field((96, 96, 80)), rng=0)
    summary = generate_dataset("data/synth", cases=8, seed=0)
    print(format_summary(summary))
"""

from __future__ import annotations

from pe_segmentation.data.phantom.anatomy import Tissue
from pe_segmentation.data.phantom.dataset import (
    DATALIST_NAME,
    FORMATS,
    CaseRecord,
    DatasetSummary,
    format_summary,
    generate_dataset,
    is_negative,
    summarize_emboli,
)
from pe_segmentation.data.phantom.emboli import EmbolusInfo
from pe_segmentation.data.phantom.generator import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    LABEL_EMBOLUS,
    LABEL_NAMES,
    LABEL_VEIN,
    LABEL_VESSEL,
    Phantom,
    PhantomSettings,
    case_seed,
    generate_phantom,
)
from pe_segmentation.data.phantom.mimics import MIMIC_KINDS, MimicInfo
from pe_segmentation.data.phantom.scanner import CLINICAL, PROFILES, ScannerDraw, ScannerProfile, draw_scanner

__all__ = [
    "CLINICAL",
    "DATALIST_NAME",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "FORMATS",
    "LABEL_EMBOLUS",
    "LABEL_NAMES",
    "LABEL_VEIN",
    "LABEL_VESSEL",
    "MIMIC_KINDS",
    "PROFILES",
    "CaseRecord",
    "DatasetSummary",
    "EmbolusInfo",
    "MimicInfo",
    "Phantom",
    "PhantomSettings",
    "ScannerDraw",
    "ScannerProfile",
    "Tissue",
    "case_seed",
    "draw_scanner",
    "format_summary",
    "generate_dataset",
    "generate_phantom",
    "is_negative",
    "summarize_emboli",
]
