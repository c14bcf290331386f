"""--memory-budget: the same probabilities as before the memory changes, a smaller plan under a small budget,
and refusals with exit code 7 that leave no case folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.utils import convert_to_numpy

from pe_segmentation.data.transforms import build_inference_transforms
from pe_segmentation.errors import EXIT_MEMORY
from pe_segmentation.inference import Predictor, memory
from pe_segmentation.inference.postprocess import GridMapping
from pe_segmentation.inference.preloaded import PreloadedReader
from pe_segmentation.inference.preprocessing import preprocess_volume, split_at_resampling
from pe_segmentation.io.volume_files import write_volume
from pe_segmentation.runtime.inferer import AutocastInferer, build_inferer
from pe_segmentation.runtime.memory_budget import GIB

from .helpers import make_ct, tiny_config, tiny_network

AFFINE = np.diag([-0.8, -0.8, 1.5, 1.0])  # LPS, as DICOM: reorientation flips two axes
HELD = 2 * GIB  # what the process is taken to hold, so that budgets are exact


def probability_before(predictor: Predictor, volume) -> np.ndarray:
    """The embolus probability on the CT's grid as pe-seg computed it before issue 21: the whole chain with
    float32 voxels, MONAI's sliding window with its whole-volume buffers, the sigmoid of the whole map."""
    chain = build_inference_transforms(predictor.config.preprocessing, reader=PreloadedReader(volume))
    before, after = split_at_resampling(chain)
    cropped = before({"image": "ct"})["image"]
    cropped_affine, cropped_shape = convert_to_numpy(cropped.affine), cropped.shape[1:]
    image = after({"image": cropped})["image"]
    inferer = build_inferer(predictor.config, predictor.overlap, predictor.sw_batch_size)
    wrapped = AutocastInferer(inferer, predictor.precision, predictor.memory_format)
    with torch.no_grad():
        log_odds = wrapped(image.as_tensor()[None], predictor.window_network)
    network = torch.sigmoid(torch.as_tensor(log_odds)[0, 0]).numpy()
    mapping = GridMapping.from_affines(
        volume.affine,
        volume.shape,
        cropped_affine,
        cropped_shape,
        convert_to_numpy(image.affine),
        network.shape,
    )
    return mapping.sample_all(network)


def predictor(budget_gb=None, **options):
    """A width-8 tiny UNet on 32^3 windows, two at a time (its activations outweigh its CT's other buffers)."""
    config = tiny_config(
        (1.5, 1.5, 2.5),
        inference={"sw_batch_size": 2},
        patch={"patch_size": [32, 32, 32]},
        model={"base_channels": 8},
    )
    return Predictor(tiny_network(config), config, "cpu", territory=False, memory_budget=budget_gb, **options)


def test_probabilities_equal_those_before_the_memory_changes():
    volume = make_ct(AFFINE, shape=(60, 50, 40))
    ours = predictor()  # precision auto: bf16 where the CPU has it, as users run it
    expected = probability_before(ours, volume)
    assert 0.05 < (expected >= 0.5).mean() < 0.95  # a mask worth comparing

    prediction = ours.predict(volume, full_probability=True)

    assert np.abs(prediction.probability.array - expected).max() <= 1e-6
    assert prediction.details["memory"] == {"sw_batch_size": 2, "stitch_dtype": "float32"}


def test_a_small_budget_takes_one_window_and_float16_and_gives_the_same_answer(monkeypatch):
    monkeypatch.setattr(memory, "process_rss_bytes", lambda: HELD)
    volume = make_ct(AFFINE, shape=(96, 80, 48))  # 4 windows
    roomy = predictor()
    grid = tuple(preprocess_volume(roomy.config.preprocessing, volume).tensor.shape[1:])
    stages = roomy.memory.stages(grid, volume.shape)
    need = {
        (b, d): max(e.total for e in stages(b, d)) for b in (1, 2) for d in (torch.float32, torch.float16)
    }
    assert need[1, torch.float16] < need[1, torch.float32] < need[2, torch.float32]
    budget = (HELD + need[1, torch.float16]) / GIB  # exactly enough for one window and float16 stitching

    expected = roomy.predict(volume, full_probability=True)
    tight = predictor(budget).predict(volume, full_probability=True)

    assert tight.details["memory"] == {"sw_batch_size": 1, "stitch_dtype": "float16"}
    difference = np.abs(tight.probability.array - expected.probability.array)
    assert difference.max() <= 1e-3  # float16 holds a probability to 2.4e-4
    near = np.abs(expected.probability.array - 0.5) <= 1e-3  # only there may a voxel cross the threshold
    assert np.array_equal(tight.mask.array[~near], expected.mask.array[~near])


def test_a_budget_below_one_window_is_refused_at_once(tmp_path, checkpoint, run_infer, capsys):
    path = write_volume(make_ct(AFFINE), tmp_path / "ct.nii.gz")
    code = run_infer(
        "-i", path, "-o", tmp_path / "out", "--checkpoint", checkpoint, "--memory-budget", "0.01"
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_MEMORY == 7
    assert err[-1].startswith("error: memory budget 0.01 GB is too small for this network: the process holds")
    assert not (tmp_path / "out").exists()  # refused before any output


def test_a_case_that_cannot_fit_is_refused_before_its_network_runs(
    tmp_path, checkpoint, run_infer, capsys, monkeypatch
):
    monkeypatch.setattr(memory, "process_rss_bytes", lambda: HELD)
    volume = make_ct(AFFINE, shape=(120, 110, 90))
    path = write_volume(volume, tmp_path / "ct.nii.gz")
    guard = predictor().memory
    one_window = guard.activation.for_batch(1, guard.roi_size)
    preprocess = memory.preprocess_estimate(volume, (1.5, 1.5, 2.5)).total
    assert one_window < preprocess  # a budget between the two lets the network start and refuses the CT
    budget = (HELD + (one_window + preprocess) / 2) / GIB
    ran = []
    monkeypatch.setattr(Predictor, "_window_run", lambda self: ran.append(1))

    code = run_infer(
        "-i", path, "-o", tmp_path / "out", "--checkpoint", checkpoint, "--memory-budget", budget
    )

    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_MEMORY
    assert err[-1].startswith(f"error: {path}: memory budget ")
    assert "preprocessing this 120x110x90 CT needs about" in err[-1]
    assert ran == []
    assert not (tmp_path / "out" / "ct").exists()


@pytest.mark.parametrize("bad", ["0", "-2"])
def test_a_budget_that_is_not_positive_is_a_bad_flag(tmp_path, checkpoint, run_infer, capsys, bad):
    path = write_volume(make_ct(AFFINE), tmp_path / "ct.nii.gz")
    assert (
        run_infer("-i", path, "-o", tmp_path / "out", "--checkpoint", checkpoint, "--memory-budget", bad) == 4
    )
    assert "--memory-budget must be > 0 GB" in capsys.readouterr().err
