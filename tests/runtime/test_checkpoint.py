"""Checkpoints: atomic writes, weights_only loading, clear refusals (corrupt, unsafe, other architecture)."""

from __future__ import annotations

import pathlib
import random

import numpy as np
import pytest
import torch

from pe_segmentation.errors import CheckpointError, OutputError
from pe_segmentation.networks import build_network
from pe_segmentation.runtime import checkpoint as ckpt
from pe_segmentation.runtime.checkpoint import (
    check_architecture,
    find_resume_checkpoint,
    get_rng_state,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    set_rng_state,
)

UNET = {"name": "unet", "base_channels": 4, "depth": 2}


def _net(name: str = "unet", **params) -> torch.nn.Module:
    return build_network(name, **{"base_channels": 4, "depth": 2, **params})


def _payload(model: torch.nn.Module) -> dict:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(1, 1, 8, 8, 8)).sum().backward()
    optimizer.step()
    return {
        "kind": "last",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "trainer": {"epoch": 3, "iteration": 12, "best_dice": None},
        "rng": {"world_size": 1, "ranks": [get_rng_state()]},
        "config": {"model": dict(UNET)},
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> pathlib.Path:
    model = _net()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoints" / "last.pt", _payload(model))


def test_round_trip_is_weights_only_loadable(saved):
    raw = torch.load(saved, weights_only=True)  # plain data only: no allow-listed globals needed
    assert raw["format"] == ckpt.CHECKPOINT_FORMAT
    assert all(isinstance(v, str) for v in raw["versions"].values())
    data = load_checkpoint(saved)
    model = _net()
    load_model_weights(model, data, UNET, str(saved))
    for key, value in model.state_dict().items():
        assert torch.equal(value, raw["model"][key])
    assert data["optimizer"]["state"][0]["step"] == 1
    assert data["trainer"]["iteration"] == 12
    assert not [p for p in saved.parent.iterdir() if p.name != "last.pt"]  # no temporary files left


def test_refuses_to_write_what_weights_only_cannot_read(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint.extra: object"):
        save_checkpoint(tmp_path / "x.pt", {"model": {}, "extra": object()})
    assert not list(tmp_path.iterdir())


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch, saved):
    target = tmp_path / "last.pt"
    target.write_bytes(saved.read_bytes())

    def broken_save(obj, path):
        pathlib.Path(path).write_bytes(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OutputError, match="No space left"):
        save_checkpoint(target, _payload(_net()))
    assert target.read_bytes() == saved.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("cut", ["half", "empty", "garbage"])
def test_corrupt_or_truncated_files_are_refused(tmp_path, saved, cut):
    data = saved.read_bytes()
    damaged = {"half": data[: len(data) // 2], "empty": b"", "garbage": b"\x00not a checkpoint" * 50}[cut]
    path = tmp_path / "damaged.pt"
    path.write_bytes(damaged)
    with pytest.raises(CheckpointError, match=r"damaged.pt: corrupt or truncated checkpoint"):
        load_checkpoint(path)


class _Payload:
    """Unpickling this runs ``marker.touch()``: what a malicious checkpoint would do with a shell command."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": _Payload(marker)}, path)
    with pytest.raises(
        CheckpointError, match=r"evil.pt: refused by weights_only loading.*Unsupported global"
    ):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file really is harmful: full unpickling runs the payload
    assert marker.exists()


def test_other_architecture_is_refused_with_one_line(saved):
    data = load_checkpoint(saved)
    with pytest.raises(CheckpointError, match=r"holds a 'unet' network; this run builds 'r2unet'"):
        check_architecture(data, _net("r2unet"), {"name": "r2unet"}, str(saved))
    with pytest.raises(
        CheckpointError, match=r"has shape \[4, 1, 3, 3, 3\] in the checkpoint, \[8, 1, 3, 3, 3\]"
    ):
        check_architecture(data, _net(base_channels=8), UNET)
    with pytest.raises(CheckpointError, match=r"do not fit the 'unet' network: \d+ missing"):
        check_architecture(data, _net(depth=3), UNET)
    message = ""
    try:
        check_architecture(data, _net("r2unet"), {"name": "r2unet"})
    except CheckpointError as err:
        message = str(err)
    assert "\n" not in message


def test_bare_state_dict_seeds_fine_tuning(tmp_path):
    model = _net()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    data = load_checkpoint(tmp_path / "weights.pt")
    assert set(data) == {"model"}
    other = _net()
    load_model_weights(other, data, UNET)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
    )


def test_not_a_checkpoint(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a pe-seg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_find_resume_checkpoint(saved, tmp_path):
    run_dir = saved.parent.parent
    assert find_resume_checkpoint(run_dir) == saved
    assert find_resume_checkpoint(saved) == saved
    assert ckpt.run_dir_of_checkpoint(saved) == run_dir.resolve()
    with pytest.raises(CheckpointError, match=r"no checkpoints/last\.pt"):
        find_resume_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such run folder"):
        find_resume_checkpoint(tmp_path / "nowhere")


def test_rng_states_round_trip():
    state = get_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2:] == again[2:]
