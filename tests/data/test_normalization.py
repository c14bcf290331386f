"""CT normalisation (``preprocessing.normalization``): the window and nnU-Net's foreground scheme, against values
worked out by hand."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pe_segmentation.config import Config, load_config
from pe_segmentation.data.normalization import NormalizationSettings
from pe_segmentation.data.settings import AugmentationSettings, PatchSettings, PreprocessingSettings
from pe_segmentation.data.transforms import (
    FINGERPRINT_ATTR,
    build_inference_transforms,
    build_preprocessing,
    build_train_transforms,
    build_val_transforms,
)
from pe_segmentation.errors import ConfigError
from pe_segmentation.runtime.inferer import build_inferer

ROOT = Path(__file__).resolve().parents[2]

#: The published nnU-Net PE plan's CT normalisation: clip -195..305 HU, mean 37, SD 92.
PUBLISHED = {"scheme": "ct_foreground", "clip": [-195, 305], "mean": 37, "std": 92}


def _settings(**changes) -> PreprocessingSettings:
    return PreprocessingSettings.from_dict(
        {"spacing": None, "crop_foreground": False, "normalization": PUBLISHED, **changes}
    )


def _write(folder: Path, values: list[int]) -> dict[str, str]:
    """One row of HU values along the first axis (4 voxels each), a label on the last value's voxels."""
    image = np.repeat(np.array(values, np.int16), 4)[:, None, None] * np.ones((1, 3, 2), np.int16)
    label = np.zeros(image.shape, np.uint8)
    label[-4:] = 1
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), folder / "label.nii.gz")
    return {"image": str(folder / "ct.nii.gz"), "label": str(folder / "label.nii.gz")}


def test_ct_foreground_clips_then_subtracts_the_mean_and_divides_by_the_sd(tmp_path: Path):
    case = _write(tmp_path, [-1000, -195, -55, 37, 129, 305, 800])
    out = build_preprocessing(_settings(), keys=("image",))({"image": case["image"]})["image"]
    got = out[0, ::4, 0, 0].numpy()
    # -1000 and 800 are clipped to -195 and 305; then (HU - 37) / 92
    expected = [-232 / 92, -232 / 92, -1.0, 0.0, 1.0, 268 / 92, 268 / 92]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert out.dtype == torch.float32


def test_the_intensity_map_of_each_scheme():
    window = PreprocessingSettings(hu_window=(-100, 500))
    assert window.intensity_map == (-100.0, 500.0, 0.0, 1.0)
    assert window.air_value == 0.0
    low, high, b_low, b_high = _settings().intensity_map
    assert (low, high) == (-195.0, 305.0)
    assert b_low == pytest.approx(-2.5217391)
    assert b_high == pytest.approx(2.9130435)


def test_inference_validation_and_training_share_the_normalisation(tmp_path: Path):
    case = _write(tmp_path, [-300, 0, 100, 400])
    settings = _settings()
    inferred = build_inference_transforms(settings)({"image": case["image"]})["image"]
    validated = build_val_transforms(settings)(dict(case))["image"]
    torch.testing.assert_close(inferred.as_tensor(), validated.as_tensor())
    patch = PatchSettings(patch_size=(16, 3, 2), samples_per_volume=1, pos_fraction=1.0)
    trained = build_train_transforms(settings, patch, None)(dict(case))[0]["image"]
    # every patch value is one of the four normalised values
    allowed = torch.tensor([-232 / 92, -37 / 92, 63 / 92, 268 / 92])
    assert torch.all((trained.as_tensor().reshape(-1, 1) - allowed).abs().min(dim=1).values < 1e-5)


@pytest.mark.parametrize("hu_augmentation", [False, True])
def test_patches_are_padded_with_normalised_air(tmp_path: Path, hu_augmentation: bool):
    case = _write(tmp_path, [0, 37, 129])  # a 12 x 3 x 2 volume in a 16 x 8 x 4 patch
    patch = PatchSettings(patch_size=(16, 8, 4), samples_per_volume=1, pos_fraction=1.0)
    aug = None
    if hu_augmentation:  # then cut in HU, padded with -1024 HU, clipped to -195 HU by the normalisation
        off = {"flip": False, "rotate_range_deg": 0, "scale_range": 0, "scale_intensity": 0}
        aug = AugmentationSettings(
            **off, shift_intensity=0, noise_std=0, hu_shift_prob=1.0, hu_shift=(0.0, 0.0)
        )
    chain = build_train_transforms(_settings(), patch, aug)
    chain.set_random_state(seed=0)
    sample = chain(dict(case))[0]
    image, label = sample["image"][0], sample["label"][0]
    assert image.shape == (16, 8, 4)
    assert int(label.sum()) == 4 * 3 * 2
    air = -232 / 92
    padded = label == 0
    padded[image > air + 1e-4] = False  # the volume itself holds 0, 37 and 129 HU, all above air
    assert int(padded.sum()) == 16 * 8 * 4 - 12 * 3 * 2
    assert torch.allclose(image[padded], torch.tensor(air), atol=1e-5)


def test_the_default_window_keeps_its_fingerprint_and_the_scheme_enters_it():
    default = getattr(build_preprocessing(PreprocessingSettings()), FINGERPRINT_ATTR)
    assert "normalization" not in default  # caches written before the setting existed stay valid
    foreground = getattr(build_preprocessing(_settings()), FINGERPRINT_ATTR)
    other = getattr(build_preprocessing(_settings(normalization={**PUBLISHED, "std": 90})), FINGERPRINT_ATTR)
    assert "ct_foreground" in foreground
    assert foreground != other


def test_round_trip_and_configs_saved_before_the_setting():
    settings = _settings()
    assert settings.normalization == NormalizationSettings("ct_foreground", (-195.0, 305.0), 37.0, 92.0)
    assert PreprocessingSettings.from_dict(settings.to_dict()) == settings
    assert settings.to_dict()["normalization"] == PUBLISHED
    old = Config().to_dict()
    del old["preprocessing"]["normalization"]  # a checkpoint's config from before this setting
    assert Config.from_dict(old).preprocessing.normalization.scheme == "window"


def test_sliding_windows_pad_with_normalised_air():
    config = Config.from_dict({"preprocessing": {"normalization": PUBLISHED}})
    assert build_inferer(config).cval == pytest.approx(-232 / 92)
    assert build_inferer(Config()).cval == 0.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "preprocessing.normalization.scheme=ct_foregrund",
            "preprocessing.normalization.scheme: expected one of window, ct_foreground, got 'ct_foregrund' "
            "(did you mean 'ct_foreground'?)",
        ),
        (
            "preprocessing.normalization.scheme=ct_foreground",
            "preprocessing.normalization.clip: scheme ct_foreground needs clip, mean and std",
        ),
        (
            "preprocessing.normalization.mean=37",
            "preprocessing.normalization.mean: used by scheme ct_foreground only",
        ),
        (
            "preprocessing.normalization.men=37",
            "preprocessing.normalization.men: unknown key (did you mean 'mean'?)",
        ),
        ("preprocessing.normalization=zscore", "preprocessing.normalization: expected a mapping"),
    ],
)
def test_bad_normalisation_names_the_key_path(override: str, message: str):
    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "configs/unet.yaml", [override])
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"std": 0}, "preprocessing.normalization.std: must be > 0, got 0"),
        ({"clip": [305, -195]}, "preprocessing.normalization.clip: low must be below high"),
        ({"clip": [0]}, "preprocessing.normalization.clip: expected a list of 2 values"),
        ({"mean": "high"}, "preprocessing.normalization.mean: expected a finite number"),
    ],
)
def test_bad_foreground_statistics_are_refused(changes: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        _settings(normalization={**PUBLISHED, **changes})
