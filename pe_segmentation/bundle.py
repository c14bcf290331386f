"""pe-seg as a MONAI bundle: the small adapters that let ``python -m monai.bundle`` drive pe-seg's own builders.

The bundle (``bundles/pe_segmentation/``) holds no second implementation: its configs name this package's
functions (``_target_: pe_segmentation....``). What MONAI's ``ConfigWorkflow`` needs and pe-seg does not already
have is here:

* :class:`BundleTrainer`: the bundle's ``train#trainer``. Its ``run()`` is :func:`~pe_segmentation.training.
  run_training` (the ``SupervisedTrainer`` of :func:`~pe_segmentation.training.build_trainer`, validation,
  checkpoints, resume, DDP) on the cases of ``train#dataset#data``, with ``train#handlers`` attached to that
  trainer; the best weights are then exported into the bundle (:func:`export_weights`).
* :class:`CaseInferenceEngine`: the bundle's ``evaluator`` for inference, a MONAI ``Evaluator`` whose every
  iteration is one case of :func:`~pe_segmentation.inference.runner.run_case` (the predictor and the writers of
  ``pe-seg infer``), so that its outputs are those of ``pe-seg infer``.
* :class:`EvaluationHandler`: scores the predictions against the cases' labels with
  :func:`~pe_segmentation.evaluation.runner.evaluate_cases` (what ``pe-seg evaluate`` writes).
* :func:`check_metadata`: ``configs/metadata.json`` against the mandatory fields of the MONAI bundle
  specification (its schema URL is not reachable offline, so ``monai.bundle verify_metadata`` cannot run here).
* :func:`read_bundle_inference`: the weights and inference settings of a bundle, for ``pe-seg infer --bundle``.

``models/model.pt`` is a pe-seg checkpoint holding only the network weights and the resolved config they were
trained with (``weights_only``-loadable); ``configs/recipe.yaml`` is that same config as YAML, the recipe that
``configs/train.yaml`` retrains. ``python -m pe_segmentation.bundle export RUN_CHECKPOINT BUNDLE_DIR`` writes both
(``scripts/bundle_weights.sh`` / ``make bundle-weights`` trains the demo recipe and calls it).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import Evaluator
from monai.transforms import Compose

from pe_segmentation.config import (
    Config,
    DataConfig,
    OutputConfig,
    apply_overrides,
    config_to_yaml,
    load_config,
    replace_section,
)
from pe_segmentation.data.transforms import build_train_transforms, fingerprint_hash
from pe_segmentation.errors import CheckpointError, ConfigError, InputDataError
from pe_segmentation.inference.cases import CaseInput, discover_cases
from pe_segmentation.inference.outputs import MASK_NAME, PROBABILITY_NAME, OutputOptions
from pe_segmentation.inference.predictor import Predictor
from pe_segmentation.inference.report import file_sha256
from pe_segmentation.inference.runner import CaseResult, run_case
from pe_segmentation.inference.runner import _log_result as log_case_result
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.io.volume_files import case_name
from pe_segmentation.runtime.checkpoint import load_checkpoint, save_checkpoint
from pe_segmentation.training.trainer import TrainingResult, run_training

log = logging.getLogger(__name__)

#: Where a bundle keeps its weights and their recipe, relative to the bundle root.
MODEL_FILE = "models/model.pt"
RECIPE_FILE = "configs/recipe.yaml"
INFERENCE_CONFIG = "configs/inference.yaml"
METADATA_FILE = "configs/metadata.json"

#: Top-level fields of ``metadata.json`` that the MONAI bundle specification makes mandatory.
METADATA_FIELDS = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
#: Fields of a tensor format specifier (``network_data_format.outputs.pred``) ...
OUTPUT_TENSOR_FIELDS = (
    "type",
    "format",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "is_patch_data",
    "channel_def",
)
#: ... and of an input one (``network_data_format.inputs.image``), which also names its modality.
INPUT_TENSOR_FIELDS = (*OUTPUT_TENSOR_FIELDS, "modality")


# ------------------------------------------------------------------------------------------------ metadata


def check_metadata(metadata: Mapping[str, Any] | str | os.PathLike[str]) -> list[str]:
    """Check ``metadata.json`` against the mandatory fields of the MONAI bundle specification.

    Checks presence and basic types: the mandatory top-level fields, a changelog entry for ``version``,
    ``network_data_format.inputs.image`` and ``outputs.pred`` with every field of a tensor format specifier
    (``num_channels`` an integer, ``spatial_shape`` a list of the network's spatial dimensions, ``dtype`` a torch
    dtype name, ``channel_def`` one entry per channel), in the form ``monai.bundle verify_net_in_out`` reads.

    Args:
        metadata: the parsed metadata, or the path of the JSON file.

    Returns:
        One line per problem (``network_data_format.inputs.image.dtype: missing``); empty when the file is valid.

    Raises:
        ConfigError: the file cannot be read or is not a JSON object.
    """
    if not isinstance(metadata, Mapping):
        path = Path(metadata)
        try:
            metadata = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read bundle metadata ({err})") from None
        if not isinstance(metadata, Mapping):
            raise ConfigError(f"{path}: bundle metadata must be a JSON object")
    problems = [f"{name}: missing" for name in METADATA_FIELDS if name not in metadata]
    for name in ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description"):
        if name in metadata and (not isinstance(metadata[name], str) or not metadata[name].strip()):
            problems.append(f"{name}: expected a non-empty string")
    changelog = metadata.get("changelog")
    if "changelog" in metadata and not isinstance(changelog, Mapping):
        problems.append("changelog: expected an object of version -> change")
    elif isinstance(changelog, Mapping) and metadata.get("version") not in changelog:
        problems.append(f"changelog: no entry for version {metadata.get('version')!r}")
    packages = metadata.get("required_packages_version")
    if "required_packages_version" in metadata and not isinstance(packages, Mapping):
        problems.append("required_packages_version: expected an object of package -> version")
    formats = metadata.get("network_data_format")
    if "network_data_format" in metadata:
        if not isinstance(formats, Mapping):
            return [*problems, "network_data_format: expected an object with inputs and outputs"]
        for group, key, fields in (
            ("inputs", "image", INPUT_TENSOR_FIELDS),
            ("outputs", "pred", OUTPUT_TENSOR_FIELDS),
        ):
            where = f"network_data_format.{group}.{key}"
            spec = (formats.get(group) or {}).get(key) if isinstance(formats.get(group), Mapping) else None
            if not isinstance(spec, Mapping):
                problems.append(f"{where}: missing")
                continue
            problems += [f"{where}.{name}: missing" for name in fields if name not in spec]
            problems += _tensor_problems(where, spec)
    return problems


def _tensor_problems(where: str, spec: Mapping[str, Any]) -> list[str]:
    problems = []
    channels = spec.get("num_channels")
    if "num_channels" in spec and (
        isinstance(channels, bool) or not isinstance(channels, int) or channels < 1
    ):
        problems.append(f"{where}.num_channels: expected an integer >= 1, got {channels!r}")
    shape = spec.get("spatial_shape")
    if "spatial_shape" in spec and (not isinstance(shape, list) or len(shape) not in (2, 3)):
        problems.append(f"{where}.spatial_shape: expected a list of 2 or 3 sizes, got {shape!r}")
    dtype = spec.get("dtype")
    if "dtype" in spec and not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        problems.append(f"{where}.dtype: not a torch dtype name: {dtype!r}")
    channel_def = spec.get("channel_def")
    wanted = [str(i) for i in range(channels)] if isinstance(channels, int) else None
    if (
        "channel_def" in spec
        and wanted is not None
        and (not isinstance(channel_def, Mapping) or set(channel_def) != set(wanted))
    ):
        problems.append(f"{where}.channel_def: expected one entry per channel, '0' to '{channels - 1}'")
    if "value_range" in spec and not isinstance(spec["value_range"], list):
        problems.append(f"{where}.value_range: expected a list")
    if "is_patch_data" in spec and not isinstance(spec["is_patch_data"], bool):
        problems.append(f"{where}.is_patch_data: expected true or false")
    return problems


def _model_problems(metadata: Mapping[str, Any], config: Config) -> list[str]:
    """Where the metadata's channel counts and dimensions disagree with the network of ``config``."""
    formats = metadata.get("network_data_format") or {}
    image = (formats.get("inputs") or {}).get("image") or {}
    pred = (formats.get("outputs") or {}).get("pred") or {}
    params = config.model.params
    expected = {
        "inputs.image.num_channels": (image.get("num_channels"), int(params.get("in_channels", 1))),
        "outputs.pred.num_channels": (pred.get("num_channels"), int(params.get("out_channels", 2))),
        "inputs.image.spatial_shape": (len(image.get("spatial_shape") or ()), config.patch.spatial_dims),
    }
    return [
        f"network_data_format.{key}: {found!r} in metadata.json, the network has {want!r}"
        for key, (found, want) in expected.items()
        if found != want
    ]


# ------------------------------------------------------------------------------------------------ configs


def as_flag(value: Any, name: str) -> bool:
    """A yes/no setting given in a config or on the command line, where ``--flag false`` arrives as the string
    ``"false"`` (which ``bool()`` would take for true).

    Raises:
        ConfigError: anything but a bool, 0/1 or true/false/yes/no/on/off.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def portable_config(config: Config) -> Config:
    """``config`` without the machine-specific paths of the run that used it (data path, split file, run
    folder), as a bundle ships it."""
    config = replace_section(config, "data", path=None, split_file=None)
    return replace_section(config, "output", run_dir=OutputConfig.run_dir)


def recipe_config(
    recipe: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
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
    from pe_segmentation.commands.train import dataset_overrides

    extra = [] if dataset_dir is None else dataset_overrides(str(dataset_dir))
    if run_dir is not None:
        extra.append(f"output.run_dir={run_dir}")
    if isinstance(overrides, str):
        overrides = [overrides]
    return load_config(recipe, [*extra, *overrides])


def train_transforms(config: Config) -> Compose:
    """The training transform chain of ``config`` (preprocessing, patches and, with ``training.augment``,
    augmentation), as the training engine builds it."""
    augmentation = config.augmentation if config.training.augment else None
    return build_train_transforms(config.preprocessing, config.patch, augmentation)


def _data_config(dataset_dir: str | os.PathLike[str], image_key: str) -> DataConfig:
    from pe_segmentation.commands.train import dataset_overrides

    data = apply_overrides({}, [*dataset_overrides(str(dataset_dir)), f"data.image_key={image_key}"])
    return Config.from_dict(data).data


def labelled_cases(dataset_dir: str | os.PathLike[str], image_key: str = "image") -> list[dict[str, str]]:
    """The labelled cases of a data set (``pe-seg synth`` folder, datalist JSON or ``images/`` + ``labels/``),
    as the training engine lists them (``case``, ``patient``, ``image``, ``label``).

    Args:
        dataset_dir: the data set.
        image_key: the datalist key of the images (``dicom`` for the phantoms' DICOM series).
    """
    from pe_segmentation.training.data import load_cases

    return load_cases(_data_config(dataset_dir, image_key), Path(dataset_dir) / "cache")


def input_cases(source: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The cases of an inference input, as ``pe-seg infer --input`` finds them (a DICOM series or study, a
    volume file, or a folder or glob of many), as dataset items: ``image``, ``case`` and, where known,
    ``series_uid`` (and ``error`` for a case that cannot be read)."""
    items = []
    for case in discover_cases(str(source)):
        item = {"image": str(case.path), "case": case.name}
        if case.series_uid is not None:
            item["series_uid"] = case.series_uid
        if case.error is not None:
            item["error"] = case.error
        items.append(item)
    return items


# ------------------------------------------------------------------------------------------------ weights


def export_weights(
    checkpoint: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    recipe: str | os.PathLike[str] | None = None,
    config: Config | None = None,
) -> Path:
    """Write a bundle's ``model.pt`` from a training checkpoint: the network weights and the resolved config
    they were trained with (made portable), no optimizer or RNG state; optionally the same config as a recipe.

    The file is a pe-seg checkpoint (``kind: bundle``), so ``Predictor.from_checkpoint``,
    ``pe-seg infer --checkpoint`` and fine-tuning (``pe-seg train --checkpoint``) read it, and MONAI's
    ``ckpt_export`` takes its weights with ``--key_in_ckpt model``.

    Args:
        checkpoint: a pe-seg training checkpoint (``best.pt``, ``last.pt``) or a bundle's ``model.pt``.
        destination: the ``model.pt`` to write (atomically).
        recipe: also write the config as a pe-seg recipe YAML here (the bundle's ``configs/recipe.yaml``).
        config: the config to record instead of the checkpoint's (the bundle trainer's, whose data section
            names the data set's layout rather than the run's case list); its network must be the checkpoint's.

    Raises:
        CheckpointError: the checkpoint is unreadable, holds no valid config, or ``config`` names another
            network.
    """
    source = load_checkpoint(checkpoint)
    saved = source.get("config")
    if not isinstance(saved, Mapping):
        raise CheckpointError(
            f"{checkpoint}: holds no training config; a bundle needs the config of its weights"
        )
    try:
        trained = Config.from_dict(saved)
    except ConfigError as err:
        raise CheckpointError(
            f"{checkpoint}: its config is not valid with this pe-seg version ({err})"
        ) from None
    if config is not None and config.model != trained.model:
        raise CheckpointError(f"{checkpoint}: holds a {trained.model.name} network other than the config's")
    config = portable_config(config or trained)
    trainer = source.get("trainer") or {}
    payload = {
        "kind": "bundle",
        "model": source["model"],
        "config": config.to_dict(),
        "trainer": {
            key: trainer[key] for key in ("epoch", "iteration", "best_dice", "best_epoch") if key in trainer
        },
        "metrics": source.get("metrics") or {},
        "source": {"file": Path(checkpoint).name, "kind": source.get("kind")},
    }
    for key in ("versions", "saved_at"):  # the training run's, not this export's
        if key in source:
            payload[key] = source[key]
    path = save_checkpoint(destination, payload)
    if recipe is not None:
        header = (
            "# The pe-seg recipe of models/model.pt (its resolved training config), written with the weights by\n"
            "# `python -m pe_segmentation.bundle export`; configs/train.yaml retrains it. Edit with care: the\n"
            "# weights in models/ were trained with exactly these settings.\n"
        )
        atomic_write_text(recipe, header + config_to_yaml(config))
    return path


# ------------------------------------------------------------------------------------------------ training


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
        datalist = run_dir / "datalist.json"
        if self.resume is None and (run_dir / "checkpoints" / "last.pt").exists():
            # refused by the run as well; checked first so that the old run's datalist.json stays as it was
            raise ConfigError(
                f"output_dir {run_dir} already holds a run (checkpoints/last.pt): continue it with --resume "
                f"{run_dir}, or choose another output_dir"
            )
        # every process writes the same list atomically, so each reads a whole file whatever the timing
        atomic_write_text(datalist, json.dumps({"training": items}, indent=2) + "\n")
        config = replace_section(
            self.config, "data", dataset="datalist", path=str(datalist), image_key="image"
        )
        result = run_training(
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


# ------------------------------------------------------------------------------------------------ inference


class CaseInferenceEngine(Evaluator):
    """The bundle's inference ``evaluator``: one iteration per case, each case predicted by ``predictor`` and
    written into ``output_dir/<case>/`` exactly as ``pe-seg infer`` writes it (mask, DICOM SEG, report, preview,
    probability map; :func:`~pe_segmentation.inference.runner.run_case`).

    ``engine.state.output`` holds the case's result (``name``, ``ok``, ``folder``, ``clot_count``,
    ``clot_burden_ml``, ...); :attr:`results` collects ``(item, CaseResult)`` of the run. With several cases a
    case that fails is reported and the others go on; the run then ends with an
    :class:`~pe_segmentation.errors.InputDataError` naming the failed cases.

    Args:
        dataset: the cases (items from :func:`input_cases` or :func:`labelled_cases`: ``image``, optional
            ``case``, ``series_uid``, ``label``).
        predictor: the :class:`~pe_segmentation.inference.predictor.Predictor`.
        output_dir: where the case folders go.
        checkpoint: the weights file, whose SHA-256 the reports carry.
        save_probability: also write ``probability.nii.gz``.
        dicom_seg: write ``seg.dcm`` for DICOM input.
        preview: write ``preview.png``.
        val_handlers: further handlers with ``attach(engine)``.
    """

    def __init__(
        self,
        dataset: Sequence[Mapping[str, Any]],
        predictor: Predictor,
        output_dir: str | os.PathLike[str],
        checkpoint: str | os.PathLike[str] | None = None,
        save_probability: bool = False,
        dicom_seg: bool = True,
        preview: bool = True,
        val_handlers: Sequence[Any] | None = None,
    ) -> None:
        cases = [
            dataset[index] for index in range(len(dataset))
        ]  # ignite iterates; a MONAI Dataset only indexes
        super().__init__(
            device=predictor.device,
            val_data_loader=cases,
            epoch_length=len(cases),
            val_handlers=val_handlers,
            decollate=False,
        )
        self.predictor = predictor
        self.output_dir = Path(output_dir)
        self.options = OutputOptions(
            probability=as_flag(save_probability, "save_probability"),
            dicom_seg=as_flag(dicom_seg, "dicom_seg"),
            preview=as_flag(preview, "preview"),
            hu_window=tuple(predictor.config.preprocessing.hu_window),
        )
        self.model = dict(predictor.model_info)
        if checkpoint is not None:
            self.model["sha256"] = file_sha256(checkpoint)
        self.results: list[tuple[dict[str, Any], CaseResult]] = []
        self.add_event_handler(Events.STARTED, lambda _: self.results.clear())
        self.add_event_handler(Events.COMPLETED, self._completed)

    def _iteration(self, engine: Engine, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        item = dict(batchdata)
        image = Path(str(item["image"]))
        name = str(item.get("case") or case_name(image))
        case = CaseInput(name, image, item.get("series_uid"), item.get("error"))
        total = int(self.state.epoch_length or 1)
        result = run_case(self.predictor, case, self.output_dir, self.options, self.model, catch=total > 1)
        self.results.append((item, result))
        log_case_result(result, len(self.results), total)
        return {"item": item, **vars(result)}

    def _completed(self, _: Engine) -> None:
        failed = [result.name for _, result in self.results if not result.ok]
        if len(self.results) > 1 or failed:
            log.info(
                "%d of %d case(s) written to %s",
                len(self.results) - len(failed),
                len(self.results),
                self.output_dir,
            )
        if failed:
            raise InputDataError(f"{len(failed)} of {len(self.results)} case(s) failed: {', '.join(failed)}")


class EvaluationHandler:
    """Score the predictions of a :class:`CaseInferenceEngine` against the cases' labels when it completes.

    Writes what ``pe-seg evaluate`` writes (per-case and per-embolus CSVs, ``summary.json`` with bootstrap
    intervals, box plots, FROC with probability maps, ``report.md``) into ``output_dir`` and puts the headline
    numbers into ``engine.state.metrics``: ``dice`` (mean over scans with emboli), ``embolus_sensitivity`` and
    ``fp_per_scan``.

    Args:
        output_dir: the evaluation folder.
        n_resamples: bootstrap resamples for the 95% intervals.
        nsd_tolerance_mm: normalised surface Dice tolerance.
        seed: bootstrap seed.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        n_resamples: int = 1000,
        nsd_tolerance_mm: float = 2.0,
        seed: int = 0,
    ) -> None:
        from pe_segmentation.evaluation.settings import EvaluationSettings

        self.output_dir = Path(output_dir)
        self.settings = EvaluationSettings(
            nsd_tolerance_mm=nsd_tolerance_mm, n_resamples=n_resamples, seed=seed
        )
        self.result: Any = None

    def attach(self, engine: CaseInferenceEngine) -> None:
        """Run at the end of ``engine``'s run."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: CaseInferenceEngine) -> None:
        from pe_segmentation.evaluation.matching import CasePair
        from pe_segmentation.evaluation.runner import evaluate_cases

        pairs = []
        for item, result in engine.results:
            if not result.ok or result.folder is None:
                continue  # reported by the engine
            if not item.get("label"):
                raise InputDataError(f"{result.name}: no label to evaluate against (give labelled cases)")
            folder = Path(result.folder)
            probability = folder / PROBABILITY_NAME
            pairs.append(
                CasePair(
                    result.name,
                    folder / MASK_NAME,
                    Path(item["label"]),
                    probability if probability.is_file() else None,
                )
            )
        if not pairs:
            raise InputDataError("nothing to evaluate: no case was predicted")
        self.result = evaluate_cases(pairs, self.output_dir, self.settings, progress=False)
        summary = self.result.summary
        metrics = {
            "dice": summary["voxel"]["dice"]["mean"],
            "embolus_sensitivity": summary["detection"]["sensitivity"],
            "fp_per_scan": summary["detection"]["fp_per_scan"],
        }
        engine.state.metrics.update(metrics)
        log.info(
            "evaluation of %d case(s): Dice %s, per-embolus sensitivity %s at %.2f FP/scan -> %s",
            len(pairs),
            _number(metrics["dice"]),
            _number(metrics["embolus_sensitivity"]),
            metrics["fp_per_scan"],
            self.result.files["report"],
        )


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


# ------------------------------------------------------------------------------------------------ pe-seg infer --bundle


def predictor_options() -> tuple[str, ...]:
    """The keyword options of :class:`~pe_segmentation.inference.predictor.Predictor` a bundle may set."""
    parameters = inspect.signature(Predictor.__init__).parameters.values()
    return tuple(
        p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in ("progress", "model_info")
    )


@dataclass(frozen=True)
class BundleInference:
    """What a bundle's ``configs/inference.yaml`` says about prediction.

    Attributes:
        root: the bundle folder.
        checkpoint: its weights (``ckpt_path``).
        precision: the predictor's precision.
        options: keyword options of the predictor it sets (``None`` values: the model's own default).
        outputs: ``save_probability``, ``dicom_seg`` and ``preview`` of its evaluator.
    """

    root: Path
    checkpoint: Path
    precision: str
    options: dict[str, Any]
    outputs: dict[str, bool]


def read_bundle_inference(bundle_dir: str | os.PathLike[str]) -> BundleInference:
    """Read the weights and inference settings of a bundle (its ``configs/inference.yaml``, resolved with
    ``bundle_root`` set to ``bundle_dir``), without loading the weights.

    Raises:
        ConfigError: not a bundle folder, or settings that cannot be resolved.
        CheckpointError: the weights file is missing.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_dir).expanduser().resolve()
    path = root / INFERENCE_CONFIG
    if not path.is_file():
        raise ConfigError(f"{root}: not a pe-seg bundle folder (no {INFERENCE_CONFIG})")
    parser = ConfigParser()
    parser.read_config(str(path))
    parser["bundle_root"] = str(root)
    try:
        checkpoint = Path(parser.get_parsed_content("ckpt_path"))
        predictor = parser["predictor"]
        options = {
            key: parser.get_parsed_content(f"predictor#{key}")
            for key in predictor_options()
            if key in predictor
        }
        precision = (
            str(parser.get_parsed_content("predictor#precision")) if "precision" in predictor else "auto"
        )
        evaluator = parser["evaluator"]
        outputs = {
            key: as_flag(parser.get_parsed_content(f"evaluator#{key}"), key) if key in evaluator else default
            for key, default in (("save_probability", False), ("dicom_seg", True), ("preview", True))
        }
    except (KeyError, ValueError, TypeError, AttributeError, SyntaxError, NameError) as err:
        raise ConfigError(
            f"{path}: cannot resolve the inference settings ({type(err).__name__}: {err})"
        ) from None
    if not checkpoint.is_file():
        raise CheckpointError(
            f"{checkpoint}: the bundle's weights are missing (build them with `make bundle-weights`)"
        )
    return BundleInference(root, checkpoint, precision, options, outputs)


# ------------------------------------------------------------------------------------------------ command line


def _export_command(args: argparse.Namespace) -> int:
    root = Path(args.bundle)
    model = root / MODEL_FILE
    export_weights(args.checkpoint, model, root / RECIPE_FILE)
    config = Config.from_dict(load_checkpoint(model)["config"])
    metadata = json.loads((root / METADATA_FILE).read_text(encoding="utf-8"))
    problems = check_metadata(metadata) + _model_problems(metadata, config)
    size = model.stat().st_size / 2**20
    print(f"wrote {model} ({size:.1f} MiB, {config.model.name}) and {root / RECIPE_FILE}")
    for line in problems:
        print(f"error: {root / METADATA_FILE}: {line}", file=sys.stderr)
    return 4 if problems else 0


def _check_command(args: argparse.Namespace) -> int:
    root = Path(args.bundle)
    metadata = json.loads((root / METADATA_FILE).read_text(encoding="utf-8"))
    problems = check_metadata(metadata)
    if (root / MODEL_FILE).is_file():
        problems += _model_problems(metadata, Config.from_dict(load_checkpoint(root / MODEL_FILE)["config"]))
    for line in problems:
        print(f"error: {root / METADATA_FILE}: {line}", file=sys.stderr)
    if not problems:
        print(f"{root}: metadata has every mandatory field and fits the weights")
    return 4 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pe_segmentation.bundle export CHECKPOINT BUNDLE_DIR`` / ``check BUNDLE_DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m pe_segmentation.bundle", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export", help="write BUNDLE/models/model.pt and configs/recipe.yaml from a run"
    )
    export.add_argument("checkpoint", help="a pe-seg training checkpoint (e.g. runs/x/checkpoints/best.pt)")
    export.add_argument("bundle", help="the bundle folder (bundles/pe_segmentation)")
    export.set_defaults(handler=_export_command)
    check = commands.add_parser(
        "check", help="check BUNDLE/configs/metadata.json (mandatory fields, weights)"
    )
    check.add_argument("bundle", help="the bundle folder")
    check.set_defaults(handler=_check_command)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (ConfigError, CheckpointError, InputDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
