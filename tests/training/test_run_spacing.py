"""A run's one spacing: worked out from its training cases when the recipe gives none, recorded in its config
and checkpoints, taken from the recipe when given, kept on resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pe_segmentation.config import load_config
from pe_segmentation.runtime import load_checkpoint
from pe_segmentation.training import run_training
from pe_segmentation.training.run_spacing import run_spacing
from training.conftest import save_case, write_datalist

#: Case -> (affine, its spacing along R, A, S worked out by hand). ``permuted`` stores its voxels along
#: S, R (flipped), A: its 3.5 mm axis is S after reorientation.
CASES = {
    "fine": (np.diag([1.0, 1.0, 1.25, 1.0]), (1.0, 1.0, 1.25)),
    "mid": (np.diag([1.5, 1.5, 2.0, 1.0]), (1.5, 1.5, 2.0)),
    "coarse": (np.diag([2.0, 2.0, 2.5, 1.0]), (2.0, 2.0, 2.5)),
    "thick": (np.diag([2.5, 2.5, 3.0, 1.0]), (2.5, 2.5, 3.0)),
    "permuted": (
        np.array([[0, -1.75, 0, 0], [0, 0, 1.75, 0], [3.5, 0, 0, 0], [0, 0, 0, 1.0]]),
        (1.75, 1.75, 3.5),
    ),
}


def _write_cases(folder: Path, size: int = 20) -> Path:
    """Toy cases (a bright labelled box in soft tissue) on the grids of :data:`CASES`; the datalist."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, (affine, _) in CASES.items():
        image = rng.normal(40.0, 20.0, (size, size, size)).astype(np.float32)
        label = np.zeros((size, size, size), dtype=np.uint8)
        label[6:12, 5:13, 7:12] = 1
        image[label > 0] += 360.0
        entries.append(save_case(folder, name, image, label, affine))
    return write_datalist(folder, entries)


def test_null_spacing_trains_at_the_training_cases_median(tmp_path, toy_config_factory, caplog):
    datalist = _write_cases(tmp_path / "cases")
    config = toy_config_factory(
        datalist, tmp_path / "run", "training.epochs=1", "data.val_fraction=0.2", "output.tensorboard=false"
    )
    assert config.preprocessing.spacing is None
    with caplog.at_level(logging.INFO, logger="pe_segmentation.training"):
        result = run_training(config, progress=False)

    # the median over the training cases only (the validation case left out), by hand from CASES
    split = json.loads((result.run_dir / "split.json").read_text())
    train = [name for name in CASES if name not in split["validation"]]
    assert len(train) == 4
    expected = [float(np.median([CASES[name][1][axis] for name in train])) for axis in range(3)]
    for path in (result.run_dir / "checkpoints").iterdir():
        checkpoint = load_checkpoint(path)
        assert checkpoint["config"]["preprocessing"]["spacing"] == pytest.approx(expected)
        assert checkpoint["spacing"]["mm"] == pytest.approx(expected)
        assert checkpoint["spacing"]["source"] == "training-set median rule"
    assert list(load_config(result.run_dir / "config.yaml").preprocessing.spacing) == pytest.approx(expected)
    assert "preprocessing.spacing is null: training at" in caplog.text
    assert "per-axis median of 4 training case(s)" in (result.run_dir / "train.log").read_text()


def _items(tmp_path: Path) -> list[dict[str, str]]:
    datalist = _write_cases(tmp_path / "cases", size=4)
    return [
        {"image": str(datalist.parent / e["image"])} for e in json.loads(datalist.read_text())["training"]
    ]


def test_recipe_spacing_is_used_as_given(toy_config_factory, tmp_path):
    config = toy_config_factory(
        tmp_path / "none.json", tmp_path / "run", "preprocessing.spacing=[0.8,0.8,1.5]"
    )
    resolved, record = run_spacing(config, [])  # no case is read
    assert resolved.preprocessing.spacing == (0.8, 0.8, 1.5)
    assert record == {"mm": [0.8, 0.8, 1.5], "source": "recipe"}


def test_null_axes_are_filled_by_the_rule(toy_config_factory, tmp_path):
    config = toy_config_factory(
        tmp_path / "none.json", tmp_path / "run", "preprocessing.spacing=[0.8,0.8,null]"
    )
    resolved, record = run_spacing(config, _items(tmp_path))
    # S over all five cases: median of (1.25, 2.0, 2.5, 3.0, 3.5) is 2.5
    assert resolved.preprocessing.spacing == (0.8, 0.8, 2.5)
    assert record == {"mm": [0.8, 0.8, 2.5], "source": "recipe, null axes by the training-set median rule"}


def test_resume_keeps_the_spacing_of_the_run(toy_config_factory, tmp_path, caplog):
    saved = {
        "config": {"preprocessing": {"spacing": [1.5, 1.5, 2.0]}},
        "spacing": {"mm": [1.5, 1.5, 2.0], "source": "training-set median rule"},
    }
    null = toy_config_factory(tmp_path / "none.json", tmp_path / "run")
    resolved, record = run_spacing(null, [], saved)  # no case is read
    assert resolved.preprocessing.spacing == (1.5, 1.5, 2.0)
    assert record == saved["spacing"]
    other = toy_config_factory(tmp_path / "none.json", tmp_path / "run", "preprocessing.spacing=[1,1,1]")
    with caplog.at_level(logging.WARNING):
        resolved, _ = run_spacing(other, [], saved)
    assert resolved.preprocessing.spacing == (1.5, 1.5, 2.0)
    assert "resuming keeps the run's spacing 1.5 x 1.5 x 2 mm" in caplog.text
    # a run from before fixed spacings (its checkpoint holds none) gets one by the rule
    old = {"config": {"preprocessing": {"spacing": None}}}
    resolved, record = run_spacing(null, _items(tmp_path), old)
    assert resolved.preprocessing.spacing == (1.75, 1.75, 2.5)
    assert record["source"] == "training-set median rule"
