"""``pe-seg plan`` end to end: the three files, their figures, errors with their exit codes, and a recipe that
trains."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from training.conftest import write_toy_cases

import pe_segmentation as pe
from pe_segmentation.api.planning import hardware_for
from pe_segmentation.cli import main
from pe_segmentation.config import load_config
from pe_segmentation.errors import EXIT_CONFIG, EXIT_INPUT, EXIT_USAGE


@pytest.fixture(scope="module")
def planned(known_set, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan")
    assert main(["-q", "plan", "--dataset", str(known_set.datalist), "--cpu", "--output", str(out)]) == 0
    return out


def test_the_fingerprint_json_and_png_are_written(planned: Path):
    data = json.loads((planned / "fingerprint.json").read_text())
    assert (data["cases_listed"], data["cases_read"], data["cases_without_emboli"]) == (5, 4, 1)
    assert [(o["case"], o["kind"]) for o in data["oddities"]] == [
        ("d", "spacing_outlier"),
        ("e", "unreadable"),
    ]
    assert data["plan"]["patch"] == [40, 32, 20]
    assert (planned / "fingerprint.png").read_bytes().startswith(b"\x89PNG")


def test_the_recipe_holds_the_planned_numbers(known_set, planned: Path):
    config = load_config(planned / "plan.yaml")
    # 4 readable cases: median 0.8 x 0.8 x 2.5 mm (S is 3.1x coarser, but 20 slices x 3 is not below 36)
    assert config.preprocessing.spacing == (0.8, 0.8, 2.5)
    norm = config.preprocessing.normalization
    hu = known_set.labelled_hu
    assert norm.scheme == "ct_foreground"
    assert norm.clip == pytest.approx(tuple(np.percentile(hu, [0.5, 99.5])), abs=0.005)
    assert norm.mean == pytest.approx(hu.mean(), abs=0.005)
    assert norm.std == pytest.approx(hu.std(), abs=0.005)
    # median body box at the target spacing: 40 x 32 x 20 voxels (c's 33 x 24.5 x 16 and d's 40 x 32 x 19.2
    # beside a's and b's 40 x 32 x 20); a CPU's 96^3 cube in mm (140 x 140 x 45) is capped by it; depth 2
    assert config.patch.patch_size == (40, 32, 20)
    assert config.training.batch_size == 2
    assert config.model.name == "monai_dynunet"
    assert config.model.params["depth"] == 2
    assert config.model.params["base_channels"] == 16
    assert config.model.params["res_block"] is True
    assert config.loss.deep_supervision is True
    assert config.data.path == str(known_set.datalist.resolve())
    text = (planned / "plan.yaml").read_text()
    assert "# normalization: nnU-Net's CT scheme, from 408 labelled voxels" in text
    assert all(len(line) <= 110 for line in text.splitlines())


def test_errors_are_one_line_with_their_exit_codes(tmp_path: Path, capsys):
    assert (
        main(["plan", "--dataset", str(tmp_path / "missing.json"), "--cpu", "-o", str(tmp_path)])
        == EXIT_INPUT
    )
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.json'}: datalist not found"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["plan", "--dataset", str(broken), "--cpu", "-o", str(tmp_path)]) == EXIT_INPUT
    assert "not a readable JSON datalist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["plan", "--dataset", str(broken), "--cpu", "--gpu-memory", "8"])
    assert caught.value.code == EXIT_USAGE
    assert not list(tmp_path.glob("*.yaml"))


def test_a_gpu_too_small_is_a_config_error(known_set, tmp_path: Path, capsys):
    code = main(
        ["plan", "--dataset", str(known_set.datalist), "--gpu-memory", "1", "-o", str(tmp_path / "p")]
    )
    assert code == EXIT_CONFIG
    assert "--gpu-memory 1: too small" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_the_recipe_trains(tmp_path: Path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: two spinning threads only slow a busy machine
    try:
        _train_the_recipe(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _train_the_recipe(tmp_path: Path) -> None:
    toy = write_toy_cases(tmp_path / "toy", cases=5, size=24)
    result = pe.plan(toy, tmp_path / "plan", cpu=True)
    assert result.plan.patch.patch == (24, 24, 24)
    run = pe.train(
        result.recipe,
        [
            "training.epochs=1",
            "training.precision=fp32",
            "model.base_channels=4",
            "patch.samples_per_volume=1",
            "output.tensorboard=false",
            f"output.run_dir={tmp_path / 'run'}",
        ],
    )
    assert (run.run_dir / "checkpoints" / "last.pt").is_file()
    assert run.best_dice is not None


def test_without_flags_the_plan_is_for_this_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware_for().is_cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda index: SimpleNamespace(total_memory=24 * 2**30)
    )
    assert hardware_for().memory_gb == 24.0
    assert hardware_for(cpu=True).is_cpu
    assert hardware_for(gpu_memory=80).memory_gb == 80.0
