"""Dataset adapters: every supported layout becomes one list of case dicts, then one MONAI dataset.

Each adapter returns ``[{"case": str, "patient": str, "image": str, "label": str}, ...]`` with absolute paths,
sorted by case id, every path checked to exist (:class:`~pe_segmentation.errors.InputDataError` names the
first missing one). ``image`` is a volume file or a DICOM series folder; ``label`` a volume file. The patient
id defaults to the case id (FUMPE and CAD-PE hold one study per patient); splits
(:mod:`pe_segmentation.data.splits`) keep all cases of a patient on one side.

Layouts:

* :func:`from_datalist`: an MSD-style JSON (``{"training": [{"image": ..., "label": ...}], ...}``), paths
  relative to the JSON's folder. :func:`from_synthetic` reads the phantom generator's ``datalist.json``.
* :func:`from_folder`: ``images/`` and ``labels/`` folders matched by case name.
* :func:`from_fumpe`: FUMPE (DICOM folders + MATLAB masks, or the seed project's NIfTI masks), masks converted
  once to NIfTI on the series' grid in a cache folder.
* :func:`from_cadpe`: CAD-PE (``.nrrd`` CT + ``RefStd.nrrd`` labels).

:func:`build_dataset` wraps the list with no cache, an in-memory cache or a disk cache.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.data import CacheDataset, Dataset, PersistentDataset

from pe_segmentation.data.case_items import (
    CaseItem,
    case_item,
    input_name,
    listing,
    sorted_unique,
    strip_suffix,
)
from pe_segmentation.data.transforms import CACHE_READ_ONLY_ATTR, fingerprint_hash
from pe_segmentation.errors import ConfigError, InputDataError
from pe_segmentation.io.fumpe import fumpe_mask_files, read_fumpe_label
from pe_segmentation.io.loader import load_volume
from pe_segmentation.io.volume_files import is_volume_file, write_volume

log = logging.getLogger(__name__)

CACHE_MODES = ("none", "memory", "disk")

#: Name endings dropped from label file names to find their case (``case_001_seg.nii.gz`` -> ``case_001``).
LABEL_SUFFIXES = (
    "_label",
    "_labels",
    "_seg",
    "_segmentation",
    "_mask",
    "_gt",
    "-label",
    "-seg",
    "-mask",
    "RefStd",
)
#: Name endings dropped from image names (nnU-Net's channel suffix ``_0000`` and common tags).
IMAGE_SUFFIXES = ("_0000", "_image", "_img", "_ct", "-image", "-ct")


# -------------------------------------------------------------------------------------------------- datalist


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise InputDataError(f"{path}: datalist not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputDataError(f"{path}: not a readable JSON datalist ({err})") from err


def _datalist_path(value: Any, base: Path, json_path: Path, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise InputDataError(f"{json_path}: '{key}' must be one path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def from_datalist(
    json_path: str | os.PathLike[str],
    section: str = "training",
    image_key: str = "image",
    label_key: str = "label",
    require_label: bool = True,
) -> list[CaseItem]:
    """Cases of one section of an MSD-style datalist JSON.

    Entries are dicts (``image``, ``label``, optional ``case`` and ``patient``) or, as in MSD ``test``
    sections, bare image paths. Relative paths are relative to the JSON's folder. A top-level list is read
    as the entries themselves. Without a ``case`` entry the case id is the image's name without suffix.

    Args:
        json_path: the datalist.
        section: the top-level key to read (``training``, ``validation``, ``test``, ...).
        image_key: the entry key holding the image path (e.g. ``dicom`` to read the phantoms' DICOM series).
        label_key: the entry key holding the label path.
        require_label: refuse entries without a label (``False`` for inference lists; they get no ``label``).

    Raises:
        InputDataError: unreadable JSON, missing section or key, missing file, duplicate case id.
    """
    json_path = Path(json_path).expanduser().resolve()
    data = _load_json(json_path)
    if isinstance(data, Mapping):
        if section not in data:
            raise InputDataError(
                f"{json_path}: no '{section}' section (found: {', '.join(map(str, data)) or 'none'})"
            )
        entries = data[section]
    else:
        entries = data
    if not isinstance(entries, list):
        raise InputDataError(
            f"{json_path}: '{section}' must be a list of cases, got {type(entries).__name__}"
        )
    base = json_path.parent
    items = []
    for index, entry in enumerate(entries):
        entry = {image_key: entry} if isinstance(entry, str) else entry
        if not isinstance(entry, Mapping) or image_key not in entry:
            raise InputDataError(f"{json_path}: {section}[{index}] has no '{image_key}' path")
        image = _datalist_path(entry[image_key], base, json_path, image_key)
        label = None
        if label_key in entry:
            label = _datalist_path(entry[label_key], base, json_path, label_key)
        elif require_label:
            raise InputDataError(f"{json_path}: {section}[{index}] has no '{label_key}' path")
        case = str(entry.get("case") or input_name(image))
        patient = entry.get("patient")
        items.append(case_item(case, image, label, None if patient is None else str(patient)))
    if not items:
        raise InputDataError(f"{json_path}: section '{section}' lists no cases")
    return sorted_unique(items, json_path)


def from_synthetic(directory: str | os.PathLike[str], image_key: str = "image") -> list[CaseItem]:
    """Cases of a phantom set written by ``pe-seg synth`` (its ``datalist.json``, ``training`` section).

    Args:
        directory: the phantom folder.
        image_key: ``image`` for the NIfTI volumes, ``dicom`` for the same CTs as DICOM series.
    """
    return from_datalist(Path(directory) / "datalist.json", "training", image_key=image_key)


# ---------------------------------------------------------------------------------------------------- folder


def _folder_entries(folder: Path, what: str, allow_dirs: bool) -> list[Path]:
    if not folder.is_dir():
        raise InputDataError(f"{folder}: {what} folder not found")
    entries = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if is_volume_file(path) or (allow_dirs and path.is_dir()):
            entries.append(path)
    if not entries:
        kinds = "volume files or DICOM folders" if allow_dirs else "volume files"
        raise InputDataError(f"{folder}: no {kinds} in the {what} folder")
    return entries


def _by_case(paths: list[Path], suffixes: Sequence[str], folder: Path) -> dict[str, Path]:
    cases: dict[str, Path] = {}
    for path in paths:
        case = strip_suffix(input_name(path), suffixes)
        if case in cases:
            raise InputDataError(f"{folder}: {cases[case].name} and {path.name} both belong to case '{case}'")
        cases[case] = path
    return cases


def from_folder(images_dir: str | os.PathLike[str], labels_dir: str | os.PathLike[str]) -> list[CaseItem]:
    """Cases of an images folder and a labels folder, matched by case name.

    Images are volume files (NIfTI, NRRD, MHA) or DICOM series folders; labels are volume files. A case
    name is the file name without its extension and without one of the usual tags: ``_0000``, ``_image``,
    ``_ct`` for images, ``_label``, ``_seg``, ``_mask``, ``_gt``, ``RefStd`` for labels (so
    ``images/pe01_0000.nii.gz`` pairs with ``labels/pe01_seg.nii.gz``). Hidden and other files are ignored.

    Raises:
        InputDataError: a folder is missing or empty, two files claim one case, or some images and labels have
            no partner (all of them listed in one line).
    """
    images_dir, labels_dir = Path(images_dir).expanduser(), Path(labels_dir).expanduser()
    images = _by_case(_folder_entries(images_dir, "images", allow_dirs=True), IMAGE_SUFFIXES, images_dir)
    labels = _by_case(_folder_entries(labels_dir, "labels", allow_dirs=False), LABEL_SUFFIXES, labels_dir)
    lonely_images = sorted(images[c].name for c in images.keys() - labels.keys())
    lonely_labels = sorted(labels[c].name for c in labels.keys() - images.keys())
    if lonely_images or lonely_labels:
        parts = []
        if lonely_images:
            parts.append(
                f"{len(lonely_images)} image(s) without a label in {labels_dir}: {listing(lonely_images)}"
            )
        if lonely_labels:
            parts.append(
                f"{len(lonely_labels)} label(s) without an image in {images_dir}: {listing(lonely_labels)}"
            )
        raise InputDataError("; ".join(parts))
    items = [case_item(case, images[case], labels[case]) for case in images]
    return sorted_unique(items, images_dir)


# --------------------------------------------------------------------------------------- FUMPE and CAD-PE


def _dataset_folders(root: Path, dataset: str, first: str, second: str) -> tuple[Path, Path]:
    """``root/first`` and ``root/second``, the two sub-folders a public data set is distributed with."""
    folders = (root / first, root / second)
    for folder in folders:
        if not folder.is_dir():
            raise InputDataError(f"{folder}: {dataset} folder not found (expected {first}/ and {second}/)")
    return folders


def _refuse_unpaired(folder: Path, what: str, names: Sequence[str]) -> None:
    """Refuse a data set whose cases lack their ``what`` in ``folder``; ``names`` are the missing files."""
    if names:
        raise InputDataError(f"{folder}: no {what} for {listing(names)}")


#: FUMPE sub-folders, the first of each found: DICOM series, one folder per patient (FUMPE's ``CT_scans/``;
#: ``image/`` or ``images/`` beside the seed project's masks), and one mask per patient (FUMPE's
#: ``GroundTruth/PAT001.mat``; the seed project's ``label/PAT001.nii.gz``).
FUMPE_SCANS = ("CT_scans", "image", "images")
FUMPE_MASKS = ("GroundTruth", "label")


def _first_folder(root: Path, dataset: str, names: Sequence[str]) -> Path:
    """``root/name`` for the first of ``names`` that is a folder."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise InputDataError(
        f"{root}: {dataset} folder not found (expected {' or '.join(name + '/' for name in names)})"
    )


def _fumpe_label(series_dir: Path, mask_path: Path, cache_dir: Path) -> Path:
    """The patient's mask as NIfTI on its series' grid, converted unless a newer conversion is cached."""
    target = cache_dir / f"{series_dir.name}_label.nii.gz"
    if target.is_file():
        newest_source = max(mask_path.stat().st_mtime_ns, series_dir.stat().st_mtime_ns)
        if target.stat().st_mtime_ns >= newest_source:
            return target
    log.info("FUMPE: converting %s to %s", mask_path, target)
    reference = load_volume(series_dir)  # the grid the mask must match, as PESegReader reads the series
    write_volume(read_fumpe_label(mask_path, reference), target)
    return target


def from_fumpe(root: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> list[CaseItem]:
    """Cases of the FUMPE data set; masks are converted once into NIfTI files aligned with the DICOM series.

    Two layouts are read: the one FUMPE is distributed with, and the seed project's::

        root/CT_scans/PAT001/*.dcm      one folder per patient holding its CTPA series (any file names;
                                        sub-folders are searched); or root/image/PAT001/
        root/GroundTruth/PAT001.mat     MATLAB mask, variable ``Mask`` (rows x columns x slices), v5 or v7.3,
                                        slices in InstanceNumber order
        root/label/PAT001.nii.gz        or the seed project's NIfTI mask: columns x rows x slices, slices in
                                        the order of the series' file names (reversed to fit the series,
                                        with a warning, where the names run against slice position)

    MONAI's ``LoadImaged`` reads each key on its own, so the label must be a file on the image's grid: each
    mask is converted to ``cache_dir/PAT001_label.nii.gz`` (on the grid the DICOM reader gives the series)
    and reused while it is newer than both the mask and the series folder. See :mod:`pe_segmentation.io.fumpe`.

    Args:
        root: the FUMPE folder (the seed project's ``FUM_PE_data``).
        cache_dir: where converted masks are kept (created).

    Raises:
        InputDataError: missing folders, a series without a mask or a mask without a series, a patient with
            two masks, a mask that does not fit its series.
    """
    root = Path(root).expanduser()
    scans_dir = _first_folder(root, "FUMPE series", FUMPE_SCANS)
    masks_dir = _first_folder(root, "FUMPE mask", FUMPE_MASKS)
    series = {p.name: p for p in sorted(scans_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    masks = fumpe_mask_files(masks_dir)
    if not series:
        raise InputDataError(f"{scans_dir}: no patient folders")
    _refuse_unpaired(masks_dir, "mask", sorted(series.keys() - masks.keys()))
    _refuse_unpaired(
        scans_dir, "series folder", [masks[n].name for n in sorted(masks.keys() - series.keys())]
    )
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    items = [
        case_item(case, folder, _fumpe_label(folder, masks[case], cache)) for case, folder in series.items()
    ]
    return sorted_unique(items, root)


#: CAD-PE sub-folders: CT volumes and reference-standard embolus labels.
CADPE_IMAGES = "images"
CADPE_LABELS = "rs"
CADPE_LABEL_SUFFIX = "RefStd.nrrd"


def from_cadpe(root: str | os.PathLike[str]) -> list[CaseItem]:
    """Cases of the CAD-PE data set.

    Layout assumed (as distributed)::

        root/images/<id>.nrrd           CTPA volume in HU
        root/rs/<id>RefStd.nrrd         reference-standard embolus label (values > 0 are emboli; they are
                                        binarised by the preprocessing)

    Raises:
        InputDataError: missing folders, a CT without its ``RefStd`` label or a label without its CT.
    """
    root = Path(root).expanduser()
    images_dir, labels_dir = _dataset_folders(root, "CAD-PE", CADPE_IMAGES, CADPE_LABELS)
    images = {
        p.name[: -len(".nrrd")]: p for p in sorted(images_dir.glob("*.nrrd")) if not p.name.startswith(".")
    }
    labels = {
        p.name[: -len(CADPE_LABEL_SUFFIX)]: p for p in sorted(labels_dir.glob(f"*{CADPE_LABEL_SUFFIX}"))
    }
    if not images:
        raise InputDataError(f"{images_dir}: no .nrrd volumes")
    _refuse_unpaired(
        labels_dir, "label", [f"{c}{CADPE_LABEL_SUFFIX}" for c in sorted(images.keys() - labels.keys())]
    )
    _refuse_unpaired(images_dir, "CT", [labels[c].name for c in sorted(labels.keys() - images.keys())])
    return sorted_unique([case_item(case, images[case], labels[case]) for case in images], root)


# ---------------------------------------------------------------------------------------------------- caching


def _transform_hash(fingerprint: str, _transforms: Any) -> bytes:
    """``hash_transform`` of ``PersistentDataset``: the chain's settings fingerprint, not its class names."""
    return fingerprint.encode("utf-8")


def build_dataset(
    items: Sequence[Mapping[str, Any]],
    transforms: Callable[..., Any],
    cache: str = "none",
    cache_dir: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    cache_rate: float = 1.0,
    progress: bool = False,
) -> Dataset:
    """A MONAI dataset over ``items``, caching the deterministic part of ``transforms`` as asked.

    Args:
        items: case dicts from one of the adapters.
        transforms: the chain (from :mod:`pe_segmentation.data.transforms`).
        cache: ``none`` (read and preprocess every time), ``memory`` (``CacheDataset``: preprocessed volumes
            kept in RAM, fastest, needs memory for the whole set) or ``disk`` (``PersistentDataset``:
            preprocessed volumes saved under ``cache_dir``, keyed by the item paths and the preprocessing
            settings; delete the folder when the files themselves change).
        cache_dir: folder of the disk cache (required for ``disk``).
        num_workers: threads filling the memory cache (0: one).
        cache_rate: fraction of the items the memory cache holds.
        progress: show a progress bar while the memory cache fills.

    Raises:
        ConfigError: unknown cache mode, ``disk`` without ``cache_dir``, bad numbers.
    """
    if cache not in CACHE_MODES:
        raise ConfigError(f"cache: unknown mode '{cache}' (choose one of {', '.join(CACHE_MODES)})")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers: expected an integer >= 0, got {num_workers!r}")
    if not 0.0 <= cache_rate <= 1.0:
        raise ConfigError(f"cache_rate: must be within [0, 1], got {cache_rate!r}")
    data = list(items)
    if cache == "none":
        return Dataset(data, transforms)
    if cache == "memory":
        return CacheDataset(
            data,
            transforms,
            cache_rate=cache_rate,
            num_workers=max(1, num_workers),
            progress=progress,
            copy_cache=not getattr(transforms, CACHE_READ_ONLY_ATTR, False),
        )
    if cache_dir is None:
        raise ConfigError("cache: 'disk' needs a cache_dir")
    cache_path = Path(cache_dir).expanduser()
    try:
        cache_path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cache_dir: cannot create {cache_path} ({err.strerror or err})") from err
    hasher = functools.partial(_transform_hash, fingerprint_hash(transforms))
    return PersistentDataset(data, transforms, cache_dir=cache_path, hash_transform=hasher)
