"""The bundle's ``train#trainer``: pe-seg's training run (:func:`pe_segmentation.train`) over the cases of the
bundle's dataset, then the best weights exported into the bundle."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pe_segmentation.api import train
from pe_segmentation.bundle.configs import train_transforms
from pe_segmentation.bundle.weights import export_weights
from pe_segmentation.config import Config, replace_section
from pe_segmentation.data.transforms import fingerprint_hash
from pe_segmentation.errors import ConfigError, InputDataError
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.training import TrainingResult, ensure_new_run_folder

log = logging.getLogger(__name__)


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _absolute_paths(item: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(item)
    for key in ("image", "label"):
        if isinstance(out.get(key), (str, os.PathLike)):
            out[key] = str(Path(out[key]).expanduser().resolve())
    return out


class BundleTrainer:
    """The bundle's ``train#trainer``: pe-seg's training run over the cases of the bundle's dataset.

    ``run()`` trains with :func:`~pe_segmentation.training.run_training`: MONAI's ``SupervisedTrainer`` built by
    :func:`~pe_segmentation.training.build_trainer`, validation on a seeded patient-level split
    (``data.val_fraction``), warmup LR, metrics, TensorBoard and atomic checkpoints in ``output.run_dir``,
    resume, and DDP when started by ``torchrun``. ``train_handlers`` are attached to that trainer after
    pe-seg's own handlers. The cases are the dataset's ``data`` (what MONAI Label and other bundle clients set as
    ``train#dataset#data``); they are written to ``<run_dir>/datalist.json``, which the run reads.

    Args:
        config: the run config (:func:`recipe_config`).
        dataset: the training dataset (``train#dataset``, whose ``data`` lists the cases and whose
            ``transform`` must be the config's training chain, :func:`train_transforms`), or the case list.
        max_epochs: epochs to train (``training.epochs``; default: the config's).
        device: where to train (``training.device``; default: the config's). Under ``torchrun`` each process
            takes GPU ``LOCAL_RANK`` when this is ``cuda``.
        train_handlers: further handlers with ``attach(engine)``, attached to the ``SupervisedTrainer``.
        resume: a run folder or ``last.pt`` to continue.
        init_weights: a checkpoint whose weights start the run (fine-tuning), e.g. the bundle's ``model.pt``.
        export_path: after training, the best weights (``last.pt`` without validation) are exported here
            (:func:`export_weights`, by rank 0); ``None``: no export.
        recipe_path: with ``export_path``, also write the run's config here as the bundle's recipe.
        progress: per-iteration progress (a bar on a terminal, log lines otherwise).
    """

    def __init__(
        self,
        config: Config,
        dataset: Any,
        max_epochs: int | None = None,
        device: torch.device | str | None = None,
        train_handlers: Sequence[Any] | None = None,
        resume: str | os.PathLike[str] | None = None,
        init_weights: str | os.PathLike[str] | None = None,
        export_path: str | os.PathLike[str] | None = None,
        recipe_path: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> None:
        if not isinstance(config, Config):
            raise TypeError(f"config must be a pe_segmentation Config, got {type(config).__name__}")
        changes: dict[str, Any] = {}
        if max_epochs is not None:
            changes["epochs"] = int(max_epochs)
        if device is not None:
            changes["device"] = str(device)
        self.config = replace_section(config, "training", **changes) if changes else config
        self.dataset = dataset
        self.train_handlers = list(train_handlers or ())
        self.resume = resume
        self.init_weights = init_weights
        self.export_path = export_path
        self.recipe_path = recipe_path
        self.progress = bool(progress)
        self.result: TrainingResult | None = None

    @property
    def max_epochs(self) -> int:
        """Epochs the run trains (``training.epochs``)."""
        return self.config.training.epochs

    def cases(self) -> list[dict[str, Any]]:
        """The training cases (absolute paths), after checking that the dataset's transform is the config's."""
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and fingerprint_hash(transform) != fingerprint_hash(
            train_transforms(self.config)
        ):
            raise ConfigError(
                "train#dataset#transform is not the training chain of the run's config: pe-seg's trainer builds "
                "its patches from the config (change the recipe or overrides instead of train#preprocessing)"
            )
        items = getattr(self.dataset, "data", self.dataset)
        if not isinstance(items, Sequence) or not all(isinstance(i, Mapping) and "image" in i for i in items):
            raise InputDataError(
                "train#dataset#data: expected a list of cases with 'image' and 'label' paths"
            )
        if not items:
            raise InputDataError("train#dataset#data: no training cases")
        return [_absolute_paths(item) for item in items]

    def run(self) -> TrainingResult:
        """Train (see the class docstring), export the weights, and return the run's result."""
        items = self.cases()
        run_dir = Path(self.config.output.run_dir).expanduser().resolve()
        if self.resume is None:
            # refused by the run as well; checked first so that the old run's datalist.json stays as it was
            ensure_new_run_folder(run_dir, option="output_dir")
        datalist = run_dir / "datalist.json"
        # every process writes the same list atomically, so each reads a whole file whatever the timing
        atomic_write_text(datalist, json.dumps({"training": items}, indent=2) + "\n")
        config = replace_section(
            self.config, "data", dataset="datalist", path=str(datalist), image_key="image"
        )
        result = train(
            config,
            resume=self.resume,
            init_weights=self.init_weights,
            progress=self.progress,
            handlers=self.train_handlers,
        )
        if self.export_path is not None and _is_rank_zero():
            source = result.best_checkpoint or result.last_checkpoint
            export_weights(source, self.export_path, self.recipe_path, config=self.config)
            log.info("bundle weights from %s written to %s", source, self.export_path)
        self.result = result
        return result
