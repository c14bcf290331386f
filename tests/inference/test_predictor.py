"""The predictor: the same mask as MONAI step by step, the input's geometry, threshold, clot size, TTA, --fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_affine
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer

from pe_segmentation.config import replace_section
from pe_segmentation.data.transforms import build_inference_transforms, build_inverse
from pe_segmentation.errors import CheckpointError, ConfigError
from pe_segmentation.inference.predictor import FAST_OVERLAP, FAST_SPACING_FACTOR, Predictor
from pe_segmentation.inference.window_network import EmbolusLogit, flip_combinations
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import write_volume
from pe_segmentation.runtime.checkpoint import save_checkpoint

from .helpers import IntensityNet, make_ct, own_spacing, tiny_config, tiny_network

GEOMETRIES = {
    "axial": make_affine((0.9, 1.1, 2.0)),
    "oblique": make_affine((0.9, 1.1, 2.0), euler_deg=(10.0, 20.0, 5.0)),
    "permuted": make_affine((0.9, 1.1, 2.0), euler_deg=(90.0, 0.0, 30.0)),  # axes reordered to reach RAS
}


def monai_reference(config, network, path: str) -> np.ndarray:
    """The embolus probability as a MONAI user computes it: LoadImaged ... Spacingd, SlidingWindowInferer,
    softmax, Invertd (bilinear) back onto the input grid."""
    chain = build_inference_transforms(config.preprocessing)
    data = chain({"image": path})
    roi = tuple(config.patch.patch_size)
    inferer = SlidingWindowInferer(
        roi, config.inference.sw_batch_size, config.inference.overlap, mode="gaussian"
    )
    with torch.no_grad():
        logits = inferer(data["image"][None], network)
    probability = torch.softmax(torch.as_tensor(logits), dim=1)[0, 1:2]
    data["pred"] = MetaTensor(
        probability, meta=data["image"].meta, applied_operations=data["image"].applied_operations
    )
    return build_inverse(chain, keys=("pred",), orig_key="image")(data)["pred"][0].numpy()


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("spacing", [(1.5, 1.5, 2.5), (0.7, 0.8, 1.0), (0.9, 1.1, 2.0)])
def test_mask_equals_monai_step_by_step(tmp_path, geometry, spacing):
    config = tiny_config(spacing)
    network = tiny_network(config)
    path = write_volume(make_ct(GEOMETRIES[geometry]), tmp_path / "ct.nii.gz")
    reference = monai_reference(config, network, str(path))

    predictor = Predictor(network, config, "cpu", "fp32", channels_last=False, territory=False)
    prediction = predictor.predict(path)
    expected = reference >= 0.5
    assert 0 < expected.sum() < expected.size
    differs = prediction.mask.array.astype(bool) != expected
    # floating-point rounding may only flip voxels whose probability is within 1e-5 of the threshold
    assert not (differs & (np.abs(reference - 0.5) > 1e-5)).any()
    assert differs.sum() <= 2

    complete = predictor.predict(path, full_probability=True)
    np.testing.assert_allclose(complete.probability.array, reference, atol=2e-5)
    np.testing.assert_array_equal(complete.mask.array, prediction.mask.array)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_outputs_have_the_geometry_of_a_nifti_input(tmp_path, geometry):
    image = make_ct(GEOMETRIES[geometry], shape=(33, 27, 21))
    path = write_volume(image, tmp_path / "ct.nii.gz")
    config = tiny_config((1.3, 1.7, 2.2))
    prediction = Predictor(tiny_network(config), config, "cpu", "auto", territory=False).predict(
        path, full_probability=True
    )
    for volume in (prediction.mask, prediction.probability):
        assert volume.shape == image.shape
        np.testing.assert_allclose(volume.affine, image.affine, atol=1e-4)
    assert prediction.mask.array.dtype == np.uint8
    assert set(np.unique(prediction.mask.array)) <= {0, 1}
    assert prediction.image.shape == image.shape
    assert set(prediction.seconds) == {"load", "quality", "preprocess", "network", "postprocess"}


@pytest.mark.parametrize(
    "euler_deg",
    [
        (5.0, -12.0, 20.0),
        (185.0, -12.0, 20.0),
    ],  # the second turns the slice normal around: the other slice order
    ids=["oblique", "oblique-reversed-slice-order"],
)
def test_outputs_have_the_geometry_of_an_oblique_dicom_series(series_writer, euler_deg):
    image = make_ct(make_affine((0.8, 0.9, 1.5), euler_deg=euler_deg), shape=(30, 28, 16))
    folder = series_writer(image, "oblique")
    source = read_dicom_series(folder).volume
    config = tiny_config((1.2, 1.2, 2.0))
    prediction = Predictor(tiny_network(config), config, "cpu", "fp32", territory=False).predict(folder)
    assert prediction.mask.shape == source.shape
    np.testing.assert_allclose(prediction.mask.affine, source.affine, atol=1e-4)
    assert prediction.image.metadata["sop_instance_uids"] == source.metadata["sop_instance_uids"]


def _planted(shape=(24, 22, 20)) -> Volume:
    """Soft tissue at 100 HU with two bright blocks (400 HU): 2x2x2 and 3x4x5 voxels."""
    array = np.full(shape, 100, np.int16)
    array[2:4, 2:4, 2:4] = 400
    array[10:13, 10:14, 8:13] = 400
    array[0, 0, 0] = -1000  # keeps the body crop meaningful
    return Volume(array, make_affine((0.5, 1.0, 2.0), euler_deg=(0.0, 0.0, 90.0)))


def test_threshold_and_minimum_volume(tmp_path):
    # identity preprocessing grid: the probability on the input grid is sigmoid(40 (windowed - 0.5))
    image = _planted()
    config = tiny_config(own_spacing(image), crop=False)
    windowed = np.clip((image.array + 100) / 600, 0, 1)  # 100 HU -> 0.33, 400 HU -> 0.83
    probability = 1 / (1 + np.exp(-40 * (windowed - 0.5)))

    for threshold in (0.2, 0.5, 0.99):
        prediction = Predictor(
            IntensityNet(), config, "cpu", "fp32", threshold=threshold, territory=False
        ).predict(image)
        np.testing.assert_array_equal(prediction.mask.array, probability >= threshold)
        assert prediction.mask.array.sum() == 8 + 60
        inside = prediction.mask.array[prediction.roi].astype(bool)
        np.testing.assert_allclose(
            prediction.roi_probability[inside], probability[prediction.mask.array == 1], rtol=1e-5
        )
    assert Predictor(IntensityNet(), config, "cpu", "fp32", threshold=1.0).predict(image).roi is None

    # voxels are 1 mm^3: the 8-voxel block is 8 mm^3, the other 60 mm^3
    for min_volume, expected in ((0.0, 68), (8.0, 68), (8.1, 60), (60.0, 60), (61.0, 0)):
        predictor = Predictor(
            IntensityNet(), config, "cpu", "fp32", min_volume_mm3=min_volume, territory=False
        )
        prediction = predictor.predict(image)
        assert prediction.mask.array.sum() == expected, min_volume
        if expected == 60:
            assert prediction.roi == (slice(10, 13), slice(10, 14), slice(8, 13))
            assert prediction.roi_probability.shape == (3, 4, 5)
        if expected == 0:
            assert prediction.roi is None


def test_min_peak_keeps_the_clots_the_network_is_sure_of_whole():
    """Hysteresis: the 2x2x2 block at 0.55 HU-window units peaks at sigmoid(40 x 0.05) = 0.881, the other at
    0.83 (sigmoid(13.3) = 0.9999983); with threshold 0.5 and min_peak 0.9 only the bright block stays, with
    all its voxels, and the report counts the dropped clot."""
    image = _planted()
    image.array[2:4, 2:4, 2:4] = 230  # windowed (230 + 100) / 600 = 0.55
    config = tiny_config(own_spacing(image), crop=False)
    for min_peak, expected, dropped in (
        (0.0, 68, 0),
        (0.5, 68, 0),
        (0.88, 68, 0),
        (0.9, 60, 1),
        (0.9999, 60, 1),
        (1.0, 0, 2),
    ):
        prediction = Predictor(
            IntensityNet(), config, "cpu", "fp32", threshold=0.5, min_peak=min_peak, territory=False
        ).predict(image)
        assert prediction.mask.array.sum() == expected, min_peak
        assert prediction.details["dropped_low_peak_clots"] == dropped
        assert prediction.details["min_peak"] == min_peak


def test_settings_are_checked():
    config = tiny_config()
    network = tiny_network(config)
    for kwargs, message in (
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"min_volume_mm3": -1.0}, "min volume"),
        ({"min_peak": 1.5}, "min peak"),
        ({"overlap": 1.0}, "overlap"),
        ({"sw_batch_size": 0}, "batch"),
    ):
        with pytest.raises(ConfigError, match=message):
            Predictor(network, config, "cpu", "fp32", **kwargs)
    with pytest.raises(ConfigError, match="--precision"):
        Predictor(network, config, "cpu", "fp16")


def test_tta_makes_the_prediction_of_a_symmetric_input_symmetric():
    # one window covering the whole 16^3 volume: the only asymmetry left is the network's own
    config = tiny_config((1.0, 1.0, 1.0), crop=False)
    rng = np.random.default_rng(1)
    octant = rng.normal(200, 250, (8, 8, 8))
    array = np.concatenate([octant, octant[::-1]], axis=0)
    array = np.concatenate([array, array[:, ::-1]], axis=1)
    array = np.concatenate([array, array[:, :, ::-1]], axis=2).astype(np.float32)
    image = Volume(array, np.diag([1.0, 1.0, 1.0, 1.0]))
    network = tiny_network(config, seed=3)

    def flipped(values: np.ndarray) -> list[np.ndarray]:
        return [np.flip(values, axis) for axis in ((0,), (1,), (2,), (0, 1, 2))]

    plain = (
        Predictor(network, config, "cpu", "fp32", territory=False)
        .predict(image, full_probability=True)
        .probability.array
    )
    assert max(np.abs(plain - f).max() for f in flipped(plain)) > 1e-3  # the network alone is not symmetric

    with_tta = Predictor(network, config, "cpu", "fp32", tta=True, territory=False).predict(
        image, full_probability=True
    )
    probability = with_tta.probability.array
    for f in flipped(probability):
        np.testing.assert_allclose(probability, f, atol=1e-5)

    # and the prediction commutes with flipping the input
    other = Volume(np.ascontiguousarray(array[::-1]), image.affine)
    turned = Predictor(network, config, "cpu", "fp32", tta=True, territory=False).predict(
        other, full_probability=True
    )
    np.testing.assert_allclose(turned.probability.array, probability[::-1], atol=1e-5)


def test_flip_combinations():
    assert flip_combinations(3) == [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    assert flip_combinations(2) == [(), (2,), (3,), (2, 3)]


def test_embolus_logit_is_the_log_odds_of_the_softmax():
    logits = torch.randn(2, 3, 4, 4, 4)
    for channels in (2, 3):
        wrapped = EmbolusLogit(lambda x, c=channels: x[:, :c])
        log_odds = wrapped(logits)
        probability = torch.softmax(logits[:, :channels], dim=1)[:, 1:2]
        torch.testing.assert_close(torch.sigmoid(log_odds), probability, atol=1e-6, rtol=1e-5)
        assert log_odds.dtype == torch.float32
    single = EmbolusLogit(lambda x: x[:, :1])
    torch.testing.assert_close(single(logits), logits[:, :1])
    with pytest.raises(ValueError, match="embolus channel"):
        EmbolusLogit(lambda x: x, embolus_channel=5)(logits)


def test_fast_mode_is_coarser_with_less_overlap_and_keeps_the_geometry(tmp_path):
    config = tiny_config((1.0, 1.0, 2.0))
    image = make_ct(GEOMETRIES["oblique"])
    network = tiny_network(config)
    normal = Predictor(network, config, "cpu", "fp32")
    fast = Predictor(network, config, "cpu", "fp32", fast=True)
    assert fast.config.preprocessing.spacing == pytest.approx(
        [v * FAST_SPACING_FACTOR for v in (1.0, 1.0, 2.0)]
    )
    assert fast.overlap == FAST_OVERLAP
    assert fast.trained_config is config
    assert Predictor(network, config, "cpu", "fp32", fast=True, overlap=0.5).overlap == 0.5
    a, b = normal.predict(image), fast.predict(image)
    assert np.prod(b.details["network_grid"]) < np.prod(a.details["network_grid"]) / 2.5
    assert b.mask.shape == image.shape
    np.testing.assert_allclose(b.mask.affine, image.affine, atol=1e-4)


@pytest.mark.parametrize("spacing", [None, [1.0, 1.0, None]])
def test_a_config_without_a_fixed_spacing_is_refused(spacing):
    config = replace_section(tiny_config(), "preprocessing", spacing=spacing)
    with pytest.raises(ConfigError, match="needs the one spacing its network was trained at"):
        Predictor(tiny_network(tiny_config()), config, "cpu", "fp32")


def test_channels_last_and_bf16_agree_with_fp32():
    config = tiny_config()
    image = make_ct(GEOMETRIES["oblique"])
    network = tiny_network(config)
    reference = Predictor(network, config, "cpu", "fp32", channels_last=False).predict(
        image, full_probability=True
    )
    for precision, tolerance in (("fp32", 1e-4), ("bf16", 0.05)):
        other = Predictor(network, config, "cpu", precision, channels_last=True).predict(
            image, full_probability=True
        )
        assert np.abs(other.probability.array - reference.probability.array).max() < tolerance


def test_from_checkpoint(tmp_path, checkpoint):
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", precision="fp32", threshold=0.3, tta=True)
    assert predictor.config.patch.patch_size == (16, 16, 16)
    assert predictor.threshold == 0.3
    assert predictor.tta
    assert predictor.model_info["name"] == "unet"
    assert predictor.model_info["epoch"] == 3
    assert predictor.model_info["file"] == "model.pt"
    state = torch.load(checkpoint, weights_only=True)["model"]
    for key, value in predictor.network.state_dict().items():
        torch.testing.assert_close(value, state[key])

    bare = tmp_path / "bare.pt"
    torch.save(state, bare)
    with pytest.raises(CheckpointError, match="no training config"):
        Predictor.from_checkpoint(bare, device="cpu")
    other = tiny_config(model={"base_channels": 8})
    wrong = save_checkpoint(tmp_path / "wrong.pt", {"model": state, "config": other.to_dict()})
    with pytest.raises(CheckpointError, match="do not fit"):
        Predictor.from_checkpoint(wrong, device="cpu")


def test_cpu_prediction_keeps_freed_memory_for_reuse(monkeypatch):
    """On a CPU the predictor sets malloc to reuse freed blocks (a third of the network's time, engine/allocator)."""
    calls = []
    monkeypatch.setattr("pe_segmentation.inference.predictor.keep_freed_memory", lambda: calls.append(1))
    Predictor(IntensityNet(), tiny_config(), "cpu", "fp32")
    assert calls == [1]
