"""Pair predicted masks (and probability maps) with reference labels by case name.

Each source is a folder of volume files, an MSD-style datalist JSON, or one volume file. A case name is the file
name without its extension and without one usual tag, so ``pe01.nii.gz``, ``pe01_seg.nii.gz``,
``pe01_label.nii.gz`` and ``pe01_prob.nii.gz`` all belong to case ``pe01``. In a predictions folder, files tagged
as probability maps (``_prob``, ``_probability``, ...) are skipped, and in a probability folder holding tagged
maps the untagged files are, so one inference output folder can serve as both ``--pred`` and ``--prob``.

Unpaired files are reported, not silently dropped: predictions without a label and labels without a prediction
are listed in :class:`CaseMatching` (the CLI warns, or refuses with ``--strict``); no pair at all, or a case
without its probability map when maps are given, is an :class:`~pe_segmentation.errors.InputDataError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pe_segmentation.data.case_items import listing, strip_suffix
from pe_segmentation.data.datasets import LABEL_SUFFIXES, from_datalist
from pe_segmentation.errors import InputDataError
from pe_segmentation.io.volume_files import case_name, is_volume_file

#: Tags dropped from prediction names (``pe01_pred.nii.gz`` -> ``pe01``).
PRED_SUFFIXES = (
    "_pred",
    "_prediction",
    "_predicted",
    "_seg",
    "_segmentation",
    "_mask",
    "_label",
    "-pred",
    "-seg",
)
#: Tags of probability maps (``pe01_prob.nii.gz`` -> ``pe01``).
PROB_SUFFIXES = ("_prob", "_probs", "_probability", "_probabilities", "_proba", "_probmap", "-prob")
_ROLE_SUFFIXES = {"pred": PRED_SUFFIXES, "label": LABEL_SUFFIXES, "prob": PROB_SUFFIXES}


@dataclass(frozen=True)
class CasePair:
    """The files of one evaluated case."""

    case: str
    pred: Path
    label: Path
    prob: Path | None = None


@dataclass
class CaseMatching:
    """Paired cases and what could not be paired."""

    pairs: list[CasePair]
    predictions_without_label: list[str] = field(default_factory=list)
    labels_without_prediction: list[str] = field(default_factory=list)
    unused_probabilities: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """One line per kind of unpaired file."""
        lines = []
        for names, what in (
            (self.predictions_without_label, "prediction(s) without a label"),
            (self.labels_without_prediction, "label(s) without a prediction (not evaluated)"),
            (self.unused_probabilities, "probability map(s) without a matching case"),
        ):
            if names:
                lines.append(f"{len(names)} {what}: {listing(names)}")
        return lines


def _has_tag(name: str, suffixes: Sequence[str]) -> bool:
    return strip_suffix(name, suffixes) != name


def _add(cases: dict[str, Path], case: str, path: Path, source: Path) -> None:
    if case in cases and cases[case] != path:
        raise InputDataError(f"{source}: {cases[case].name} and {path.name} both belong to case '{case}'")
    cases[case] = path


#: What ``pe-seg infer`` writes into ``OUTPUT/<case>/``, by role: such a folder is read case by case.
INFER_FILES = {"pred": "mask.nii.gz", "prob": "probability.nii.gz"}


def _infer_output_cases(source: Path, file_name: str) -> dict[str, Path]:
    """Case -> file for a ``pe-seg infer`` output folder (``<case>/mask.nii.gz``); empty when it is not one."""
    return {
        child.name: child / file_name
        for child in sorted(source.iterdir())
        if child.is_dir() and not child.name.startswith(".") and (child / file_name).is_file()
    }


def collect_cases(
    source: str | os.PathLike[str], role: str, section: str = "training", key: str | None = None
) -> dict[str, Path]:
    """Case name -> file for one source.

    Args:
        source: a folder of volume files, a ``pe-seg infer`` output folder (``<case>/mask.nii.gz`` and
            ``<case>/probability.nii.gz``), a datalist ``.json`` or one volume file.
        role: ``pred``, ``label`` or ``prob``: picks the name tags to drop and the default datalist key.
        section: the datalist section to read.
        key: the datalist entry key holding the path (default: ``role``).

    Raises:
        InputDataError: missing source, a folder without volume files, two files of one case, datalist errors.
    """
    if role not in _ROLE_SUFFIXES:
        raise ValueError(f"role must be one of {', '.join(_ROLE_SUFFIXES)}, got {role!r}")
    suffixes = _ROLE_SUFFIXES[role]
    source = Path(source).expanduser()
    cases: dict[str, Path] = {}
    if source.is_dir() and role in INFER_FILES:
        cases = _infer_output_cases(source, INFER_FILES[role])
        if cases:
            return cases
    if source.is_dir():
        paths = [
            p
            for p in sorted(source.iterdir())
            if not p.name.startswith(".") and p.is_file() and is_volume_file(p)
        ]
        tagged = [p for p in paths if _has_tag(case_name(p), PROB_SUFFIXES)]
        if role == "pred":
            paths = [p for p in paths if p not in tagged]  # probability maps next to the masks
        elif role == "prob" and tagged:
            paths = tagged  # masks next to the probability maps
        for path in paths:
            _add(cases, strip_suffix(case_name(path), suffixes), path, source)
        if not cases:
            raise InputDataError(f"{source}: no volume files for --{role}")
        return cases
    if not source.exists():
        raise InputDataError(f"{source}: no such file or folder (--{role})")
    if source.suffix.lower() == ".json":
        key = key or role
        try:
            items = from_datalist(source, section, image_key=key, require_label=False)
        except InputDataError as err:
            raise InputDataError(f"{err} (reading '{key}' paths for --{role})") from err
        for item in items:
            path = Path(item["image"])
            case = item["case"] if item["case"] != case_name(path) else strip_suffix(item["case"], suffixes)
            _add(cases, case, path, source)
        return cases
    if is_volume_file(source):
        return {strip_suffix(case_name(source), suffixes): source}
    raise InputDataError(f"{source}: --{role} must be a folder, a datalist .json or a volume file")


def match_cases(
    pred: str | os.PathLike[str],
    label: str | os.PathLike[str],
    prob: str | os.PathLike[str] | None = None,
    section: str = "training",
    pred_key: str = "pred",
    label_key: str = "label",
    prob_key: str = "prob",
) -> CaseMatching:
    """Pair predictions, labels and (optionally) probability maps by case name.

    A single prediction file and a single label file are paired whatever their names.

    Raises:
        InputDataError: no case has both a prediction and a label, or some paired case lacks a probability map.
    """
    preds = collect_cases(pred, "pred", section, pred_key)
    labels = collect_cases(label, "label", section, label_key)
    if len(preds) == 1 and len(labels) == 1 and Path(pred).is_file() and Path(label).is_file():
        preds = {next(iter(labels)): next(iter(preds.values()))}
    probs = collect_cases(prob, "prob", section, prob_key) if prob is not None else {}
    if prob is not None and len(probs) == 1 and len(preds) == 1 and Path(prob).is_file():
        probs = {next(iter(preds)): next(iter(probs.values()))}
    common = sorted(preds.keys() & labels.keys())
    if not common:
        raise InputDataError(
            f"no case has both a prediction and a label: predictions {listing(sorted(preds))}; "
            f"labels {listing(sorted(labels))}"
        )
    if prob is not None:
        missing = [case for case in common if case not in probs]
        if missing:
            raise InputDataError(f"{prob}: no probability map for case(s) {listing(missing)}")
    pairs = [CasePair(case, preds[case], labels[case], probs.get(case)) for case in common]
    return CaseMatching(
        pairs,
        predictions_without_label=sorted(preds.keys() - labels.keys()),
        labels_without_prediction=sorted(labels.keys() - preds.keys()),
        unused_probabilities=sorted(probs.keys() - set(common)),
    )
