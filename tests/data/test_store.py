"""The preprocessed store: what it holds equals the in-memory preprocessing, it is rebuilt only when it must be,
it never holds half a case, and its patches are those of the in-memory chain."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pe_segmentation.data import from_datalist
from pe_segmentation.data import store as store_module
from pe_segmentation.data.normalization import NormalizationSettings
from pe_segmentation.data.settings import AugmentationSettings, PatchSettings, PreprocessingSettings
from pe_segmentation.data.store import CASE_FILE, IMAGE_FILE, PreprocessedStore, fill_store
from pe_segmentation.data.store_dataset import SeededSampler, StoreCaseDataset, StorePatchDataset
from pe_segmentation.data.transforms import (
    build_geometry_transforms,
    build_train_transforms,
    build_val_transforms,
)

#: Resampled, cropped to the body (the phantom's air is cut away) and windowed: every step of the chain at work.
PRE = PreprocessingSettings(
    spacing=(1.5, 1.5, 2.0), hu_window=(-100.0, 500.0), crop_foreground=True, margin=1
)
#: float16 keeps HU within 0.25 HU below 512 HU (the values here): 0.25 / 600 in windowed units.
WINDOWED_TOLERANCE = 0.25 / 600 + 1e-6


def _write_case(folder: Path, name: str, rng: np.random.Generator, size=(28, 24, 20)) -> dict[str, str]:
    """Air around a soft-tissue body (40 HU with noise) holding a bright box labelled 1."""
    image = np.full(size, -1000.0, dtype=np.float32)
    image[3:-3, 3:-3, 2:-2] = rng.normal(40.0, 20.0, (size[0] - 6, size[1] - 6, size[2] - 4))
    label = np.zeros(size, dtype=np.uint8)
    start = rng.integers(4, 10, 3)
    box = tuple(slice(int(s), int(s) + 5) for s in start)
    image[box] += 360.0
    label[box] = 1
    affine = np.diag([1.2, 1.1, 1.6, 1.0])
    nib.save(nib.Nifti1Image(image, affine), folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), folder / f"{name}_seg.nii.gz")
    return {"case": name, "image": f"{name}.nii.gz", "label": f"{name}_seg.nii.gz"}


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    rng = np.random.default_rng(3)
    entries = [_write_case(folder, f"case_{i}", rng) for i in range(3)]
    (folder / "datalist.json").write_text(json.dumps({"training": entries}))
    return from_datalist(folder / "datalist.json")


def _store(root: Path, pre: PreprocessingSettings = PRE) -> PreprocessedStore:
    return PreprocessedStore(root, build_geometry_transforms(pre))


def _mtimes(store: PreprocessedStore) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in store.folder.rglob("*") if p.is_file()}


def test_stored_cases_equal_the_in_memory_preprocessing(items, tmp_path):
    store = _store(tmp_path)
    report = fill_store(store, items)
    assert (report.written, report.reused, len(report.seconds)) == (3, 0, 3)
    expected = build_val_transforms(PRE)
    dataset = StoreCaseDataset(items, store, PRE)
    for index, item in enumerate(items):
        ref, got = expected(dict(item)), dataset[index]
        assert got["image"].shape == ref["image"].shape
        assert ref["image"].shape[1] < 28 * 1.2 / 1.5  # the air was cropped away
        assert got["image"].dtype == torch.float32
        assert float((got["image"] - ref["image"]).abs().max()) <= WINDOWED_TOLERANCE
        assert torch.equal(got["label"].as_tensor(), ref["label"].as_tensor())
        assert torch.allclose(got["image"].affine, ref["image"].affine.to(torch.float64), atol=1e-6)
        assert np.load(store.case_folder(item) / IMAGE_FILE, mmap_mode="r").dtype == np.float16


@pytest.mark.parametrize(
    ("aug", "patch"),
    [
        (None, PatchSettings(patch_size=(8, 8, 8), samples_per_volume=3)),
        # larger than the volume along x: padded (with air in HU, 0 once windowed) as SpatialPadd pads
        (AugmentationSettings(contrast_prob=0.5, hu_noise_prob=0.5), PatchSettings(patch_size=(40, 8, 6))),
        (AugmentationSettings(), PatchSettings(patch_size=(12, 12), spatial_dims=2, samples_per_volume=2)),
    ],
    ids=["plain", "hu-augmentation-padded", "2d-augmented"],
)
def test_patches_are_the_in_memory_chains_for_the_same_seed(items, tmp_path, aug, patch):
    store = _store(tmp_path)
    fill_store(store, items)
    chain = build_train_transforms(PRE, patch, aug)
    dataset = StorePatchDataset(items, store, PRE, patch, aug)
    for index, item in enumerate(items):
        chain.set_random_state(seed=100 + index)
        expected, got = chain(dict(item)), dataset[(index, 100 + index)]
        assert len(got) == len(expected) == patch.samples_per_volume
        for ref, mine in zip(expected, got, strict=True):
            assert mine["image"].shape == ref["image"].shape
            assert float((mine["image"] - ref["image"]).abs().max()) <= WINDOWED_TOLERANCE
            assert torch.equal(mine["label"].as_tensor(), ref["label"].as_tensor())


def test_a_change_of_the_geometry_gives_a_new_store_and_of_the_window_none(items, tmp_path):
    store = _store(tmp_path)
    fill_store(store, items)
    windowed = _store(tmp_path, PreprocessingSettings(**{**PRE.to_dict(), "hu_window": (-200.0, 600.0)}))
    assert windowed.folder == store.folder  # the window is applied when reading
    assert fill_store(windowed, items).written == 0
    resampled = _store(tmp_path, PreprocessingSettings(**{**PRE.to_dict(), "spacing": (2.0, 2.0, 2.0)}))
    assert resampled.folder != store.folder
    assert fill_store(resampled, items).written == 3
    assert (
        StoreCaseDataset(items, resampled, PRE)[0]["image"].shape
        != StoreCaseDataset(items, store, PRE)[0]["image"].shape
    )


def test_a_second_fill_rewrites_nothing_and_a_changed_input_only_its_case(items, tmp_path):
    store = _store(tmp_path)
    fill_store(store, items)
    before = _mtimes(store)
    again = fill_store(store, items)
    assert (again.written, again.reused) == (0, 3)
    assert _mtimes(store) == before
    label = Path(items[1]["label"])
    stat = label.stat()
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the label file was replaced
    try:
        assert fill_store(store, items).written == 1
        after = _mtimes(store)
        changed = {path for path in after if after[path] != before.get(path)}
        assert changed
        assert all(str(store.case_folder(items[1])) in path for path in changed)
    finally:
        os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_an_interrupted_write_leaves_no_case(items, tmp_path, monkeypatch):
    store = _store(tmp_path)
    saved = np.save

    def crash_on_the_label(path, array, *args, **kwargs):
        if "label" in Path(path).name:
            raise RuntimeError("killed mid-write")
        return saved(path, array, *args, **kwargs)

    monkeypatch.setattr(store_module.np, "save", crash_on_the_label)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        fill_store(store, items[:1])
    assert not store.is_current(items[0])
    assert [p.name for p in store.folder.iterdir()] == [
        "store.json"
    ]  # neither the case nor its temporary folder
    monkeypatch.setattr(store_module.np, "save", saved)
    assert fill_store(store, items[:1]).written == 1
    assert (store.case_folder(items[0]) / CASE_FILE).is_file()


def test_a_killed_writers_folder_is_removed_once_stale(items, tmp_path):
    store = _store(tmp_path)
    store.prepare()
    left = store.folder / ".case_0-0123456789.abcd1234.tmp"
    left.mkdir()
    (left / IMAGE_FILE).write_bytes(b"half")
    store.prepare()
    assert left.is_dir()  # might be another process's write in progress
    old = left.stat().st_mtime - 2 * store_module.STALE_WRITE_S
    os.utime(left, (old, old))
    store.prepare()
    assert not left.exists()


def _positive_share(store, items, pos_fraction: float, draws: int) -> float:
    patch = PatchSettings(patch_size=(6, 6, 6), samples_per_volume=draws, pos_fraction=pos_fraction)
    dataset = StorePatchDataset(
        items, store, PreprocessingSettings(spacing=None, crop_foreground=False), patch, None
    )
    patches = dataset[(0, 7)]
    return sum(bool(p["label"].any()) for p in patches) / len(patches)


def test_patch_sampling_follows_pos_fraction(tmp_path):
    """One 2^3 embolus in a corner of a 48^3 volume: a 6^3 patch drawn around a background voxel holds it with
    probability 7^3 / 48^3 < 0.4 %, so the share of patches holding it is pos_fraction within sampling noise
    (400 draws: SD 2.5 %)."""
    image = np.full((48, 48, 48), 40.0, dtype=np.float32)
    label = np.zeros((48, 48, 48), dtype=np.uint8)
    label[2:4, 2:4, 2:4] = 1
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "c.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "c_seg.nii.gz")
    items = [{"case": "c", "image": str(tmp_path / "c.nii.gz"), "label": str(tmp_path / "c_seg.nii.gz")}]
    store = _store(tmp_path / "store", PreprocessingSettings(spacing=None, crop_foreground=False))
    fill_store(store, items)
    assert _positive_share(store, items, 1.0, 50) == 1.0
    assert _positive_share(store, items, 0.0, 200) <= 0.02
    assert 0.42 <= _positive_share(store, items, 0.5, 400) <= 0.58


def test_patches_depend_on_the_seed_alone_and_reading_keeps_no_map(items, tmp_path):
    store = _store(tmp_path)
    fill_store(store, items)
    patch = PatchSettings(patch_size=(8, 8, 8), samples_per_volume=2)
    dataset = StorePatchDataset(items, store, PRE, patch, AugmentationSettings())
    first = dataset[(1, 5)]
    dataset[(0, 9)]  # another draw between does not matter
    again = dataset[(1, 5)]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["image"].as_tensor(), b["image"].as_tensor())
    assert not torch.equal(first[0]["image"].as_tensor(), dataset[(1, 6)][0]["image"].as_tensor())
    maps = Path("/proc/self/maps")
    if (
        maps.exists()
    ):  # the image's memory map lives for one read only: memory does not grow with the data set
        assert str(store.folder) not in maps.read_text()


def test_seeded_sampler_gives_each_place_of_each_epoch_its_own_seed():
    sampler = SeededSampler([3, 1, 3], seed=0, rank=1)
    epoch0 = list(sampler)
    assert [index for index, _ in epoch0] == [3, 1, 3]
    assert len({seed for _, seed in epoch0}) == 3  # a case drawn twice in an epoch gets two draws
    assert list(sampler) == epoch0
    sampler.set_epoch(1)
    assert [seed for _, seed in sampler] != [seed for _, seed in epoch0]


def test_the_ct_foreground_normalisation_is_applied_when_reading(items, tmp_path):
    """The store keeps HU: the same store serves nnU-Net's CT scheme, and its patches are the in-memory chain's,
    (HU - 40) / 90 clipped to [-195, 305] HU, padding included (air clips to -195 HU: -2.61)."""
    pre = PreprocessingSettings(
        **{
            **PRE.to_dict(),
            "normalization": NormalizationSettings(
                scheme="ct_foreground", clip=(-195.0, 305.0), mean=40.0, std=90.0
            ),
        }
    )
    store = _store(tmp_path)
    fill_store(store, items)
    assert _store(tmp_path, pre).folder == store.folder  # no second store for another normalisation
    patch = PatchSettings(patch_size=(40, 8, 6), samples_per_volume=2)  # wider than the volumes: padded
    chain = build_train_transforms(pre, patch, None)
    dataset = StorePatchDataset(items, store, pre, patch, None)
    tolerance = 0.25 / 90 + 1e-6  # float16 HU, in SDs
    for index, item in enumerate(items):
        chain.set_random_state(seed=7 + index)
        expected, got = chain(dict(item)), dataset[(index, 7 + index)]
        for ref, mine in zip(expected, got, strict=True):
            assert float((mine["image"] - ref["image"]).abs().max()) <= tolerance
            assert float(mine["image"].min()) == pytest.approx((-195.0 - 40.0) / 90.0, abs=1e-4)
            assert float(mine["image"].max()) <= (305.0 - 40.0) / 90.0 + 1e-4
    whole = StoreCaseDataset(items, store, pre)[0]["image"]
    reference = build_val_transforms(pre)(dict(items[0]))["image"]
    assert float((whole - reference).abs().max()) <= tolerance


def _labelled_cube(tmp_path: Path, label: np.ndarray) -> tuple[list[dict[str, str]], PreprocessingSettings]:
    """One case of uniform 40 HU with ``label``, and preprocessing that keeps its grid and label values."""
    image = np.full(label.shape, 40.0, dtype=np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "c.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "c_seg.nii.gz")
    items = [{"case": "c", "image": str(tmp_path / "c.nii.gz"), "label": str(tmp_path / "c_seg.nii.gz")}]
    return items, PreprocessingSettings(spacing=None, crop_foreground=False, binarize_label=False)


@pytest.mark.parametrize("classes", [None, (1,)])
def test_positive_patches_can_be_centred_on_one_class(tmp_path, classes):
    """A 2^3 embolus (1) in one corner of a 40^3 volume and an 18^3 artery block (2) in the other: with
    ``positive_classes: [1]`` every positive 6^3 patch holds the embolus; with any non-zero value positive, a
    patch reaches the embolus only when drawn at one of its 8 of 5840 labelled voxels (never from the
    distant artery). The store draws the in-memory chain's patches either way."""
    label = np.zeros((40, 40, 40), dtype=np.uint8)
    label[2:4, 2:4, 2:4] = 1
    label[20:38, 20:38, 20:38] = 2
    items, pre = _labelled_cube(tmp_path, label)
    patch = PatchSettings(
        patch_size=(6, 6, 6), samples_per_volume=40, pos_fraction=1.0, positive_classes=classes
    )
    store = _store(tmp_path / "store", pre)
    fill_store(store, items)
    patches = StorePatchDataset(items, store, pre, patch, None)[(0, 5)]
    chain = build_train_transforms(pre, patch, None)
    chain.set_random_state(seed=5)
    for ref, mine in zip(chain(dict(items[0])), patches, strict=True):
        assert torch.equal(mine["label"].as_tensor(), ref["label"].as_tensor())
    with_embolus = sum(bool((p["label"] == 1).any()) for p in patches)
    # any class: each draw lands on the embolus with probability 8 / 5840 (40 draws: 0 expected, 2 at most)
    assert with_embolus == 40 if classes else with_embolus <= 2


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_negative_patches_can_be_centred_on_the_vessels(tmp_path, fraction):
    """A 2^3 embolus (1) in one corner of a 40^3 volume, a 3^3 vein (3) in the opposite corner and nothing else
    labelled: with ``negative_classes: [3]`` at fraction 1 every negative 6^3 patch holds the vein (a patch
    drawn anywhere off the embolus reaches it with probability about 3^3 * 8^3 / 40^3, a fifth); at fraction 0
    the draws are exactly those without hard negatives. The store draws the in-memory chain's patches."""
    label = np.zeros((40, 40, 40), dtype=np.uint8)
    label[2:4, 2:4, 2:4] = 1
    label[34:37, 34:37, 34:37] = 3
    items, pre = _labelled_cube(tmp_path, label)
    common = {
        "patch_size": (6, 6, 6),
        "samples_per_volume": 60,
        "pos_fraction": 0.5,
        "positive_classes": (1,),
    }
    patch = PatchSettings(**common, negative_classes=(3,), negative_class_fraction=fraction)
    store = _store(tmp_path / "store", pre)
    fill_store(store, items)
    patches = StorePatchDataset(items, store, pre, patch, None)[(0, 5)]
    chain = build_train_transforms(pre, patch, None)
    chain.set_random_state(seed=5)
    for ref, mine in zip(chain(dict(items[0])), patches, strict=True):
        assert torch.equal(mine["label"].as_tensor(), ref["label"].as_tensor())
    negatives = [p for p in patches if not bool((p["label"] == 1).any())]
    assert 15 <= len(negatives) <= 45  # pos_fraction 0.5 of 60 draws
    with_vein = sum(bool((p["label"] == 3).any()) for p in negatives)
    if fraction == 1.0:
        assert with_vein == len(negatives)
    else:
        plain = build_train_transforms(pre, PatchSettings(**common), None)
        plain.set_random_state(seed=5)
        for ref, mine in zip(plain(dict(items[0])), patches, strict=True):
            assert torch.equal(mine["label"].as_tensor(), ref["label"].as_tensor())
        assert with_vein < len(negatives) / 2


def test_negative_classes_are_checked():
    with pytest.raises(Exception, match="negative_classes"):
        PatchSettings(negative_classes=[2, 3])  # needs positive_classes, which they must not share
    with pytest.raises(Exception, match="negative_classes"):
        PatchSettings(positive_classes=[1, 2], negative_classes=[2, 3])
    with pytest.raises(Exception, match="negative_class_fraction"):
        PatchSettings(positive_classes=[1], negative_classes=[2], negative_class_fraction=1.5)
    settings = PatchSettings(positive_classes=[1], negative_classes=[3, 2, 2], negative_class_fraction=0.7)
    assert settings.negative_classes == (2, 3)
    assert settings.negative_class_fraction == 0.7


def test_positive_classes_are_checked():
    with pytest.raises(Exception, match="positive_classes"):
        PatchSettings(positive_classes=[0])
    with pytest.raises(Exception, match="positive_classes"):
        PatchSettings(positive_classes="1")
    assert PatchSettings(positive_classes=[2, 1, 1]).positive_classes == (1, 2)
