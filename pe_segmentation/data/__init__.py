"""Training and validation data: case lists, splits, settings, MONAI transform chains and cached datasets.

From a data set on disk to batches::

    from pe_segmentation.data import build_dataset, build_train_transforms, from_synthetic, get_or_create_split

    items = from_synthetic("data/synth")  # [{"case", "patient", "image", "label"}, ...]
    split = get_or_create_split("runs/x/split.json", items, val_fraction=0.2, seed=0)
    train_items, val_items = split.select(items)
    dataset = build_dataset(train_items, build_train_transforms(), cache="memory")

Modules: :mod:`~pe_segmentation.data.datasets` (layouts to case lists, cached datasets),
:mod:`~pe_segmentation.data.case_items` (the case dicts), :mod:`~pe_segmentation.data.splits`
(patient-level splits), :mod:`~pe_segmentation.data.settings` (preprocessing, patch and augmentation
settings, on :mod:`~pe_segmentation.data.settings_base`; the CT normalisation in
:mod:`~pe_segmentation.data.normalization`), :mod:`~pe_segmentation.data.transforms` (the chains),
:mod:`~pe_segmentation.data.sampling` (patch sampling), :mod:`~pe_segmentation.data.augmentation`, :mod:`~pe_segmentation.data.label_values`
(the label check) and :mod:`~pe_segmentation.data.embolus_sizes` (size classes). Synthetic phantoms are in
:mod:`pe_segmentation.data.phantom`.
"""

from __future__ import annotations

from pe_segmentation.data.datasets import (
    LABEL_SUFFIXES,
    build_dataset,
    from_cadpe,
    from_datalist,
    from_folder,
    from_fumpe,
    from_synthetic,
)
from pe_segmentation.data.embolus_sizes import CLASS_DEFINITIONS, SIZE_CLASSES, size_class
from pe_segmentation.data.label_values import CheckLabelValuesd, integer_label_values
from pe_segmentation.data.normalization import NORMALIZATION_SCHEMES, NormalizationSettings
from pe_segmentation.data.settings import AugmentationSettings, PatchSettings, PreprocessingSettings
from pe_segmentation.data.settings_base import SettingsSection
from pe_segmentation.data.splits import Split, get_or_create_split, load_split, save_split, split_cases
from pe_segmentation.data.transforms import (
    build_inference_transforms,
    build_inverse,
    build_preprocessing,
    build_train_transforms,
    build_val_transforms,
    fingerprint_hash,
)

__all__ = [
    "CLASS_DEFINITIONS",
    "LABEL_SUFFIXES",
    "NORMALIZATION_SCHEMES",
    "SIZE_CLASSES",
    "AugmentationSettings",
    "CheckLabelValuesd",
    "NormalizationSettings",
    "PatchSettings",
    "PreprocessingSettings",
    "SettingsSection",
    "Split",
    "build_dataset",
    "build_inference_transforms",
    "build_inverse",
    "build_preprocessing",
    "build_train_transforms",
    "build_val_transforms",
    "fingerprint_hash",
    "from_cadpe",
    "from_datalist",
    "from_folder",
    "from_fumpe",
    "from_synthetic",
    "get_or_create_split",
    "integer_label_values",
    "load_split",
    "save_split",
    "size_class",
    "split_cases",
]
