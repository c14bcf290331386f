"""Training-time domain randomisation in HU: contrast timing, HU offset, thick slices, noise and kernels."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose

from pe_segmentation.config import Config, load_config
from pe_segmentation.data.augmentation import build_hu_augmentation
from pe_segmentation.data.settings import AugmentationSettings, PatchSettings, PreprocessingSettings
from pe_segmentation.data.transforms import FINGERPRINT_ATTR, build_train_transforms
from pe_segmentation.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
REAL_RECIPES = ["unet", "r2unet", "attention_unet", "r2attention_unet", "nested_unet", "segresnet", "unet_2d"]
NO_RESAMPLE = PreprocessingSettings(spacing=None, crop_foreground=False)
OFF = {"flip": False, "rotate_range_deg": 0, "scale_range": 0, "scale_intensity": 0, "shift_intensity": 0}
OFF_WINDOWED = {**OFF, "noise_std": 0}

# The chain of build_train_transforms with the default settings, as it was before domain randomisation.
DEFAULT_CHAIN = [
    "LoadImaged",
    "EnsureChannelFirstd",
    "CheckLabelValuesd",
    "AsDiscreted",
    "Orientationd",
    "CropForegroundd",
    "Spacingd",
    "ScaleIntensityRanged",
    "EnsureTyped",
    "SpatialPadd",
    "ForegroundIndicesd",
    "RandOffsetPosNegCropd",
    "RandFlipd",
    "RandFlipd",
    "RandFlipd",
    "RandAffined",
    "RandScaleIntensityd",
    "RandShiftIntensityd",
    "RandGaussianNoised",
    "EnsureTyped",
]


def hu_chain(seed: int = 0, spatial_dims: int = 3, **settings: object) -> Compose:
    chain = Compose(build_hu_augmentation(AugmentationSettings(**settings), spatial_dims))  # type: ignore[arg-type]
    chain.set_random_state(seed=seed)
    return chain


def run(chain: Compose, image: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(chain({"image": image.clone()})["image"]).as_subclass(torch.Tensor)


def flat(value: float, shape: tuple[int, ...] = (1, 24, 24, 24)) -> torch.Tensor:
    return torch.full(shape, value, dtype=torch.float32)


def stripes(axis: int, shape: tuple[int, ...] = (1, 16, 16, 32)) -> torch.Tensor:
    """0 / 400 HU alternating every voxel along one spatial axis (constant along the others)."""
    index = torch.arange(shape[axis + 1]) % 2 * 400.0
    view = [1] * len(shape)
    view[axis + 1] = -1
    return index.view(view).expand(shape).clone()


def names(chain: Compose) -> list[str]:
    return [type(t).__name__ for t in chain.transforms]


def write_case(folder: Path) -> dict[str, str]:
    """A 0 HU body, a 350 HU "vessel" with a 40 HU labelled "clot" inside, -850 HU "lung" beside it."""
    image = np.zeros((40, 36, 30), np.int16)
    image[:, :, :] = 0
    image[5:35, 4:16, :] = -850
    image[5:35, 18:32, 5:25] = 350
    image[14:24, 22:28, 10:20] = 40
    label = np.zeros(image.shape, np.uint8)
    label[14:24, 22:28, 10:20] = 1
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), folder / "label.nii.gz")
    return {"image": str(folder / "ct.nii.gz"), "label": str(folder / "label.nii.gz")}


def test_defaults_are_off_and_leave_the_chain_as_it_was():
    aug = AugmentationSettings()
    assert not aug.has_hu
    assert all(getattr(aug, name) == 0 for name in AugmentationSettings.HU_PROBS)
    assert build_hu_augmentation(aug, 3) == []
    chain = build_train_transforms(aug=aug)
    assert names(chain) == DEFAULT_CHAIN
    # the cached prefix (and so a disk cache made before) is unchanged
    assert getattr(chain, FINGERPRINT_ATTR) == getattr(build_train_transforms(aug=None), FINGERPRINT_ATTR)


def test_recipes_without_the_keys_keep_them_off():
    assert not load_config(ROOT / "configs/demo.yaml").augmentation.has_hu
    assert not Config().augmentation.has_hu


@pytest.mark.parametrize("recipe", REAL_RECIPES)
def test_real_data_recipes_turn_them_on(recipe: str):
    aug = load_config(ROOT / f"configs/{recipe}.yaml").augmentation
    assert aug.has_hu
    assert aug.contrast_prob > 0
    assert aug.hu_noise_prob > 0
    assert aug.blur_prob > 0
    assert aug.sharpen_prob > 0
    assert (aug.thick_slice_prob > 0) == (recipe != "unet_2d")
    # the contrast range maps a typical 350 HU pulmonary trunk across the real 150-600 HU
    low, high = (40 + (350 - 40) * f for f in aug.contrast_scale)
    assert 150 <= low <= 200
    assert 550 <= high <= 600


def test_hu_augmentation_moves_the_window_after_the_patch():
    aug = AugmentationSettings(hu_noise_prob=0.5, contrast_prob=0.5)
    chain = names(build_train_transforms(aug=aug))
    crop = chain.index("RandOffsetPosNegCropd")
    assert chain.index("ScaleIntensityRanged") > chain.index("RandGaussianNoised") > crop
    assert chain[crop + 1 : crop + 3] == ["RandContrastEnhancementd", "RandGaussianNoised"]
    assert chain.index("ScaleIntensityRanged") < chain.index("RandFlipd")  # spatial augmentation pads with 0
    default = build_train_transforms(aug=AugmentationSettings())
    assert getattr(build_train_transforms(aug=aug), FINGERPRINT_ATTR) != getattr(default, FINGERPRINT_ATTR)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"hu_noise": 10}, r"augmentation.hu_noise: unknown key \(did you mean 'hu_noise_std'\?\)"),
        ({"contrast_prob": 1.5}, r"augmentation.contrast_prob: must be <= 1"),
        (
            {"contrast_scale": [1.5, 0.5]},
            r"augmentation.contrast_scale: expected \[low, high\] with low <= high",
        ),
        ({"contrast_scale": [0, 1]}, r"augmentation.contrast_scale: must be > 0"),
        ({"thick_slice_zoom": [0.2, 1.5]}, r"augmentation.thick_slice_zoom: must be <= 1"),
        ({"blur_sigma": 1.0}, r"augmentation.blur_sigma: expected a list of 2 values"),
        ({"hu_noise_std": -1}, r"augmentation.hu_noise_std: must be >= 0"),
        ({"hu_shift": ["a", 1]}, r"augmentation.hu_shift: expected a finite number"),
    ],
)
def test_settings_are_validated(data: dict[str, object], message: str):
    with pytest.raises(ConfigError, match=message):
        AugmentationSettings.from_dict(data)


def test_settings_round_trip_yaml_lists():
    aug = AugmentationSettings.from_dict({"hu_shift": [-10, "1e1"], "contrast_prob": 1})
    assert aug.hu_shift == (-10.0, 10.0)
    assert aug.contrast_prob == 1.0
    assert AugmentationSettings.from_dict(aug.to_dict()) == aug


def test_thick_slices_are_refused_for_2d_patches():
    with pytest.raises(ConfigError, match="thick_slice_prob"):
        build_hu_augmentation(AugmentationSettings(thick_slice_prob=0.5), 2)
    with pytest.raises(ConfigError, match="thick_slice_prob"):
        load_config(ROOT / "configs/unet_2d.yaml", ["augmentation.thick_slice_prob=0.2"])


def test_noise_sd_is_drawn_up_to_the_configured_value():
    sds = []
    for seed in range(150):
        out = run(hu_chain(seed, hu_noise_prob=1.0, hu_noise_std=30.0), flat(100.0))
        assert abs(float(out.mean()) - 100.0) < 1.0
        sds.append(float(out.std()))
    sds_arr = np.asarray(sds)
    assert sds_arr.max() <= 30.0 * 1.02
    assert sds_arr.max() > 28.0
    assert abs(sds_arr.mean() - 15.0) < 2.0  # drawn uniformly in [0, 30]


def test_noise_in_hu_is_clipped_by_the_window_afterwards(tmp_path: Path):
    aug = AugmentationSettings(hu_noise_prob=1.0, hu_noise_std=300.0, **OFF_WINDOWED)
    patch = PatchSettings(patch_size=(16, 16, 16), samples_per_volume=4, pos_fraction=0.5)
    chain = build_train_transforms(NO_RESAMPLE, patch, aug)
    chain.set_random_state(seed=1)
    for sample in chain(write_case(tmp_path)):
        assert float(sample["image"].min()) >= 0.0
        assert float(sample["image"].max()) <= 1.0
        assert len(torch.unique(sample["image"])) > 100


def test_hu_shift_moves_the_mean():
    assert torch.allclose(
        run(hu_chain(0, hu_shift_prob=1.0, hu_shift=(30.0, 30.0)), flat(100.0)), flat(130.0)
    )
    means = [
        float(run(hu_chain(s, hu_shift_prob=1.0, hu_shift=(-20.0, 20.0)), flat(100.0)).mean())
        for s in range(40)
    ]
    assert all(80.0 - 1e-4 <= m <= 120.0 + 1e-4 for m in means)
    assert max(means) > 110.0
    assert min(means) < 90.0
    assert torch.equal(run(hu_chain(0, hu_shift_prob=0.0), flat(100.0)), flat(100.0))  # off: no step at all


def test_contrast_scales_the_enhancement_only():
    image = torch.tensor([-1000.0, -850.0, -100.0, 0.0, 40.0, 60.0, 350.0, 600.0]).view(1, 8, 1, 1)
    out = run(hu_chain(0, contrast_prob=1.0, contrast_scale=(0.5, 0.5)), image).flatten()
    expected = torch.tensor([-1000.0, -850.0, -100.0, 0.0, 40.0, 50.0, 195.0, 320.0])
    assert torch.allclose(out, expected)
    trunk = [
        float(run(hu_chain(s, contrast_prob=1.0, contrast_scale=(0.4, 1.8)), flat(350.0)).mean())
        for s in range(40)
    ]
    assert all(40 + 310 * 0.4 - 1e-3 <= t <= 40 + 310 * 1.8 + 1e-3 for t in trunk)
    assert len({round(t, 3) for t in trunk}) == 40


def test_thick_slices_blur_along_z_only():
    chain = hu_chain(0, thick_slice_prob=1.0, thick_slice_zoom=(0.25, 0.25))
    z = stripes(2)
    out = run(chain, z)
    assert out.shape == z.shape
    assert float(out.std()) < 0.1 * float(z.std())  # 1-voxel stripes averaged over 4 slices: flat
    assert abs(float(out.mean()) - float(z.mean())) < 1.0  # averaging keeps the mean
    for axis in (0, 1):  # structure that does not vary along z is kept exactly
        in_plane = stripes(axis)
        assert torch.allclose(
            run(hu_chain(0, thick_slice_prob=1.0, thick_slice_zoom=(0.25, 0.25)), in_plane), in_plane
        )
    # the zoom is drawn from the range: a thin sheet spreads over 1 to 5 slices
    sheet = torch.zeros(1, 8, 8, 40)
    sheet[..., 20] = 1000.0
    spread = [
        int((run(hu_chain(s, thick_slice_prob=1.0, thick_slice_zoom=(0.2, 1.0)), sheet)[0, 4, 4] > 1).sum())
        for s in range(20)
    ]
    assert min(spread) >= 1
    assert max(spread) > 3


def test_blur_is_in_plane_and_sharpen_overshoots_edges():
    blur = hu_chain(0, blur_prob=1.0, blur_sigma=(1.0, 1.0))
    z = stripes(2)
    assert torch.allclose(run(blur, z), z, atol=0.05)  # along z untouched (kernel sums to 1 - 1e-5)
    x = stripes(0)
    assert float(run(blur, x).std()) < 0.5 * float(x.std())  # in-plane smoothed
    vessel = flat(400.0)  # the patch's own border is not faded towards 0 HU by the filters' zero padding
    assert torch.allclose(run(blur, vessel), vessel, atol=0.05)
    assert torch.allclose(run(hu_chain(0, sharpen_prob=1.0), vessel), vessel, atol=0.5)
    edge = torch.zeros(1, 24, 24, 24)
    edge[:, 12:] = 400.0
    sharp = run(hu_chain(0, sharpen_prob=1.0, sharpen_alpha=(2.0, 2.0)), edge)
    assert float(sharp.max()) > 420.0
    assert float(sharp.min()) < -20.0
    assert abs(float(sharp[0, 2:8].mean())) < 1.0
    assert abs(float(sharp[0, 16:22].mean()) - 400.0) < 1.0


ALL_ON = {
    "contrast_prob": 1.0,
    "hu_shift_prob": 1.0,
    "thick_slice_prob": 1.0,
    "hu_noise_prob": 1.0,
    "blur_prob": 1.0,
    "sharpen_prob": 1.0,
}


def test_deterministic_under_the_seed():
    image = stripes(0) + stripes(2)
    a, b = run(hu_chain(7, **ALL_ON), image), run(hu_chain(7, **ALL_ON), image)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(hu_chain(8, **ALL_ON), image))


def test_labels_are_untouched_and_patches_windowed(tmp_path: Path):
    case = write_case(tmp_path)
    patch = PatchSettings(patch_size=(16, 16, 16), samples_per_volume=3, pos_fraction=0.67)
    plain = build_train_transforms(NO_RESAMPLE, patch, AugmentationSettings(**OFF_WINDOWED))
    randomised = build_train_transforms(NO_RESAMPLE, patch, AugmentationSettings(**OFF_WINDOWED, **ALL_ON))
    plain.set_random_state(seed=3)
    randomised.set_random_state(seed=3)
    for before, after in zip(plain(dict(case)), randomised(dict(case)), strict=True):
        assert torch.equal(before["label"], after["label"])  # same patch, label as it was
        assert after["image"].dtype == torch.float32
        assert after["image"].shape == before["image"].shape
        assert float(after["image"].min()) >= 0.0
        assert float(after["image"].max()) <= 1.0
        assert not torch.equal(before["image"], after["image"])


def test_padding_is_air_below_the_window(tmp_path: Path):
    case = write_case(tmp_path)
    patch = PatchSettings(
        patch_size=(48, 40, 36), samples_per_volume=1, pos_fraction=1.0
    )  # larger than the volume
    aug = AugmentationSettings(hu_shift_prob=1.0, hu_shift=(20.0, 20.0), **OFF_WINDOWED)
    chain = build_train_transforms(NO_RESAMPLE, patch, aug)
    chain.set_random_state(seed=0)
    sample = chain(dict(case))[0]
    assert sample["image"].shape[1:] == (48, 40, 36)
    image = sample["image"][0]
    assert int(sample["label"].sum()) == 600
    # the 40 x 36 x 30 volume sits in the middle; around it air, still 0 after a 20 HU shift and the window
    assert torch.all(image[:4] == 0)
    assert torch.all(image[44:] == 0)
    assert torch.all(image[:, :, :3] == 0)
    assert torch.all(image[:, :, 33:] == 0)
    assert torch.allclose(
        image[6, 4, 5], torch.tensor(120.0 / 600.0)
    )  # original voxel (2, 2, 2): 0 HU + 20 HU
