"""Checkpoints saved without a fixed spacing: refused by inference with the command that fixes them, and
``pe-seg checkpoint set-spacing``, which writes a new checkpoint that predicts (the old file is left as it was)."""

from __future__ import annotations

import pytest
from conftest import make_affine

from pe_segmentation.api import set_checkpoint_spacing
from pe_segmentation.bundle import export_weights
from pe_segmentation.cli import main
from pe_segmentation.errors import EXIT_CHECKPOINT, EXIT_CONFIG, EXIT_OUTPUT, CheckpointError
from pe_segmentation.inference import Predictor
from pe_segmentation.io.volume_files import read_volume, write_volume
from pe_segmentation.runtime import load_checkpoint

from .helpers import make_ct, tiny_config, write_checkpoint

FIX = "pe-seg checkpoint set-spacing"


@pytest.fixture
def old_checkpoint(tmp_path):
    """A checkpoint as pe-seg saved it before every model had one spacing: ``preprocessing.spacing: null``."""
    return write_checkpoint(tmp_path / "old.pt", tiny_config(None))


def test_inference_refuses_a_checkpoint_without_a_spacing(tmp_path, old_checkpoint, run_infer, capsys):
    image = write_volume(make_ct(make_affine((0.9, 1.1, 2.0))), tmp_path / "ct.nii.gz")
    code = run_infer(
        "--input", image, "--output", tmp_path / "out", "--checkpoint", old_checkpoint, "--device", "cpu"
    )
    assert code == EXIT_CHECKPOINT
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert str(old_checkpoint) in message
    assert f"{FIX} {old_checkpoint} --spacing SX SY SZ --output NEW.pt" in message
    assert "2.24 2.24 2.5" in message  # the demo's phantoms' spacing, as an example
    with pytest.raises(CheckpointError, match="no fixed spacing"):
        Predictor.from_checkpoint(old_checkpoint, device="cpu")
    partial = write_checkpoint(tmp_path / "partial.pt", tiny_config((0.8, 0.8, None)))
    with pytest.raises(CheckpointError, match=FIX):
        Predictor.from_checkpoint(partial, device="cpu")


def test_set_spacing_writes_a_new_checkpoint_that_predicts(tmp_path, old_checkpoint, run_infer, capsys):
    before = old_checkpoint.read_bytes()
    new = tmp_path / "new.pt"
    code = main(
        [
            "checkpoint",
            "set-spacing",
            str(old_checkpoint),
            "--spacing",
            "1.5",
            "1.5",
            "2.5",
            "--output",
            str(new),
        ]
    )
    assert code == 0
    assert old_checkpoint.read_bytes() == before  # the old file is left byte for byte

    saved, old = load_checkpoint(new), load_checkpoint(old_checkpoint)
    assert saved["config"]["preprocessing"]["spacing"] == [1.5, 1.5, 2.5]
    assert saved["spacing"] == {
        "mm": [1.5, 1.5, 2.5],
        "source": "set by hand (pe-seg checkpoint set-spacing)",
    }
    for key in ("kind", "trainer", "metrics", "saved_at", "versions"):
        assert saved[key] == old[key]
    assert saved["model"].keys() == old["model"].keys()
    assert all((saved["model"][k] == old["model"][k]).all() for k in old["model"])
    untouched = {k: v for k, v in saved["config"].items() if k != "preprocessing"}
    assert untouched == {k: v for k, v in old["config"].items() if k != "preprocessing"}

    image = make_ct(make_affine((0.9, 1.1, 2.0)))
    path = write_volume(image, tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    assert run_infer("--input", path, "--output", out, "--checkpoint", new, "--device", "cpu", "--fast") == 0
    assert read_volume(out / "ct" / "mask.nii.gz").shape == image.shape
    predictor = Predictor.from_checkpoint(new, device="cpu")
    assert predictor.settings()["spacing_mm"] == [1.5, 1.5, 2.5]


def test_set_spacing_refusals(tmp_path, old_checkpoint, capsys):
    def set_spacing(source, *spacing, output):
        args = [
            "checkpoint",
            "set-spacing",
            str(source),
            "--spacing",
            *map(str, spacing),
            "--output",
            str(output),
        ]
        return main(args)

    before = old_checkpoint.read_bytes()
    # never over an existing file, the checkpoint itself included
    assert set_spacing(old_checkpoint, 1, 1, 1, output=old_checkpoint) == EXIT_OUTPUT
    assert "already exists" in capsys.readouterr().err
    assert old_checkpoint.read_bytes() == before
    assert set_spacing(old_checkpoint, 1, 0, 1, output=tmp_path / "a.pt") == EXIT_CONFIG
    assert not (tmp_path / "a.pt").exists()
    # a recorded spacing is the one the network was trained at: it is not changed
    fixed = write_checkpoint(tmp_path / "fixed.pt", tiny_config((1.5, 1.5, 2.5)))
    assert set_spacing(fixed, 1, 1, 1, output=tmp_path / "b.pt") == EXIT_CHECKPOINT
    assert "already records the spacing" in capsys.readouterr().err
    # a null axis is filled, the recorded ones must agree
    partial = write_checkpoint(tmp_path / "partial.pt", tiny_config((0.8, 0.8, None)))
    assert set_spacing(partial, 0.8, 0.8, 3, output=tmp_path / "c.pt") == 0
    assert load_checkpoint(tmp_path / "c.pt")["config"]["preprocessing"]["spacing"] == [0.8, 0.8, 3.0]
    with pytest.raises(CheckpointError, match="already records"):
        set_checkpoint_spacing(partial, (1.0, 0.8, 3.0), tmp_path / "d.pt")


def test_bundle_export_needs_a_spacing(tmp_path, old_checkpoint):
    with pytest.raises(CheckpointError, match=FIX):
        export_weights(old_checkpoint, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
    fixed = set_checkpoint_spacing(old_checkpoint, (1.5, 1.5, 2.5), tmp_path / "fixed.pt")
    # a recipe with a null spacing (the bundle trainer's) records the weights' own spacing
    model = export_weights(fixed, tmp_path / "model.pt", tmp_path / "recipe.yaml", config=tiny_config(None))
    assert load_checkpoint(model)["config"]["preprocessing"]["spacing"] == [1.5, 1.5, 2.5]
    assert load_checkpoint(model)["spacing"]["mm"] == [1.5, 1.5, 2.5]
    Predictor.from_checkpoint(model, device="cpu")
