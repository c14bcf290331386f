"""The bundle's files: metadata.json against the MONAI bundle specification, the recipe against the weights,
logging.conf against MONAI's allow-list."""

from __future__ import annotations

import configparser
import copy
import json
import logging
import logging.handlers
from pathlib import Path

import pytest

from pe_segmentation.bundle import (
    INPUT_TENSOR_FIELDS,
    METADATA_FIELDS,
    OUTPUT_TENSOR_FIELDS,
    check_metadata,
    model_problems,
)
from pe_segmentation.bundle.cli import main
from pe_segmentation.config import Config, load_config
from pe_segmentation.errors import ConfigError
from pe_segmentation.inference import as_flag
from pe_segmentation.runtime.checkpoint import load_checkpoint

from .conftest import BUNDLE

METADATA = json.loads((BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8"))


def test_bundle_layout_follows_the_specification():
    for name in ("LICENSE", "configs/metadata.json", "models/model.pt", "docs/README.md"):
        assert (BUNDLE / name).is_file(), name
    for name in ("train.yaml", "inference.yaml", "evaluate.yaml", "multi_gpu_train.yaml", "logging.conf"):
        assert (BUNDLE / "configs" / name).is_file(), name


def test_metadata_has_every_mandatory_field():
    assert check_metadata(METADATA) == []
    assert check_metadata(BUNDLE / "configs" / "metadata.json") == []
    assert METADATA["version"] in METADATA["changelog"]
    image = METADATA["network_data_format"]["inputs"]["image"]
    pred = METADATA["network_data_format"]["outputs"]["pred"]
    assert (image["num_channels"], image["modality"], image["dtype"]) == (1, "CT", "float32")
    assert pred["channel_def"] == {
        "0": "background",
        "1": "embolus",
        "2": "pulmonary artery",
        "3": "pulmonary vein",
    }


@pytest.mark.parametrize("field", METADATA_FIELDS)
def test_metadata_check_fails_without_a_mandatory_field(field):
    broken = copy.deepcopy(METADATA)
    del broken[field]
    assert f"{field}: missing" in check_metadata(broken)


@pytest.mark.parametrize(
    ("group", "key", "field"),
    [("inputs", "image", f) for f in INPUT_TENSOR_FIELDS]
    + [("outputs", "pred", f) for f in OUTPUT_TENSOR_FIELDS],
)
def test_metadata_check_fails_without_a_tensor_field(group, key, field):
    broken = copy.deepcopy(METADATA)
    del broken["network_data_format"][group][key][field]
    assert f"network_data_format.{group}.{key}.{field}: missing" in check_metadata(broken)


def test_metadata_check_names_bad_values():
    broken = copy.deepcopy(METADATA)
    broken["version"] = "9.9.9"  # no changelog entry
    broken["network_data_format"]["outputs"]["pred"]["num_channels"] = 5  # channel_def lists 4
    broken["network_data_format"]["inputs"]["image"]["dtype"] = "float99"
    problems = check_metadata(broken)
    assert "changelog: no entry for version '9.9.9'" in problems
    assert any(p.startswith("network_data_format.outputs.pred.channel_def") for p in problems)
    assert any(p.startswith("network_data_format.inputs.image.dtype") for p in problems)


def test_metadata_file_without_a_field_fails_the_check_command(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    broken = {k: v for k, v in METADATA.items() if k != "copyright"}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(broken), encoding="utf-8")
    assert check_metadata(bundle / "configs" / "metadata.json") == ["copyright: missing"]
    assert main(["check", str(bundle)]) == 4
    assert "copyright: missing" in capsys.readouterr().err
    assert main(["check", str(BUNDLE)]) == 0
    (bundle / "configs" / "metadata.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigError, match="JSON object"):
        check_metadata(bundle / "configs" / "metadata.json")


def test_weights_recipe_and_metadata_agree():
    checkpoint = load_checkpoint(BUNDLE / "models" / "model.pt")
    assert checkpoint["kind"] == "bundle"
    assert "optimizer" not in checkpoint
    assert "rng" not in checkpoint
    recipe = load_config(BUNDLE / "configs" / "recipe.yaml")
    # the recipe is the weights' own config (read through the schema: keys added since take their defaults)
    assert recipe == Config.from_dict(checkpoint["config"])
    assert recipe.data.path is None
    assert recipe.output.run_dir == Config().output.run_dir
    assert model_problems(METADATA, recipe) == []
    assert (BUNDLE / "models" / "model.pt").stat().st_size < 20 * 2**20


def test_logging_conf_uses_standard_library_handlers_only():
    parser = configparser.RawConfigParser()
    parser.read(BUNDLE / "configs" / "logging.conf")
    classes = [parser.get(s, "class") for s in parser.sections() if parser.has_option(s, "class")]
    assert classes
    for name in classes:
        assert isinstance(getattr(logging, name, None) or getattr(logging.handlers, name, None), type), name


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), ("false", False), ("True", True), (0, False), ("no", False)]
)
def test_flags_from_the_command_line(value, expected):
    assert as_flag(value, "tta") is expected


def test_flag_refuses_other_values():
    with pytest.raises(ConfigError, match="tta: expected true or false"):
        as_flag("maybe", "tta")


def test_bundle_readme_names_every_config():
    text = (BUNDLE / "docs" / "README.md").read_text(encoding="utf-8")
    for name in (
        "train.yaml",
        "inference.yaml",
        "evaluate.yaml",
        "multi_gpu_train.yaml",
        "make bundle-weights",
    ):
        assert name in text, name
    assert "Apache License" in Path(BUNDLE / "LICENSE").read_text(encoding="utf-8")
