"""Training from the preprocessed store (``data.cache: store``): ``pe-seg preprocess`` ahead, persistent
workers, and DDP with 2 gloo processes sharing one store."""

from __future__ import annotations

import pytest
import torch

from pe_segmentation.cli import main
from pe_segmentation.config import config_to_yaml
from pe_segmentation.data.store import CASE_FILE
from pe_segmentation.runtime import load_checkpoint
from pe_segmentation.training import run_training, train_distributed
from pe_segmentation.training.data import build_train_batches, load_cases

pytestmark = pytest.mark.slow


def _store_files(store_dir):
    return {str(p): p.stat().st_mtime_ns for p in store_dir.rglob("*") if p.is_file()}


def test_preprocess_then_train_reads_the_store_without_rewriting_it(tmp_path, make_config, capsys):
    store_dir = tmp_path / "store"
    config = make_config("data.cache=store", "training.epochs=1")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(config_to_yaml(config))
    assert main(["preprocess", "--config", str(recipe), "--store", str(store_dir)]) == 0
    printed = capsys.readouterr().out
    assert "6 case(s), 6 preprocessed now" in printed
    assert "0 reused" in printed
    cases = sorted(p.parent.name for p in store_dir.rglob(CASE_FILE))
    assert len(cases) == 6
    assert cases[0].startswith("toy_00-")
    before = _store_files(store_dir)

    result = run_training(
        make_config("data.cache=store", "training.epochs=1", f"data.store_dir={store_dir}"), progress=False
    )
    assert result.best_dice is not None
    assert result.iterations == 4  # 4 training cases, 2 patches each, batches of 2
    assert _store_files(store_dir) == before  # the run found every case there: nothing rewritten
    assert "0 of 6 case(s) preprocessed now" in (result.run_dir / "train.log").read_text()


def test_persistent_workers_train_as_the_main_process_does(tmp_path, make_config):
    """Each volume's patches come from its own seed, so 1 worker (kept across the 2 epochs) gives the weights
    of no worker."""
    store = ("data.cache=store", f"data.store_dir={tmp_path / 'store'}", "training.augment=true")
    config = make_config(*store, "data.num_workers=1", run="workers")
    batches = build_train_batches(config, load_cases(config.data, tmp_path), tmp_path)
    assert batches.loader.persistent_workers
    weights = {}
    for workers in (0, 1):
        result = run_training(
            make_config(*store, f"data.num_workers={workers}", run=f"w{workers}"), progress=False
        )
        weights[workers] = load_checkpoint(result.last_checkpoint)["model"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_two_gloo_processes_share_out_the_preprocessing_and_train_from_one_store(tmp_path, make_config):
    store_dir = tmp_path / "store"
    config = make_config(
        "data.cache=store",
        f"data.store_dir={store_dir}",
        "training.distributed=true",
        "training.epochs=1",
        "training.batch_size=1",
        "patch.samples_per_volume=1",
        run="ddp",
    )
    result = train_distributed(config, 2, progress=False)
    # 4 training volumes, 2 per process, one patch per iteration: 2 iterations
    assert result.iterations == 2
    assert result.best_dice is not None
    # rank 0 preprocessed every second case of the 6 (training and validation), rank 1 the others
    assert "3 of 6 case(s) preprocessed now" in (result.run_dir / "train.log").read_text()
    assert len(list(store_dir.rglob(CASE_FILE))) == 6
