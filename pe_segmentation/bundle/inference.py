"""The bundle's inference ``predictor`` and ``evaluator``: the predictor ``pe-seg infer`` builds (a pe-seg
checkpoint's, or an nnU-Net v2 model folder's), and a MONAI ``Evaluator`` whose every iteration is one case of
``pe-seg infer`` (the predictor and the writers of :func:`~pe_segmentation.inference.run_case`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import Evaluator

from pe_segmentation.api import inference_settings
from pe_segmentation.errors import ConfigError, InputDataError
from pe_segmentation.inference import (
    CaseInput,
    CaseResult,
    OutputOptions,
    Predictor,
    as_flag,
    file_sha256,
    log_case_result,
    run_case,
)
from pe_segmentation.io.volume_files import case_name

log = logging.getLogger(__name__)


def bundle_predictor(
    ckpt_path: str | os.PathLike[str] | None,
    device: torch.device | str = "auto",
    precision: str = "auto",
    *,
    nnunet_model_dir: str | os.PathLike[str] | None = None,
    nnunet_folds: Sequence[str | int] | str | int | None = None,
    nnunet_label: str | None = None,
    nnunet_checkpoint: str = "final",
    **options: Any,
) -> Predictor:
    """The bundle's ``predictor``: the bundle's weights (``ckpt_path``) or, with ``nnunet_model_dir``, an nnU-Net
    v2 trained-model folder, built as ``pe-seg infer --checkpoint`` / ``--nnunet`` build them
    (:func:`~pe_segmentation.api.inference_settings`, then its predictor spec), with the same checks.

    Args:
        ckpt_path: the bundle's weights (``models/model.pt``); not read with ``nnunet_model_dir``.
        device, precision: as for :class:`~pe_segmentation.inference.Predictor`.
        nnunet_model_dir: an nnU-Net v2 trained-model folder (``plans.json``, ``dataset.json``,
            ``fold_N/checkpoint_final.pth``) to run instead; needs pe-seg's ``nnunet`` extra.
        nnunet_folds: the folds to average (``--folds``; default: every fold folder with the checkpoint).
        nnunet_label: the embolus label's name in the model's ``dataset.json`` (``--label``).
        nnunet_checkpoint: ``final`` or ``best`` (``--nnunet-checkpoint``).
        **options: the predictor's keyword options (``None``: the model's own).

    Raises:
        ConfigError: nnU-Net options without ``nnunet_model_dir``; an option out of range.
        CheckpointError: missing or unsafe weights; a folder that is not an nnU-Net model, or the ``nnunet``
            extra missing.
    """
    if not nnunet_model_dir:
        if nnunet_folds is not None or nnunet_label is not None:
            raise ConfigError(
                "nnunet_folds and nnunet_label apply to an nnU-Net model folder (nnunet_model_dir)"
            )
        settings = inference_settings(ckpt_path, precision=precision, **options)
    else:
        settings = inference_settings(
            precision=precision,
            nnunet=nnunet_model_dir,
            folds=nnunet_folds,
            label=nnunet_label,
            nnunet_checkpoint=nnunet_checkpoint,
            **options,
        )
    return settings.spec()(device)


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
        predictor: the :class:`~pe_segmentation.inference.predictor.Predictor` (:func:`bundle_predictor`).
        output_dir: where the case folders go.
        checkpoint: the weights file, whose SHA-256 the reports carry, unless the predictor names its own (an
            nnU-Net model's first fold's, as ``pe-seg infer --nnunet`` reports it).
        save_probability: also write ``probability.nii.gz``.
        dicom_seg: write ``seg.dcm`` for DICOM input.
        preview: write ``preview.png``.
        anonymous_seg: leave the CT's Patient and General Study modules out of ``seg.dcm`` (``pe-seg infer
            --anonymous-seg``; set it with ``--evaluator#anonymous_seg true``).
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
        anonymous_seg: bool = False,
        val_handlers: Sequence[Any] | None = None,
    ) -> None:
        # the cases are read when the run starts (see run()), so that parsing the bundle needs no data
        super().__init__(
            device=predictor.device,
            val_data_loader=[],
            epoch_length=None,
            val_handlers=val_handlers,
            decollate=False,
        )
        self.dataset = dataset
        self.predictor = predictor
        self.output_dir = Path(output_dir)
        self.options = OutputOptions(
            probability=as_flag(save_probability, "save_probability"),
            dicom_seg=as_flag(dicom_seg, "dicom_seg"),
            preview=as_flag(preview, "preview"),
            hu_window=_hu_window(predictor),
            anonymous_seg=as_flag(anonymous_seg, "anonymous_seg"),
        )
        self.model = dict(predictor.model_info)
        if checkpoint is not None and not self.model.get("sha256"):
            self.model["sha256"] = file_sha256(checkpoint)
        self.results: list[tuple[dict[str, Any], CaseResult]] = []
        self.add_event_handler(Events.STARTED, lambda _: self.results.clear())
        self.add_event_handler(Events.COMPLETED, self._completed)

    def run(self, global_epoch: int = 1) -> None:  # type: ignore[override]  # MONAI Evaluator.run's own signature
        """Read the cases now (a missing input folder is one clear error here, not at parse time), then
        predict and write each of them."""
        cases = [self.dataset[index] for index in range(len(self.dataset))]  # a MONAI Dataset only indexes
        if not cases:
            raise InputDataError("the bundle's dataset holds no case to predict (check dataset_dir)")
        self.data_loader = cases
        self.state.epoch_length = len(cases)
        super().run(global_epoch)

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


def _hu_window(predictor: Predictor) -> tuple[float, float]:
    low, high = predictor.config.preprocessing.hu_window
    return float(low), float(high)
