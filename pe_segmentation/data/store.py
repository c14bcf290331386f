"""The preprocessed store: every case preprocessed once, kept on disk, and read back a patch at a time.

Training on hundreds of full-size CTPAs cannot keep them in memory (a 512 x 512 x 300 scan is 315 MB as
float32), nor decode and resample each one every epoch (about 20 s per case here). The store runs the geometric
part of the one preprocessing chain (:func:`~pe_segmentation.data.transforms.build_geometry_transforms`:
reorientation, body crop, resampling) once per case and keeps the result; training then reads only the patch it
samples, and applies the intensity step and the augmentation to that patch
(:mod:`pe_segmentation.data.store_dataset`).

Layout::

    <store_dir>/<16 hex digits>/                one folder per geometry chain: the SHA-256 of its fingerprint
        store.json                              the fingerprint in words, the format version
        <case>-<10 hex digits>/                 one folder per case (its id and the hash of its input paths)
            image.npy                           the image in HU, (C, X, Y, Z), float16 (float32 if out of range)
            label_indices.npy                   sorted raveled (X, Y, Z) indices of the label's non-zero voxels
            label_values.npy                    the label's values there (float32)
            case.json                           shape, affine, input files (size, mtime), preprocessing seconds

Why this format (measured on a 512 x 512 x 300 phantom at 0.7 mm, 346 x 254 x 210 voxels once cropped and
resampled to 1 mm; docs/training.md has the table): a float16 NumPy file read through a memory map gives a
random 64^3 patch in 0.15 ms. blosc2 (zstd, 64^3 chunks) stores the image 1.7 times smaller (noisy CT
compresses little) but reads a patch in 2 ms, and brings ten dependencies; HDF5 chunks (gzip or lzf, through
h5py) read a patch in 12-30 ms. Uncompressed arrays read by memory map need no decoder, are readable by any
NumPy, and their pages are only mapped for the length of one read, so a reader's memory does not grow with the
data set. The label is kept sparse: emboli are a few thousand voxels of tens of millions, and their indices
are also what positive patch sampling draws from.

Why HU, not windowed values: the window is pointwise, so applying it to a patch equals cutting the patch from
a windowed volume; keeping HU lets the same store serve HU-space domain randomisation and any window without
being rebuilt. float16 keeps HU within 0.5 HU below 1024 HU and 2 HU below 4096 HU (CT noise is 10-40 HU).

Each case folder is written under a temporary name and renamed when whole
(:func:`~pe_segmentation.io.atomic.atomic_output_folder`): a crash leaves no half-written case, and processes
that share the store (DDP ranks, several nodes on a shared file system) can write cases side by side. A case
is rewritten when its input files change (size or modification time); a change of the geometry settings
gives another store folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from tqdm import tqdm

from pe_segmentation.data.transforms import FINGERPRINT_ATTR
from pe_segmentation.errors import InputDataError
from pe_segmentation.io.atomic import atomic_output_folder, atomic_write_text, remove_stale_folders

log = logging.getLogger(__name__)

#: Version of the layout above; part of every store folder's name.
STORE_VERSION = 1
IMAGE_FILE = "image.npy"
LABEL_INDICES_FILE = "label_indices.npy"
LABEL_VALUES_FILE = "label_values.npy"
CASE_FILE = "case.json"
STORE_FILE = "store.json"
#: Temporary case folders untouched this long are left by a killed writer and removed.
STALE_WRITE_S = 3600.0
#: The largest magnitude float16 holds; images beyond it are kept as float32.
FLOAT16_MAX = float(np.finfo(np.float16).max)


def _as_numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _sources(item: Mapping[str, Any]) -> dict[str, list[int]]:
    """``{path: [size, mtime_ns]}`` of a case's input files (a DICOM folder: the folder's own entry)."""
    found = {}
    for key in ("image", "label"):
        path = Path(str(item[key]))
        try:
            stat = path.stat()
        except OSError as err:
            raise InputDataError(f"{path}: cannot read ({err.strerror or err})") from err
        found[str(path)] = [int(stat.st_size), int(stat.st_mtime_ns)]
    return found


@dataclass(frozen=True)
class StoredCase:
    """One preprocessed case in the store (see the module docstring for its files).

    Attributes:
        folder: the case folder.
        case: the case id.
        shape: the image's shape ``(C, X, Y, Z)``.
        affine: the 4 x 4 voxel-to-RAS affine of the preprocessed grid.
        seconds: how long preprocessing it took.
    """

    folder: Path
    case: str
    shape: tuple[int, ...]
    affine: np.ndarray
    seconds: float

    @classmethod
    def open(cls, folder: str | Path) -> StoredCase:
        """The case written in ``folder``.

        Raises:
            InputDataError: no (readable) case there.
        """
        folder = Path(folder)
        try:
            meta = json.loads((folder / CASE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputDataError(
                f"{folder}: not a preprocessed case (run pe-seg preprocess with this config)"
            ) from err
        affine = np.asarray(meta["affine"], dtype=np.float64)
        return cls(
            folder, str(meta["case"]), tuple(int(n) for n in meta["shape"]), affine, float(meta["seconds"])
        )

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def foreground(self, classes: Sequence[int] | None = None) -> np.ndarray:
        """Sorted raveled spatial indices of the label's non-zero voxels (int64); with ``classes``, of the
        voxels whose label value is one of them."""
        indices = np.load(self.folder / LABEL_INDICES_FILE)
        if classes is None:
            return indices
        return indices[np.isin(np.load(self.folder / LABEL_VALUES_FILE), list(classes))]

    def read(
        self, start: Sequence[int] | None = None, size: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The image ``(C, *size)`` and label ``(1, *size)`` (float32) of the box ``[start, start + size)``, or
        the whole case when ``start`` is ``None``. The box must lie inside the volume.

        Only the pages of the image file that hold the box are read, through a memory map closed on return."""
        spatial = self.spatial_shape
        if start is None or size is None:
            start, size = (0,) * len(spatial), spatial
        start = [int(s) for s in start]
        stop = [s + int(n) for s, n in zip(start, size, strict=True)]
        if any(s < 0 or e > n for s, e, n in zip(start, stop, spatial, strict=True)):
            raise ValueError(f"box {start}-{stop} outside the volume {list(spatial)} of {self.folder}")
        box = (slice(None), *(slice(s, e) for s, e in zip(start, stop, strict=True)))
        mapped = np.load(self.folder / IMAGE_FILE, mmap_mode="r")
        try:
            image = np.array(mapped[box], dtype=np.float32)
        finally:
            del mapped
        return image, self._label(start, stop)

    def _label(self, start: list[int], stop: list[int]) -> np.ndarray:
        """The dense label of the box from the sparse one; the indices are sorted, so those of the box's
        first-axis range are one contiguous run."""
        spatial = self.spatial_shape
        indices = self.foreground()
        values = np.load(self.folder / LABEL_VALUES_FILE)
        plane = math.prod(spatial[1:])
        low, high = np.searchsorted(indices, [start[0] * plane, stop[0] * plane])
        coords = np.unravel_index(indices[low:high], spatial)
        inside = np.ones(high - low, dtype=bool)
        for axis, c in enumerate(coords):
            inside &= (c >= start[axis]) & (c < stop[axis])
        label = np.zeros([e - s for s, e in zip(start, stop, strict=True)], dtype=np.float32)
        label[tuple(c[inside] - s for c, s in zip(coords, start, strict=True))] = values[low:high][inside]
        return label[None]


def write_case(
    folder: Path, data: Mapping[str, Any], case: str, sources: Mapping[str, Any], seconds: float
) -> None:
    """Write one preprocessed case (``data["image"]`` ``(C, X, Y, Z)`` in HU, ``data["label"]``
    ``(1, X, Y, Z)``) into the new folder ``folder``, whole or not at all."""
    image, label = _as_numpy(data["image"]), _as_numpy(data["label"])
    if label.shape[0] != 1 or label.shape[1:] != image.shape[1:]:
        raise ValueError(f"{case}: label of shape {label.shape} for an image of shape {image.shape}")
    peak = float(np.abs(image).max()) if image.size else 0.0
    stored = image.astype(np.float16 if peak <= FLOAT16_MAX else np.float32)
    flat = label[0].ravel()
    indices = np.flatnonzero(flat)
    affine = getattr(data["image"], "affine", None)
    meta = {
        "case": case,
        "shape": list(image.shape),
        "affine": _as_numpy(affine).tolist() if affine is not None else np.eye(4).tolist(),
        "image_dtype": str(stored.dtype),
        "foreground_voxels": int(indices.size),
        "seconds": round(seconds, 3),
        "sources": dict(sources),
        "version": STORE_VERSION,
    }
    with atomic_output_folder(folder) as tmp:
        np.save(tmp / IMAGE_FILE, stored)
        np.save(tmp / LABEL_INDICES_FILE, indices.astype(np.int64))
        np.save(tmp / LABEL_VALUES_FILE, flat[indices].astype(np.float32))
        (tmp / CASE_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")


class PreprocessedStore:
    """The store folder of one geometry chain under ``root`` (see the module docstring).

    Args:
        root: the store directory (``data.store_dir``); each geometry chain has its own folder in it.
        transform: the geometry chain, from :func:`~pe_segmentation.data.transforms.build_geometry_transforms`
            with keys ``("image", "label")``; its fingerprint names the folder.
    """

    def __init__(self, root: str | Path, transform: Compose) -> None:
        fingerprint = getattr(transform, FINGERPRINT_ATTR, None)
        if fingerprint is None:
            raise TypeError(
                "the store needs a chain built by build_geometry_transforms (it has no fingerprint)"
            )
        self.transform = transform
        self.fingerprint = f"{fingerprint}; store v{STORE_VERSION}"
        digest = hashlib.sha256(self.fingerprint.encode("utf-8")).hexdigest()
        self.folder = Path(root).expanduser() / digest[:16]

    def __repr__(self) -> str:
        return f"PreprocessedStore({str(self.folder)!r})"

    def case_folder(self, item: Mapping[str, Any]) -> Path:
        """Where ``item``'s case is kept: its id (made safe for file names) and the hash of its input paths."""
        case = str(item.get("case") or Path(str(item["image"])).name)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", case)[:80]
        paths = json.dumps([str(item["image"]), str(item["label"])])
        return self.folder / f"{safe}-{hashlib.sha256(paths.encode('utf-8')).hexdigest()[:10]}"

    def is_current(self, item: Mapping[str, Any]) -> bool:
        """Whether ``item`` is stored and its input files have not changed since."""
        try:
            meta = json.loads((self.case_folder(item) / CASE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return bool(meta.get("sources") == _sources(item))

    def open(self, item: Mapping[str, Any]) -> StoredCase:
        """``item``'s stored case.

        Raises:
            InputDataError: not stored (yet).
        """
        return StoredCase.open(self.case_folder(item))

    def prepare(self) -> None:
        """Create the store folder with its ``store.json``, and remove what killed writers left."""
        info = self.folder / STORE_FILE
        if not info.is_file():
            text = json.dumps({"version": STORE_VERSION, "fingerprint": self.fingerprint}, indent=1)
            atomic_write_text(info, text)
        for path in remove_stale_folders(self.folder, STALE_WRITE_S):
            log.info("removed %s, left by an interrupted preprocessing", path)

    def write(self, item: Mapping[str, Any]) -> float:
        """Preprocess ``item`` and store it (replacing an outdated copy); return the seconds it took.

        Raises:
            InputDataError: the case cannot be read.
        """
        sources = _sources(item)
        begin = time.perf_counter()
        data = self.transform({"image": item["image"], "label": item["label"]})
        seconds = time.perf_counter() - begin
        folder = self.case_folder(item)
        if folder.exists():  # outdated: its inputs changed
            shutil.rmtree(folder)
        case = str(item.get("case") or Path(str(item["image"])).name)
        write_case(folder, data, case, sources, seconds)
        return seconds


@dataclass(frozen=True)
class FillReport:
    """What :func:`fill_store` did.

    Attributes:
        written: cases preprocessed and written now.
        reused: cases already stored and current.
        seconds: the preprocessing time of each written case.
    """

    written: int
    reused: int
    seconds: tuple[float, ...]


class _CaseWriter(torch.utils.data.Dataset):
    """Item ``i`` preprocesses and stores case ``i`` and is its seconds: data-loader workers then preprocess
    cases side by side."""

    def __init__(self, store: PreprocessedStore, items: Sequence[Mapping[str, Any]]) -> None:
        self.store = store
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> float:
        return self.store.write(self.items[index])


def _unchanged(value: Any) -> Any:
    return value


def _share_cores(_worker_id: int, workers: int) -> None:
    """``worker_init_fn``: the CPU's cores shared out among the preprocessing workers (resampling is threaded)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, workers)))


def fill_store(
    store: PreprocessedStore,
    items: Sequence[Mapping[str, Any]],
    num_workers: int = 0,
    progress: bool = False,
) -> FillReport:
    """Preprocess and store the cases of ``items`` that are not stored yet (or whose input files changed).

    Args:
        store: the store.
        items: case dicts (``case``, ``image``, ``label``).
        num_workers: processes preprocessing cases side by side (0: this one).
        progress: a progress bar (on a terminal).

    Raises:
        InputDataError: a case that cannot be read.
        OutputError: the store cannot be written.
    """
    store.prepare()
    todo = [item for item in items if not store.is_current(item)]
    if not todo:
        return FillReport(0, len(items), ())
    workers = min(int(num_workers), len(todo))
    loader = torch.utils.data.DataLoader(
        _CaseWriter(store, todo),
        batch_size=None,
        num_workers=workers,
        collate_fn=_unchanged,
        worker_init_fn=functools.partial(_share_cores, workers=workers) if workers else None,
    )
    bar = tqdm(loader, total=len(todo), desc="preprocessing", unit="case", disable=None if progress else True)
    seconds = tuple(float(s) for s in bar)
    return FillReport(len(todo), len(items) - len(todo), seconds)
