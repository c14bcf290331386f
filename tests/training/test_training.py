"""End-to-end training on tiny toy volumes: run folder, learning, LR curve, seeding, exact resume, fine-tuning."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from pe_segmentation.config import load_config, replace_section
from pe_segmentation.errors import CheckpointError, ConfigError
from pe_segmentation.runtime import load_checkpoint
from pe_segmentation.training import lr_at, run_training
from pe_segmentation.training.curves import CSV_COLUMNS

from .helpers import LEARNS_THE_TOY_SET, Crash

# three epochs, validation at epochs 2 and 3 (every 2, and always after the last), augmentation on
REFERENCE = (
    "training.epochs=3",
    "validation.every=2",
    "training.augment=true",
    "output.checkpoint_every=2",
)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _scalars(run_dir: Path, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in _events(run_dir).Scalars(tag)}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, toy_datalist, toy_config_factory):
    """One uninterrupted 3-epoch run (and its config), shared by the tests that compare against it."""
    config = toy_config_factory(toy_datalist, tmp_path_factory.mktemp("reference") / "run", *REFERENCE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_training(config, progress=False), config
    finally:
        torch.set_num_threads(threads)


def test_short_run_writes_the_run_folder(reference_run):
    result, config = reference_run
    run = result.run_dir
    assert (result.epochs_run, result.iterations) == (3, 12)  # 4 volumes x 2 patches / batch 2 = 4 per epoch
    assert result.last_checkpoint == run / "checkpoints" / "last.pt"
    assert result.best_checkpoint == run / "checkpoints" / "best.pt"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "epoch_0002.pt", "last.pt"]
    # the toy set's spacing is null: the run trains at its cases' 2 mm, and says so everywhere
    resolved = replace_section(config, "preprocessing", spacing=[2.0, 2.0, 2.0])
    assert load_config(run / "config.yaml") == resolved
    checkpoint = load_checkpoint(result.best_checkpoint)
    assert checkpoint["config"] == resolved.to_dict()
    assert checkpoint["spacing"] == {"mm": [2.0, 2.0, 2.0], "source": "training-set median rule"}
    assert (run / "split.json").is_file()

    rows = _rows(result.metrics_csv)
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["val_dice"] == ""  # no validation in epoch 1
    assert all(0.0 <= float(rows[i][f"val_{m}"]) <= 1.0 for i in (1, 2) for m in ("dice", "iou", "precision"))
    assert result.best_dice == pytest.approx(
        max(float(rows[1]["val_dice"]), float(rows[2]["val_dice"])), rel=1e-5
    )

    with Image.open(run / "curves.png") as png:
        assert png.format == "PNG"
        assert png.size[0] > 600

    lr = _scalars(run, "train/lr")
    assert sorted(lr) == list(range(1, 13))  # one value per iteration
    assert set(_scalars(run, "val/dice")) == {8, 12}
    assert len(_scalars(run, "train/loss")) == 12
    images = _events(run).Images("val/image_label_prediction")
    assert [i.step for i in images] == [8, 12]
    assert images[0].width == 3 * images[0].height  # image | label | prediction

    log = (run / "train.log").read_text()
    assert "epoch 3/3" in log
    assert "best validation dice" in log

    checkpoint = load_checkpoint(result.last_checkpoint)
    assert checkpoint["trainer"]["epoch"] == 3
    assert checkpoint["trainer"]["iteration"] == 12
    assert checkpoint["config"] == resolved.to_dict()
    assert {"torch", "monai", "pe_segmentation"} <= set(checkpoint["versions"])
    assert checkpoint["scheduler"]["last_epoch"] == 12
    assert isinstance(checkpoint["rng"]["ranks"][0]["torch"], torch.Tensor)
    assert load_checkpoint(result.best_checkpoint)["kind"] == "best"


def test_learning_rate_warms_up_from_a_tenth_per_iteration(reference_run):
    result, _config = reference_run
    lr = _scalars(result.run_dir, "train/lr")
    curve = {"base_lr": 0.01, "total_iterations": 12, "warmup_iterations": 4, "decay": "cosine"}
    assert lr[1] == pytest.approx(0.001)  # lr/10 at the first iteration
    assert lr[3] == pytest.approx(0.001 + 0.009 * 2 / 4)
    assert lr[5] == pytest.approx(0.01)  # warmup (1 epoch = 4 iterations) done
    for step, value in lr.items():
        assert value == pytest.approx(lr_at(step - 1, **curve), rel=1e-6)
    rows = _rows(result.metrics_csv)
    assert float(rows[2]["lr"]) == pytest.approx(lr_at(11, **curve), rel=1e-5)


def test_loss_decreases_on_a_learnable_toy_set(make_config):
    config = make_config(*LEARNS_THE_TOY_SET)
    result = run_training(config, progress=False)
    losses = [float(r["train_loss"]) for r in _rows(result.metrics_csv)]
    assert losses[-1] < 0.85 * losses[0], losses
    assert result.best_dice > 0.6


def test_same_seed_same_weights(make_config, reference_run):
    result, _config = reference_run
    again = run_training(make_config(*REFERENCE, run="again"), progress=False)
    assert _max_difference(_weights(again.last_checkpoint), _weights(result.last_checkpoint)) == 0.0
    other = run_training(make_config(*REFERENCE, "training.seed=1", run="seed1"), progress=False)
    assert _max_difference(_weights(other.last_checkpoint), _weights(result.last_checkpoint)) > 1e-3


def test_resume_continues_exactly(make_config, reference_run, caplog):
    reference, _ = reference_run
    config = make_config(*REFERENCE, run="interrupted")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(config, progress=False, handlers=[Crash(epoch=1)])
    assert load_checkpoint(config.output.run_dir + "/checkpoints/last.pt")["trainer"]["epoch"] == 1
    # what a kill during a checkpoint write leaves behind goes; other files stay
    checkpoints = Path(config.output.run_dir) / "checkpoints"
    (checkpoints / ".last.pt.k1ll3d_x.tmp.pt").write_bytes(b"partial")
    (checkpoints / ".notes.txt").write_text("mine")

    with caplog.at_level("WARNING"):
        resumed = run_training(config, resume=config.output.run_dir, progress=False)
    assert "removed 1 partial checkpoint file(s)" in caplog.text
    assert not (checkpoints / ".last.pt.k1ll3d_x.tmp.pt").exists()
    assert (checkpoints / ".notes.txt").read_text() == "mine"
    assert (resumed.epochs_run, resumed.iterations) == (3, 12)
    assert _max_difference(_weights(resumed.last_checkpoint), _weights(reference.last_checkpoint)) == 0.0
    a, b = load_checkpoint(resumed.last_checkpoint), load_checkpoint(reference.last_checkpoint)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 12
    assert a["trainer"] == b["trainer"]
    assert a["spacing"] == b["spacing"]  # the interrupted run's, kept by its resume
    assert a["config"]["preprocessing"] == b["config"]["preprocessing"]
    assert "changed config" not in caplog.text
    drop_time = [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(resumed.metrics_csv)]
    assert drop_time == [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(reference.metrics_csv)]
    assert _scalars(resumed.run_dir, "train/lr") == pytest.approx(_scalars(reference.run_dir, "train/lr"))

    done = run_training(config, resume=resumed.last_checkpoint, progress=False)  # nothing left to do
    assert (done.epochs_run, done.best_dice) == (3, resumed.best_dice)


def test_fine_tuning_starts_from_the_weights_only(make_config, reference_run):
    reference, _ = reference_run
    config = make_config(
        "training.epochs=1", "optimizer.lr=1e-12", "schedule.warmup_epochs=0", run="finetune"
    )
    tuned = run_training(config, init_weights=reference.best_checkpoint, progress=False)
    assert (tuned.epochs_run, tuned.iterations) == (1, 4)  # counters and schedule start afresh
    start = _weights(reference.best_checkpoint)
    assert _max_difference(_weights(tuned.last_checkpoint), start) < 1e-8
    fresh = run_training(make_config("training.epochs=1", "optimizer.lr=1e-12", run="fresh"), progress=False)
    assert _max_difference(_weights(fresh.last_checkpoint), start) > 1e-3


def test_checkpoint_of_another_architecture_is_refused(make_config, reference_run):
    reference, _ = reference_run
    r2 = make_config(run="r2", model={"name": "r2unet", "base_channels": 4, "depth": 2})
    with pytest.raises(CheckpointError, match=r"holds a 'unet' network; this run builds 'r2unet'"):
        run_training(r2, init_weights=reference.best_checkpoint, progress=False)
    wider = make_config(*REFERENCE, run="wide", model={"base_channels": 8})
    with pytest.raises(CheckpointError, match="shape"):
        run_training(wider, init_weights=reference.last_checkpoint, progress=False)


def test_a_finished_run_folder_is_not_overwritten(make_config, reference_run):
    _reference, config = reference_run
    with pytest.raises(ConfigError, match="already holds a run"):
        run_training(config, progress=False)


def test_early_stop_after_validations_without_improvement(make_config):
    config = make_config(
        "training.epochs=5", "optimizer.lr=1e-12", "training.early_stop_patience=1", run="stop"
    )
    result = run_training(config, progress=False)
    assert result.stopped_early
    assert result.epochs_run == 2
    assert result.best_epoch == 1
    assert len(_rows(result.metrics_csv)) == 2


def test_2d_network_bf16_channels_last_sgd_and_clipping(make_config):
    config = make_config(
        "training.epochs=1",
        "training.precision=bf16",
        "training.channels_last=true",
        "training.grad_clip=1.0",
        "optimizer.name=sgd",
        "patch.spatial_dims=2",
        "patch.patch_size=[16, 16]",
        "model.spatial_dims=2",
        run="2d",
    )
    result = run_training(config, progress=True)  # progress as plain lines (stderr is not a terminal here)
    row = _rows(result.metrics_csv)[0]
    assert math.isfinite(float(row["train_loss"]))
    assert 0.0 <= float(row["val_dice"]) <= 1.0  # whole volumes validated slice by slice
    assert "Iter: 4/4" in (result.run_dir / "train.log").read_text()


@pytest.mark.parametrize(
    "variant",
    [
        {"model": {"name": "nested_unet", "deep_supervision": True}, "loss": {"deep_supervision": True}},
        {"model": {"out_channels": 1}, "loss": {"name": "dice", "activation": "sigmoid"}},
    ],
    ids=["unet++-deep-supervision", "one-sigmoid-channel"],
)
def test_network_and_loss_variants_train_and_validate(make_config, variant):
    result = run_training(make_config("training.epochs=1", run="variant", **variant), progress=False)
    row = _rows(result.metrics_csv)[0]
    assert math.isfinite(float(row["train_loss"]))
    assert 0.0 <= float(row["val_dice"]) <= 1.0


def test_no_validation_split(make_config):
    result = run_training(make_config("training.epochs=1", "data.val_fraction=0", run="all"), progress=False)
    assert result.best_dice is None
    assert result.best_checkpoint is None
    assert result.iterations == 6  # all 6 cases x 2 patches / batch 2
    assert _rows(result.metrics_csv)[0]["val_dice"] == ""


def test_cpu_training_keeps_freed_memory_for_reuse(make_config, monkeypatch):
    """A CPU run sets malloc to reuse freed blocks (engine/allocator.py), before its first batch."""
    calls = []
    monkeypatch.setattr("pe_segmentation.training.launch.keep_freed_memory", lambda: calls.append(1))
    run_training(make_config("training.epochs=1", run="allocator"), progress=False)
    assert calls == [1]
