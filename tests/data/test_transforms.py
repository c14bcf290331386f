"""Transform chains on tiny synthetic CTs whose expected outputs can be worked out by hand."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pe_segmentation.data.sampling import RandOffsetPosNegCropd
from pe_segmentation.data.settings import AugmentationSettings, PatchSettings, PreprocessingSettings
from pe_segmentation.data.transforms import (
    FINGERPRINT_ATTR,
    BodyMask,
    build_inference_transforms,
    build_inverse,
    build_preprocessing,
    build_train_transforms,
    build_val_transforms,
    default_reader,
)
from pe_segmentation.errors import ConfigError

SHAPE = (40, 36, 30)
BODY = (slice(5, 35), slice(4, 30), slice(3, 27))  # body box, voxel indices of the written file
CUBE = (slice(14, 22), slice(12, 20), slice(10, 18))  # the "embolus", inside the body
LPS_AFFINE = np.array([[-0.8, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])
RAS_AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])

NO_RESAMPLE = PreprocessingSettings(spacing=None, crop_foreground=False)


def write_case(folder: Path, affine: np.ndarray = LPS_AFFINE, label_value: int = 1) -> dict[str, str]:
    """Air (-1000 HU), a body box of soft tissue (0 HU) and a 500 HU cube labelled as embolus."""
    image = np.full(SHAPE, -1000, np.int16)
    image[BODY] = 0
    image[CUBE] = 500
    label = np.zeros(SHAPE, np.uint8)
    label[CUBE] = label_value
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), folder / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), folder / "label.nii.gz")
    return {"image": str(folder / "ct.nii.gz"), "label": str(folder / "label.nii.gz")}


@pytest.fixture
def case(tmp_path: Path) -> dict[str, str]:
    return write_case(tmp_path / "case")


def world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    index = np.argwhere(mask > 0.5).mean(axis=0)
    return (np.asarray(affine, dtype=float) @ np.append(index, 1.0))[:3]


def test_default_reader_is_pe_seg_reader():
    from pe_segmentation.io.monai_reader import PESegReader

    assert isinstance(default_reader(), PESegReader)


def test_hu_window_maps_to_unit_range(tmp_path: Path):
    values = np.array([-1000, -100, 50, 200, 500, 800], np.int16)
    image = np.repeat(values, 4)[:, None, None] * np.ones((1, 3, 2), np.int16)  # (24, 3, 2)
    nib.save(nib.Nifti1Image(image, RAS_AFFINE), tmp_path / "ct.nii.gz")
    out = build_preprocessing(NO_RESAMPLE, keys=("image",))({"image": str(tmp_path / "ct.nii.gz")})["image"]
    assert out.shape == (1, 24, 3, 2)
    assert out.dtype == torch.float32
    got = out[0, ::4, 0, 0].numpy()
    np.testing.assert_allclose(got, [0.0, 0.0, 0.25, 0.5, 1.0, 1.0], atol=1e-6)


def test_custom_window(tmp_path: Path):
    image = np.array([[[-600]], [[-400]], [[-200]]], np.int16)
    nib.save(nib.Nifti1Image(image, RAS_AFFINE), tmp_path / "ct.nii.gz")
    settings = PreprocessingSettings(spacing=None, crop_foreground=False, hu_window=(-600, -200))
    out = build_preprocessing(settings, keys=("image",))({"image": str(tmp_path / "ct.nii.gz")})["image"]
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [0.0, 0.5, 1.0], atol=1e-6)


def test_orientation_ras_and_resampling(case: dict[str, str]):
    settings = PreprocessingSettings(spacing=(1.0, 1.0, 1.0), crop_foreground=False)
    out = build_preprocessing(settings)(dict(case))
    image, label = out["image"], out["label"]
    np.testing.assert_allclose(image.affine[:3, :3].numpy(), np.eye(3), atol=1e-6)  # RAS, 1 mm
    np.testing.assert_allclose(label.affine.numpy(), image.affine.numpy())
    assert image.shape == label.shape
    # extent kept: 40 x 0.8 mm, 36 x 0.8 mm, 30 x 2 mm (MONAI spans first to last voxel centre)
    assert tuple(image.shape[1:]) == (32, 29, 59)
    assert set(torch.unique(label).tolist()) == {0.0, 1.0}
    # the embolus stays at the same place in the patient, and the bright cube stays under the label
    np.testing.assert_allclose(
        world_centroid(label[0].numpy(), label.affine.numpy()),
        world_centroid(nib.load(case["label"]).get_fdata(), LPS_AFFINE),
        atol=0.5,
    )
    inside = image[label > 0.5]
    # only edge voxels blend (bilinear image, nearest label, ties at half-voxel positions)
    assert (inside > 0.99).float().mean() > 0.6
    assert inside.mean() > 0.9


def test_keep_one_axis_spacing(case: dict[str, str]):
    settings = PreprocessingSettings(spacing=(1.0, 1.0, None), crop_foreground=False)
    image = build_preprocessing(settings, keys=("image",))({"image": case["image"]})["image"]
    np.testing.assert_allclose(np.diag(image.affine.numpy())[:3], [1.0, 1.0, 2.0], atol=1e-6)
    assert image.shape[-1] == SHAPE[2]


def test_foreground_crop_bounds_in_hu_before_window(tmp_path: Path):
    image = np.full(SHAPE, -1000, np.int16)
    image[BODY] = -300  # inside the body, but below the window: windows to 0 like air
    image[CUBE] = 500
    nib.save(nib.Nifti1Image(image, RAS_AFFINE), tmp_path / "ct.nii.gz")
    settings = PreprocessingSettings(spacing=None, margin=2)
    out = build_preprocessing(settings, keys=("image",))({"image": str(tmp_path / "ct.nii.gz")})["image"]
    # body box [5:35, 4:30, 3:27] grown by 2 voxels: [3:37, 2:32, 1:29]
    assert tuple(out.shape[1:]) == (34, 30, 28)
    np.testing.assert_allclose(out.affine[:3, 3].numpy(), [3.0, 2.0, 1.0])
    assert out.max() == 1.0


def test_crop_margin_clipped_at_image_edge(tmp_path: Path):
    image = np.full(SHAPE, 0, np.int16)  # body everywhere
    nib.save(nib.Nifti1Image(image, RAS_AFFINE), tmp_path / "ct.nii.gz")
    out = build_preprocessing(PreprocessingSettings(spacing=None, margin=5), keys=("image",))(
        {"image": str(tmp_path / "ct.nii.gz")}
    )["image"]
    assert tuple(out.shape[1:]) == SHAPE


def test_body_mask_keeps_image_without_body():
    air = torch.full((1, 4, 4, 4), -1000.0)
    assert BodyMask(-500)(air).all()
    assert BodyMask(-500)(air.numpy()).all()
    air[0, 1, 1, 1] = 0
    assert BodyMask(-500)(air).sum() == 1


def test_label_is_binarized(tmp_path: Path):
    case = write_case(tmp_path, RAS_AFFINE, label_value=3)
    label = build_preprocessing(NO_RESAMPLE)(case)["label"]
    assert set(torch.unique(label).tolist()) == {0.0, 1.0}
    kept = build_preprocessing(
        PreprocessingSettings(spacing=None, crop_foreground=False, binarize_label=False)
    )(case)["label"]
    assert set(torch.unique(kept).tolist()) == {0.0, 3.0}


@pytest.mark.parametrize("spacing", [None, (0.4, 0.4, 1.0)])
def test_invert_restores_original_grid_exactly(case: dict[str, str], spacing):
    settings = PreprocessingSettings(spacing=spacing)
    label = build_val_transforms(settings)(dict(case))["label"]
    infer = build_inference_transforms(settings)
    data = infer({"image": case["image"]})
    data["pred"] = label.clone()
    restored = build_inverse(infer, nearest_interp=True)(data)["pred"]
    original = nib.load(case["label"])
    assert tuple(restored.shape) == (1, *SHAPE)
    np.testing.assert_allclose(restored.affine.numpy(), original.affine, atol=1e-5)
    np.testing.assert_array_equal(restored[0].numpy(), original.get_fdata())


def test_invert_after_coarser_resampling(case: dict[str, str]):
    settings = PreprocessingSettings(spacing=(1.5, 1.5, 1.5))
    label = build_val_transforms(settings)(dict(case))["label"]
    infer = build_inference_transforms(settings)
    data = infer({"image": case["image"]})
    data["pred"] = label.clone()
    restored = build_inverse(infer, nearest_interp=True)(data)["pred"][0].numpy()
    original = nib.load(case["label"]).get_fdata()
    assert restored.shape == SHAPE
    dice = 2 * (restored * original).sum() / (restored.sum() + original.sum())
    assert dice > 0.8


def test_positive_patches_contain_foreground(case: dict[str, str]):
    patch = PatchSettings(patch_size=(16, 16, 8), samples_per_volume=5, pos_fraction=1.0)
    chain = build_train_transforms(NO_RESAMPLE, patch, aug=None)
    chain.set_random_state(seed=0)
    patches = chain(dict(case))
    assert len(patches) == 5
    for sample in patches:
        assert tuple(sample["image"].shape) == (1, 16, 16, 8)
        assert tuple(sample["label"].shape) == (1, 16, 16, 8)
        assert sample["label"].sum() > 0


def test_negative_patches_hold_background(case: dict[str, str]):
    patch = PatchSettings(patch_size=(4, 4, 4), samples_per_volume=6, pos_fraction=0.0)
    chain = build_train_transforms(NO_RESAMPLE, patch, aug=None)
    chain.set_random_state(seed=1)
    patches = chain(dict(case))
    assert len(patches) == 6
    assert all((sample["label"] == 0).any() for sample in patches)


def _one_voxel_case(voxels: list[tuple[int, int, int]], shape=(60, 50, 40)) -> dict[str, torch.Tensor]:
    label = torch.zeros((1, *shape))
    for voxel in voxels:
        label[(0, *voxel)] = 1
    return {"image": torch.rand((1, *shape)), "label": label}


def test_positive_patches_place_the_voxel_anywhere_in_the_patch():
    # One foreground voxel far from the borders: MONAI would always put it at the patch centre (8, 8, 8); here
    # every one of the 16 positions along each axis occurs, and the voxel is in every patch.
    crop = RandOffsetPosNegCropd(("image", "label"), "label", (16, 16, 16), pos=1, neg=0, num_samples=2000)
    crop.set_random_state(0)
    positions = np.array(
        [np.argwhere(p["label"][0].numpy() > 0)[0] for p in crop(_one_voxel_case([(30, 25, 20)]))]
    )
    assert len(positions) == 2000
    for axis in range(3):
        counts = np.bincount(positions[:, axis], minlength=16)
        assert len(counts) == 16
        assert counts.min() > 2000 / 16 / 2  # roughly uniform: 125 expected per position
    assert np.abs(positions.mean(axis=0) - 7.5).max() < 0.5


def test_positive_patches_keep_voxels_near_the_volume_border():
    corners = [(0, 1, 2), (59, 48, 39)]
    crop = RandOffsetPosNegCropd(("image", "label"), "label", (16, 16, 16), pos=1, neg=0, num_samples=300)
    crop.set_random_state(1)
    for sample in crop(_one_voxel_case(corners)):
        assert tuple(sample["label"].shape) == (1, 16, 16, 16)
        assert sample["label"].sum() == 1


def test_offset_crops_repeat_with_the_seed():
    case = _one_voxel_case([(30, 25, 20), (10, 10, 10)])
    runs = []
    for _ in range(2):
        crop = RandOffsetPosNegCropd(("image", "label"), "label", (8, 8, 8), pos=0.5, neg=0.5, num_samples=20)
        crop.set_random_state(7)
        runs.append(torch.stack([p["image"] for p in crop(case)]))
    assert torch.equal(runs[0], runs[1])


def test_small_volume_is_padded_to_patch(case: dict[str, str]):
    patch = PatchSettings(patch_size=(48, 48, 8), samples_per_volume=2)
    patches = build_train_transforms(NO_RESAMPLE, patch, aug=None)(dict(case))
    assert all(tuple(p["image"].shape) == (1, 48, 48, 8) for p in patches)


@pytest.mark.parametrize("aug", [None, AugmentationSettings(prob=1.0, rotate90=True)])
def test_2d_mode_yields_axial_slices(case: dict[str, str], aug):
    patch = PatchSettings(spatial_dims=2, patch_size=(24, 20), samples_per_volume=3, pos_fraction=1.0)
    chain = build_train_transforms(NO_RESAMPLE, patch, aug)
    chain.set_random_state(seed=0)
    patches = chain(dict(case))
    assert len(patches) == 3
    for sample in patches:
        assert tuple(sample["image"].shape) == (1, 24, 20)
        assert tuple(sample["label"].shape) == (1, 24, 20)
        assert sample["image"].dtype == torch.float32
    if aug is None:
        assert all(sample["label"].sum() > 0 for sample in patches)


def test_2d_networks_are_evaluated_slice_by_slice_on_whole_volumes(case: dict[str, str]):
    from monai.inferers import SliceInferer

    image = build_val_transforms(NO_RESAMPLE)(dict(case))["image"]
    assert tuple(image.shape) == (1, *SHAPE)
    net = torch.nn.Conv2d(1, 2, kernel_size=3, padding=1)  # any (C, H, W) network
    with torch.no_grad():
        logits = SliceInferer(roi_size=(24, 20), spatial_dim=2, sw_batch_size=8)(image[None], net)
    assert tuple(logits.shape) == (1, 2, *SHAPE)


ALIGN_ONLY = {"scale_intensity": 0.0, "shift_intensity": 0.0, "noise_std": 0.0}


@pytest.mark.parametrize("seed", range(4))
def test_flips_and_quarter_turns_keep_image_and_label_aligned(case: dict[str, str], seed: int):
    aug = AugmentationSettings(
        flip_prob=0.5, rotate90=True, rotate_range_deg=0, scale_range=0, prob=1.0, **ALIGN_ONLY
    )
    patch = PatchSettings(patch_size=(16, 16, 16), samples_per_volume=2, pos_fraction=1.0)
    chain = build_train_transforms(NO_RESAMPLE, patch, aug)
    chain.set_random_state(seed=seed)
    for sample in chain(dict(case)):
        bright = sample["image"] > 0.99
        assert sample["label"].sum() > 0
        assert torch.equal(bright, sample["label"] > 0.5)


@pytest.mark.parametrize("seed", range(3))
def test_random_affine_keeps_image_and_label_aligned(case: dict[str, str], seed: int):
    aug = AugmentationSettings(flip=False, rotate_range_deg=30, scale_range=0.15, prob=1.0, **ALIGN_ONLY)
    patch = PatchSettings(patch_size=(20, 20, 16), samples_per_volume=2, pos_fraction=1.0)
    chain = build_train_transforms(NO_RESAMPLE, patch, aug)
    chain.set_random_state(seed=seed)
    for sample in chain(dict(case)):
        image, label = sample["image"], sample["label"] > 0.5
        assert set(torch.unique(sample["label"]).tolist()) <= {0.0, 1.0}
        assert label.any()
        assert image[label].mean() > 0.85
        assert image[~label].mean() < 0.5


def test_intensity_augmentation_touches_image_only(case: dict[str, str]):
    aug = AugmentationSettings(flip=False, rotate_range_deg=0, scale_range=0, noise_std=0.05, prob=1.0)
    patch = PatchSettings(patch_size=(16, 16, 16), samples_per_volume=1, pos_fraction=1.0)
    chain = build_train_transforms(NO_RESAMPLE, patch, aug)
    chain.set_random_state(seed=0)
    sample = chain(dict(case))[0]
    assert set(torch.unique(sample["label"]).tolist()) == {0.0, 1.0}
    assert len(torch.unique(sample["image"])) > 100  # noise added


def test_fingerprint_follows_cached_settings():
    pre = build_preprocessing(PreprocessingSettings())
    other = build_preprocessing(PreprocessingSettings(hu_window=(-200, 400)))
    assert getattr(pre, FINGERPRINT_ATTR) != getattr(other, FINGERPRINT_ATTR)
    a = build_train_transforms(aug=AugmentationSettings())
    b = build_train_transforms(aug=AugmentationSettings(prob=0.5))
    assert getattr(a, FINGERPRINT_ATTR) == getattr(b, FINGERPRINT_ATTR)  # augmentation is never cached


def test_bad_keys_are_refused():
    with pytest.raises(ConfigError, match="distinct"):
        build_preprocessing(keys=("image", "image"))
    with pytest.raises(ConfigError, match="image and a label"):
        build_train_transforms(keys=("image",))


# ---------------------------------------------------------------------------------------------- settings


def test_settings_defaults_and_round_trip():
    pre = PreprocessingSettings()
    assert pre.hu_window == (-100.0, 500.0)
    assert PreprocessingSettings.from_dict(pre.to_dict()) == pre
    assert PatchSettings().patch_size == (96, 96, 96)
    assert PatchSettings(spatial_dims=2).patch_size == (256, 256)
    assert PatchSettings(spatial_dims=2, patch_size=[64, 64, 1]).crop_size == (64, 64, 1)
    aug = AugmentationSettings.from_dict({"prob": 0.5})
    assert aug.prob == 0.5
    assert aug.flip
    assert AugmentationSettings.from_dict(None) == AugmentationSettings()


def test_settings_normalise_yaml_lists():
    pre = PreprocessingSettings.from_dict({"spacing": [0.7, 0.7, None], "hu_window": [-100, 500]})
    assert pre.spacing == (0.7, 0.7, None)
    assert pre.monai_pixdim == (0.7, 0.7, 0.0)
    assert pre.hu_window == (-100.0, 500.0)
    assert PreprocessingSettings(spacing=None).monai_pixdim is None


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (
            PreprocessingSettings,
            {"hu_window": [500, -100]},
            r"preprocessing.hu_window: low must be below high",
        ),
        (
            PreprocessingSettings,
            {"hu_windw": [0, 1]},
            r"preprocessing.hu_windw: unknown key \(did you mean 'hu_window'\?\)",
        ),
        (PreprocessingSettings, {"spacing": [1, 1]}, r"preprocessing.spacing: expected a list of 3 values"),
        (PreprocessingSettings, {"spacing": [1, -1, 1]}, r"preprocessing.spacing: must be > 0"),
        (
            PreprocessingSettings,
            {"crop_foreground": "yes"},
            r"preprocessing.crop_foreground: expected true or false",
        ),
        (PreprocessingSettings, {"margin": -1}, r"preprocessing.margin: expected an integer >= 0"),
        (PatchSettings, {"spatial_dims": 4}, r"patches.spatial_dims: expected 2 or 3"),
        (PatchSettings, {"patch_size": [96, 96]}, r"patches.patch_size: 3D patches need 3 values"),
        (PatchSettings, {"spatial_dims": 2, "patch_size": [64, 64, 8]}, r"patches.patch_size: 2D patches"),
        (PatchSettings, {"pos_fraction": 1.5}, r"patches.pos_fraction: must be <= 1"),
        (PatchSettings, {"samples_per_volume": 0}, r"patches.samples_per_volume: expected an integer >= 1"),
        (AugmentationSettings, {"prob": -0.1}, r"augmentation.prob: must be >= 0"),
        (
            AugmentationSettings,
            {"noise_std": float("nan")},
            r"augmentation.noise_std: expected a finite number",
        ),
    ],
)
def test_settings_errors_are_one_line(cls, data, message):
    with pytest.raises(ConfigError, match=message) as info:
        cls.from_dict(data)
    assert "\n" not in str(info.value)
