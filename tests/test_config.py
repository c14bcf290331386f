"""The config schema: recipes, overrides, the original project's flags, and errors naming the key path."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pe_segmentation.commands import train
from pe_segmentation.config import Config, config_to_yaml, load_config
from pe_segmentation.errors import ConfigError
from pe_segmentation.networks import build_network

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


def parse_train(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.add_parser(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_builds_its_network(recipe):
    config = load_config(recipe)
    net = build_network(config.model.name, **config.model.params)
    assert sum(p.numel() for p in net.parameters()) > 0
    assert Config.from_dict(config.to_dict()) == config  # the saved form reloads to the same config


def test_required_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {
        "unet",
        "r2unet",
        "attention_unet",
        "r2attention_unet",
        "nested_unet",
        "segresnet",
        "unet_2d",
    } <= names
    assert load_config(ROOT / "configs/unet_2d.yaml").patch.spatial_dims == 2


def test_reference_recipe_is_the_schema_defaults():
    text = (ROOT / "configs/reference.yaml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#")) + "\n"
    assert body == config_to_yaml(Config())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-1", "optimizer.lr: must be > 0, got -1"),
        ("optimizer.lr=fast", "optimizer.lr: expected a finite number, got 'fast'"),
        (
            "optimizer.name=adm",
            "optimizer.name: expected one of adam, adamw, sgd, got 'adm' (did you mean 'adam'?)",
        ),
        ("trainig.epochs=2", "trainig: unknown section (did you mean 'training'?)"),
        ("training.epohcs=2", "training.epohcs: unknown key (did you mean 'epochs'?)"),
        ("model.dropuot=0.1", "model.dropuot: unknown key (did you mean 'dropout'?)"),
        ("model.name=unte", "model.name: unknown network 'unte' (did you mean 'unet'?)"),
        ("loss.name=dcie", "loss.name: unknown loss 'dcie' (did you mean 'dice'?)"),
        ("patch.patch_size=[64, 64]", "patch.patch_size: 3D patches need 3 values, got [64, 64]"),
        ("training.device=gpu", "training.device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("model.spatial_dims=2", "model.spatial_dims (2) differs from patch.spatial_dims (3)"),
        ("data.cache=ram", "data.cache: expected one of none, memory, disk, store, got 'ram'"),
    ],
)
def test_bad_values_name_the_key_path(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "configs/unet.yaml", [override])
    assert str(caught.value).startswith(f"{ROOT / 'configs/unet.yaml'}: {message}")


def test_yaml_1_1_exponents_and_nested_overrides():
    config = load_config(
        None, ["optimizer.lr=3e-4", "model.base_channels=8", "preprocessing.hu_window=[-200, 600]"]
    )
    assert config.optimizer.lr == pytest.approx(3e-4)
    assert config.model.params["base_channels"] == 8
    assert config.preprocessing.hu_window == (-200.0, 600.0)
    with pytest.raises(ConfigError, match=r"expected KEY\.PATH=VALUE"):
        load_config(None, ["optimizer.lr"])


def test_yaml_that_would_build_objects_is_refused(tmp_path):
    marker = tmp_path / "ran"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"training: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(recipe)
    assert not marker.exists()


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections, got list"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("training: {epochs: 3\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(tmp_path / "broken.yaml")


def test_original_flags_map_onto_config_keys(tmp_path):
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "datalist.json").write_text("{}")
    args = parse_train(
        "--config",
        str(ROOT / "configs/unet.yaml"),
        "--model",
        "r2unet",
        "--loss",
        "dice",
        "--epoch",
        "3",
        "--batch_size",
        "4",
        "--lr",
        "0.01",
        "--gpu",
        "1",
        "--parallel",
        "--dataset",
        str(tmp_path / "synth"),
        "--seed",
        "7",
        "--set",
        "training.epochs=5",
    )
    config = train.config_from_args(args)
    assert config.model.name == "r2unet"
    assert config.loss.name == "dice"
    assert config.training.epochs == 5  # --set comes after the flags and wins
    assert config.training.batch_size == 4
    assert config.optimizer.lr == pytest.approx(0.01)
    assert config.training.device == "cuda:1"
    assert config.training.distributed is True
    assert config.training.seed == 7
    assert (config.data.dataset, config.data.path) == ("synthetic", str(tmp_path / "synth"))
    assert train.config_from_args(parse_train("--epochs", "2", "--batch-size", "3")).training.batch_size == 3
    assert train.config_from_args(parse_train("--gpu", "cpu")).training.device == "cpu"
    assert train.config_from_args(parse_train("--dataset", "x/list.json")).data.dataset == "datalist"
    with pytest.raises(ConfigError, match="--gpu 'first'"):
        train.config_from_args(parse_train("--gpu", "first"))
