"""What the bundle's configs call to build their parts from pe-seg's own builders: the run config of a recipe,
the training transform chain, and the case lists of a data set or an inference input.

The case lists are found when first used, not when a config is parsed: MONAI Label, the model zoo's checks and
``ConfigWorkflow.check_properties()`` parse a bundle before any data exists (the spleen bundle's datalist is a
glob that is simply empty), while a run over a missing folder must still say so in one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from monai.transforms import Compose

from pe_segmentation.api import dataset_overrides
from pe_segmentation.config import Config, DataConfig, apply_overrides, load_config
from pe_segmentation.data.transforms import build_train_transforms
from pe_segmentation.inference import discover_cases
from pe_segmentation.training.data import load_cases


class CaseList(Sequence[dict[str, Any]]):
    """A list of dataset items that is looked up on first use (length, index or iteration) and then kept.

    Args:
        find: returns the items; its errors (a missing folder) surface at first use, in one line.
        source: what the items come from, for ``repr``.
    """

    def __init__(self, find: Callable[[], list[dict[str, Any]]], source: str) -> None:
        self._find = find
        self._items: list[dict[str, Any]] | None = None
        self.source = source

    def _loaded(self) -> list[dict[str, Any]]:
        if self._items is None:
            self._items = self._find()
        return self._items

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self._loaded()[index]

    def __len__(self) -> int:
        return len(self._loaded())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._loaded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (CaseList, list, tuple)):
            return self._loaded() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-list semantics: equal by content, so not hashable

    def __repr__(self) -> str:
        state = "not yet read" if self._items is None else f"{len(self._items)} case(s)"
        return f"CaseList({self.source!r}, {state})"


def recipe_config(
    recipe: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] | str = (),
) -> Config:
    """The run config of the bundle's training: its recipe, pointed at ``dataset_dir`` and ``run_dir``.

    Args:
        recipe: a pe-seg recipe YAML (the bundle's ``configs/recipe.yaml``).
        dataset_dir: the cases: a ``pe-seg synth`` folder, an MSD-style datalist JSON, or an ``images/`` +
            ``labels/`` folder (the layout is guessed as ``pe-seg train --dataset`` guesses it).
        run_dir: the run folder (``output.run_dir``).
        overrides: further ``KEY.PATH=VALUE`` overrides, as ``pe-seg train --set`` takes them.

    Raises:
        ConfigError: an unreadable recipe, an unknown key or a bad value (named with its key path).
    """
    extra = [] if dataset_dir is None else dataset_overrides(dataset_dir)
    if run_dir is not None:
        extra.append(f"output.run_dir={run_dir}")
    given = [overrides] if isinstance(overrides, str) else list(overrides)
    return load_config(recipe, [*extra, *given])


def train_transforms(config: Config) -> Compose:
    """The training transform chain of ``config`` (preprocessing, patches and, with ``training.augment``,
    augmentation), as the training engine builds it."""
    augmentation = config.augmentation if config.training.augment else None
    return build_train_transforms(config.preprocessing, config.patch, augmentation)


def _data_config(dataset_dir: str | os.PathLike[str], image_key: str) -> DataConfig:
    data = apply_overrides({}, [*dataset_overrides(dataset_dir), f"data.image_key={image_key}"])
    return Config.from_dict(data).data


def training_cases(config: Config, cache_dir: str | os.PathLike[str]) -> CaseList:
    """The labelled cases of a run config's data set, as the training engine lists them (``case``,
    ``patient``, ``image``, ``label``), read on first use."""
    return CaseList(lambda: list(load_cases(config.data, Path(cache_dir))), str(config.data.path))


def labelled_cases(dataset_dir: str | os.PathLike[str], image_key: str = "image") -> CaseList:
    """The labelled cases of a data set (``pe-seg synth`` folder, datalist JSON or ``images/`` + ``labels/``),
    as the training engine lists them (``case``, ``patient``, ``image``, ``label``), read on first use.

    Args:
        dataset_dir: the data set.
        image_key: the datalist key of the images (``dicom`` for the phantoms' DICOM series).
    """

    def find() -> list[dict[str, Any]]:
        return list(load_cases(_data_config(dataset_dir, image_key), Path(dataset_dir) / "cache"))

    return CaseList(find, str(dataset_dir))


def input_cases(source: str | os.PathLike[str]) -> CaseList:
    """The cases of an inference input, as ``pe-seg infer --input`` finds them (a DICOM series or study, a
    volume file, or a folder or glob of many), as dataset items: ``image``, ``case`` and, where known,
    ``series_uid`` (and ``error`` for a case that cannot be read); read on first use."""

    def find() -> list[dict[str, Any]]:
        items = []
        for case in discover_cases(str(source)):
            item = {"image": str(case.path), "case": case.name}
            if case.series_uid is not None:
                item["series_uid"] = case.series_uid
            if case.error is not None:
                item["error"] = case.error
            items.append(item)
        return items

    return CaseList(find, str(source))
