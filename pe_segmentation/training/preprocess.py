"""``pe-seg preprocess``: a run's cases preprocessed into its store ahead of training (:func:`preprocess_cases`).

The same cases, split and spacing as the run the config describes (:func:`~pe_segmentation.training.run_data.
load_run_cases`), so that ``pe-seg train`` with that config finds every case in the store and starts its first
epoch at once. A second call reuses every case still current.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pe_segmentation.config import Config
from pe_segmentation.data.store import PreprocessedStore
from pe_segmentation.runtime.distributed import DistributedContext
from pe_segmentation.training.data import open_store
from pe_segmentation.training.run_data import fill_run_store, load_run_cases


@dataclass(frozen=True)
class PreprocessResult:
    """What :func:`preprocess_cases` did.

    Attributes:
        store: the store folder of the config's preprocessing.
        cases: cases of the run (training and validation).
        written: cases preprocessed now.
        reused: cases already in the store.
        seconds: the preprocessing time of each case written now.
        store_bytes: the size of the run's cases in the store.
        source_bytes: the size of their input files (a DICOM series: its files).
        spacing: the spacing the cases were resampled to (mm).
    """

    store: Path
    cases: int
    written: int
    reused: int
    seconds: tuple[float, ...]
    store_bytes: int
    source_bytes: int
    spacing: tuple[float, ...]


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def preprocess_cases(config: Config, progress: bool = False) -> PreprocessResult:
    """Preprocess the cases of ``config``'s run into its store (``data.store_dir``, default
    ``<run_dir>/cache/store``), ``data.num_workers`` cases at a time; the split is kept as the run's
    ``split.json``, as training does.

    Raises:
        ConfigError: no data path, or no training case left after the split.
        InputDataError: a case that cannot be read.
        OutputError: the store cannot be written.
    """
    run_dir = Path(config.output.run_dir).expanduser().resolve()
    config, _, train_items, val_items = load_run_cases(config, run_dir, DistributedContext())
    items = [*train_items, *val_items]
    report = fill_run_store(config, items, run_dir / "cache", DistributedContext(), progress=progress)
    store: PreprocessedStore = open_store(config, run_dir / "cache")
    stored = sum(_size(store.case_folder(item)) for item in items)
    sources = sum(_size(Path(item[key])) for item in items for key in ("image", "label"))
    spacing = tuple(float(v) for v in config.preprocessing.fixed_spacing or ())
    return PreprocessResult(
        store.folder, len(items), report.written, report.reused, report.seconds, stored, sources, spacing
    )
