"""Patient-level, seeded, reusable train/validation splits."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from pe_segmentation.data.splits import Split, get_or_create_split, load_split, save_split, split_cases
from pe_segmentation.errors import ConfigError, InputDataError


def cases(n: int, per_patient: int = 1) -> list[dict[str, str]]:
    return [
        {"case": f"case{i:03d}", "patient": f"pat{i // per_patient:03d}", "image": "x", "label": "y"}
        for i in range(n)
    ]


def test_split_is_deterministic_for_a_seed():
    items = cases(20)
    assert split_cases(items, 0.25, seed=3) == split_cases(items, 0.25, seed=3)
    assert len({split_cases(items, 0.25, seed=s).validation for s in range(5)}) > 1


def test_split_ignores_input_order():
    items = cases(17, per_patient=2)
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    assert split_cases(shuffled, 0.3, seed=7) == split_cases(items, 0.3, seed=7)


def test_split_keeps_patients_together_and_covers_everything():
    items = cases(30, per_patient=3)
    split = split_cases(items, 0.2, seed=1)
    patient = {i["case"]: i["patient"] for i in items}
    train_patients = {patient[c] for c in split.train}
    val_patients = {patient[c] for c in split.validation}
    assert not train_patients & val_patients
    assert len(val_patients) == 2  # 20 % of 10 patients
    assert split.cases == {i["case"] for i in items}
    assert split.train == tuple(sorted(split.train))


def test_patient_defaults_to_case():
    items = [{"case": c} for c in "abcde"]
    split = split_cases(items, 0.4, seed=0)
    assert len(split.validation) == 2
    assert len(split.train) == 3


@pytest.mark.parametrize("fraction", [0.01, 0.99])
def test_each_side_gets_a_case(fraction: float):
    split = split_cases(cases(2), fraction, seed=0)
    assert len(split.train) == 1
    assert len(split.validation) == 1


def test_split_argument_errors():
    with pytest.raises(InputDataError, match="at least 2 patients"):
        split_cases(cases(3, per_patient=3), 0.2)
    with pytest.raises(ConfigError, match="val_fraction: must be between 0 and 1"):
        split_cases(cases(4), 1.0)
    with pytest.raises(ConfigError, match="seed"):
        split_cases(cases(4), 0.5, seed=-1)
    with pytest.raises(InputDataError, match="case id 'a' appears twice"):
        split_cases([{"case": "a"}, {"case": "a"}, {"case": "b"}], 0.5)


def test_select_keeps_item_order():
    items = cases(6)
    split = Split(train=("case004", "case000"), validation=("case002",))
    train, val = split.select(items)
    assert [i["case"] for i in train] == ["case000", "case004"]
    assert [i["case"] for i in val] == ["case002"]
    with pytest.raises(InputDataError, match="on both sides"):
        Split(train=("a",), validation=("a",))


def test_save_and_load_round_trip(tmp_path: Path):
    split = split_cases(cases(10), 0.3, seed=5)
    path = save_split(tmp_path / "runs" / "split.json", split)
    assert load_split(path) == split
    data = json.loads(path.read_text())
    assert data["seed"] == 5
    assert data["val_fraction"] == 0.3
    assert data["version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temporary left behind


def test_load_errors(tmp_path: Path):
    with pytest.raises(InputDataError, match="split file not found"):
        load_split(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": ["a"], "validation": "b"}')
    with pytest.raises(InputDataError, match="'validation' must be a list of case ids"):
        load_split(bad)
    bad.write_text('{"train": ["a"], "validation": ["a"]}')
    with pytest.raises(InputDataError, match=r"bad\.json: split: case\(s\) on both sides: a"):
        load_split(bad)


def test_get_or_create_reuses_the_saved_split(tmp_path: Path, caplog):
    path = tmp_path / "split.json"
    items = cases(10)
    first = get_or_create_split(path, items, 0.2, seed=0)
    assert path.is_file()
    assert get_or_create_split(path, items, 0.5, seed=99) == first  # the file wins over new arguments
    with caplog.at_level(logging.WARNING):
        again = get_or_create_split(path, [*items, {"case": "late"}], 0.2, seed=0)
    assert again == first
    assert "late" in caplog.text
    assert "left out" in caplog.text


def test_get_or_create_refuses_a_split_naming_vanished_cases(tmp_path: Path):
    path = tmp_path / "split.json"
    items = cases(10)
    split = get_or_create_split(path, items)
    gone = split.validation[0]
    with pytest.raises(
        InputDataError, match=rf"names 1 case\(s\) not in the data set \({gone}\); delete the file"
    ):
        get_or_create_split(path, [i for i in items if i["case"] != gone])
