"""Dataset adapters on tiny fake layouts, and the MONAI dataset caching modes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from conftest import write_seed_fumpe_mask
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset

from pe_segmentation.data.datasets import (
    build_dataset,
    from_cadpe,
    from_datalist,
    from_folder,
    from_fumpe,
    from_synthetic,
)
from pe_segmentation.data.settings import PatchSettings, PreprocessingSettings
from pe_segmentation.data.transforms import build_preprocessing, build_train_transforms, build_val_transforms
from pe_segmentation.errors import ConfigError, InputDataError
from pe_segmentation.io.dicom_writer import write_dicom_series
from pe_segmentation.io.volume import Volume, affine_from_geometry
from pe_segmentation.io.volume_files import read_volume, write_volume

NO_RESAMPLE = PreprocessingSettings(spacing=None, crop_foreground=False)
SHAPE = (24, 20, 8)
CUBE = (slice(8, 12), slice(6, 10), slice(2, 5))


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def phantom(label_value: int = 1) -> tuple[Volume, Volume]:
    """A small LPS-oriented CT (soft tissue with a 500 HU cube) and its cube label."""
    affine = affine_from_geometry(np.array([10.0, -20.0, 30.0]), np.eye(3), np.array([0.7, 0.8, 2.0]))
    image = np.zeros(SHAPE, np.int16)
    image[CUBE] = 500
    label = np.zeros(SHAPE, np.uint8)
    label[CUBE] = label_value
    return Volume(image, affine), Volume(label, affine)


def assert_label_on_cube(item: dict[str, str], settings: PreprocessingSettings = NO_RESAMPLE) -> None:
    """The label covers the bright cube: exactly on the input grid, closely after resampling."""
    out = build_val_transforms(settings)(dict(item))
    bright, label = out["image"] > 0.5, out["label"] > 0.5
    assert label.sum() > 0
    if settings.spacing is None:
        assert torch.equal(bright, label)
    else:
        assert 2 * (bright & label).sum() / (bright.sum() + label.sum()) > 0.8


# ------------------------------------------------------------------------------------------------ datalist


def test_datalist_paths_resolve_relative_to_json(tmp_path: Path):
    root = tmp_path / "set"
    touch(root / "imagesTr" / "a.nii.gz")
    touch(root / "labelsTr" / "a.nii.gz")
    outside = touch(tmp_path / "elsewhere" / "b_ct.nrrd")
    touch(root / "labelsTr" / "b.nrrd")
    touch(root / "imagesTs" / "c.nii.gz")
    datalist = {
        "training": [
            {"image": "labelsTr/../imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"},
            {"image": str(outside), "label": "labelsTr/b.nrrd", "case": "b", "patient": "p1"},
        ],
        "test": ["imagesTs/c.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(datalist))
    items = from_datalist(root / "dataset.json")
    assert items == [
        {
            "case": "a",
            "patient": "a",
            "image": str((root / "imagesTr" / "a.nii.gz").resolve()),
            "label": str((root / "labelsTr" / "a.nii.gz").resolve()),
        },
        {
            "case": "b",
            "patient": "p1",
            "image": str(outside.resolve()),
            "label": str((root / "labelsTr" / "b.nrrd").resolve()),
        },
    ]
    test = from_datalist(root / "dataset.json", section="test", require_label=False)
    assert test == [{"case": "c", "patient": "c", "image": str((root / "imagesTs" / "c.nii.gz").resolve())}]


def test_datalist_errors_name_the_problem(tmp_path: Path):
    path = tmp_path / "dataset.json"
    with pytest.raises(InputDataError, match="datalist not found"):
        from_datalist(path)
    path.write_text("{not json")
    with pytest.raises(InputDataError, match="not a readable JSON datalist"):
        from_datalist(path)
    path.write_text(json.dumps({"training": [{"image": "missing.nii.gz", "label": "l.nii.gz"}]}))
    with pytest.raises(InputDataError, match=r"missing\.nii\.gz: image not found"):
        from_datalist(path)
    with pytest.raises(InputDataError, match="no 'validation' section"):
        from_datalist(path, section="validation")
    touch(tmp_path / "x.nii.gz")
    path.write_text(json.dumps({"training": [{"image": "x.nii.gz"}]}))
    with pytest.raises(InputDataError, match=r"training\[0\] has no 'label' path"):
        from_datalist(path)
    path.write_text(json.dumps({"training": [{"image": "x.nii.gz"}, {"image": "./x.nii.gz"}]}))
    with pytest.raises(InputDataError, match="case id 'x' appears twice"):
        from_datalist(path, require_label=False)


def test_synthetic_datalist_can_select_dicom_series(tmp_path: Path):
    touch(tmp_path / "images" / "phantom_000.nii.gz")
    touch(tmp_path / "labels" / "phantom_000.nii.gz")
    (tmp_path / "dicom" / "phantom_000").mkdir(parents=True)
    entry = {
        "case": "phantom_000",
        "image": "images/phantom_000.nii.gz",
        "label": "labels/phantom_000.nii.gz",
        "dicom": "dicom/phantom_000",
        "n_emboli": 3,
    }
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [entry]}))
    [item] = from_synthetic(tmp_path)
    assert item["image"].endswith("images/phantom_000.nii.gz")
    [item] = from_synthetic(tmp_path, image_key="dicom")
    assert item["image"] == str((tmp_path / "dicom" / "phantom_000").resolve())
    assert set(item) == {"case", "patient", "image", "label"}


# -------------------------------------------------------------------------------------------------- folder


def test_folder_matches_by_case_name(tmp_path: Path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    touch(images / "pe01_0000.nii.gz")
    touch(labels / "pe01_seg.nii.gz")
    touch(images / "pe02.nrrd")
    touch(labels / "pe02_label.nii")
    (images / "pe03").mkdir()  # a DICOM series folder
    touch(labels / "pe03.mha")
    touch(images / "notes.txt")  # ignored
    touch(images / ".DS_Store")
    items = from_folder(images, labels)
    assert [i["case"] for i in items] == ["pe01", "pe02", "pe03"]
    assert items[2]["image"] == str((images / "pe03").resolve())
    assert items[0]["label"] == str((labels / "pe01_seg.nii.gz").resolve())


def test_folder_reports_unmatched_files_in_one_line(tmp_path: Path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    touch(images / "a.nii.gz")
    touch(images / "b.nii.gz")
    touch(labels / "a_seg.nii.gz")
    touch(labels / "z_seg.nii.gz")
    with pytest.raises(InputDataError) as info:
        from_folder(images, labels)
    message = str(info.value)
    assert "\n" not in message
    assert "1 image(s) without a label" in message
    assert "b.nii.gz" in message
    assert "1 label(s) without an image" in message
    assert "z_seg.nii.gz" in message


def test_folder_errors(tmp_path: Path):
    with pytest.raises(InputDataError, match="images folder not found"):
        from_folder(tmp_path / "nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputDataError, match="no volume files or DICOM folders"):
        from_folder(tmp_path / "empty", tmp_path)
    touch(tmp_path / "images" / "a.nii")
    touch(tmp_path / "images" / "a.nii.gz")
    touch(tmp_path / "labels" / "a.nii.gz")
    with pytest.raises(InputDataError, match=r"a\.nii and a\.nii\.gz both belong to case 'a'"):
        from_folder(tmp_path / "images", tmp_path / "labels")


# --------------------------------------------------------------------------------------------------- FUMPE


def write_matlab_v73(path: Path, array: np.ndarray) -> None:
    """A MATLAB v7.3-like file: HDF5 with the MATLAB header in its user block, axes stored reversed."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle["Mask"] = array.astype(np.uint8).transpose()
    with open(path, "r+b") as handle:
        handle.write(
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116)
            + bytes(8)
            + b"\x00\x02IM"
        )


@pytest.fixture
def fumpe_root(tmp_path: Path) -> Path:
    """PAT001: v5 mask, files in slice order. PAT002: v7.3 mask, InstanceNumber descending along k."""
    root = tmp_path / "FUMPE"
    image, label = phantom()
    (root / "GroundTruth").mkdir(parents=True)
    n = SHAPE[2]
    write_dicom_series(image, root / "CT_scans" / "PAT001", uid_seed="PAT001")
    scipy.io.savemat(
        root / "GroundTruth" / "PAT001.mat", {"Mask": label.array.transpose(1, 0, 2).astype(bool)}
    )
    write_dicom_series(
        image, root / "CT_scans" / "PAT002", uid_seed="PAT002", file_order=list(range(n))[::-1]
    )
    write_matlab_v73(root / "GroundTruth" / "PAT002.mat", label.array[:, :, ::-1].transpose(1, 0, 2))
    return root


def test_fumpe_masks_are_converted_on_the_series_grid(fumpe_root: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    items = from_fumpe(fumpe_root, cache)
    assert [i["case"] for i in items] == ["PAT001", "PAT002"]
    assert items[0]["image"] == str((fumpe_root / "CT_scans" / "PAT001").resolve())
    assert items[1]["label"] == str((cache / "PAT002_label.nii.gz").resolve())
    for item in items:
        assert_label_on_cube(item)
        assert_label_on_cube(item, PreprocessingSettings(spacing=(1.0, 1.0, 1.0)))


def test_fumpe_conversion_is_cached_until_the_mask_changes(fumpe_root: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    label = Path(from_fumpe(fumpe_root, cache)[0]["label"])
    first = label.stat().st_mtime_ns
    from_fumpe(fumpe_root, cache)
    assert label.stat().st_mtime_ns == first
    os.utime(label, ns=(0, 0))  # now older than its .mat: converted again
    from_fumpe(fumpe_root, cache)
    assert label.stat().st_mtime_ns > 0


def test_fumpe_layout_errors(fumpe_root: Path, tmp_path: Path):
    with pytest.raises(
        InputDataError, match=r"nothing: FUMPE series folder not found \(expected CT_scans/ or"
    ):
        from_fumpe(tmp_path / "nothing", tmp_path / "cache")
    (fumpe_root / "GroundTruth" / "PAT002.mat").unlink()
    with pytest.raises(InputDataError, match=r"GroundTruth: no mask for PAT002$"):
        from_fumpe(fumpe_root, tmp_path / "cache")
    touch(fumpe_root / "GroundTruth" / "PAT002.mat")
    touch(fumpe_root / "GroundTruth" / "PAT009.mat")
    with pytest.raises(InputDataError, match=r"CT_scans: no series folder for PAT009\.mat"):
        from_fumpe(fumpe_root, tmp_path / "cache")
    touch(fumpe_root / "GroundTruth" / "PAT002.nii.gz")
    with pytest.raises(
        InputDataError, match=r"GroundTruth: two masks for PAT002 \(PAT002\.mat, PAT002\.nii\.gz\)"
    ):
        from_fumpe(fumpe_root, tmp_path / "cache")
    empty = tmp_path / "empty"
    (empty / "image").mkdir(parents=True)
    with pytest.raises(
        InputDataError, match=r"empty: FUMPE mask folder not found \(expected GroundTruth/ or label/\)"
    ):
        from_fumpe(empty, tmp_path / "cache")


@pytest.fixture
def seed_fumpe_root(tmp_path: Path) -> Path:
    """The seed project's layout: ``FUM_PE_data/image/PATxxx/`` DICOM and ``FUM_PE_data/label/PATxxx.nii.gz``.
    PAT001: file names follow slice position. PAT002: they run against it, and so do its mask's slices."""
    root = tmp_path / "FUM_PE_data"
    image, label = phantom()
    n = SHAPE[2]
    write_dicom_series(image, root / "image" / "PAT001", uid_seed="PAT001")
    write_seed_fumpe_mask(root / "label" / "PAT001.nii.gz", label.array)
    write_dicom_series(image, root / "image" / "PAT002", uid_seed="PAT002", file_order=list(range(n))[::-1])
    write_seed_fumpe_mask(root / "label" / "PAT002.nii.gz", label.array[:, :, ::-1])  # slices by file name
    return root


def test_fumpe_seed_layout_masks_land_on_the_series_grid(seed_fumpe_root: Path, tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="pe_segmentation.io.fumpe"):
        items = from_fumpe(seed_fumpe_root, tmp_path / "cache")
    assert [i["case"] for i in items] == ["PAT001", "PAT002"]
    assert items[1]["image"] == str((seed_fumpe_root / "image" / "PAT002").resolve())
    for item in items:
        assert_label_on_cube(item)
        assert sorted(map(tuple, np.argwhere(read_volume(item["label"]).array > 0))) == sorted(
            (i, j, k) for i in range(8, 12) for j in range(6, 10) for k in range(2, 5)
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("PAT002: ")


# -------------------------------------------------------------------------------------------------- CAD-PE


def test_cadpe_layout(tmp_path: Path):
    image, label = phantom(label_value=2)  # CAD-PE labels may number the clots
    for case in ("001", "002"):
        write_volume(image, tmp_path / "images" / f"{case}.nrrd")
        write_volume(label, tmp_path / "rs" / f"{case}RefStd.nrrd")
    items = from_cadpe(tmp_path)
    assert [(i["case"], i["patient"]) for i in items] == [("001", "001"), ("002", "002")]
    assert items[1]["label"] == str((tmp_path / "rs" / "002RefStd.nrrd").resolve())
    assert_label_on_cube(items[0])
    out = build_val_transforms(NO_RESAMPLE)(dict(items[0]))
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0}


def test_cadpe_missing_reference_is_named(tmp_path: Path):
    touch(tmp_path / "images" / "001.nrrd")
    touch(tmp_path / "images" / "002.nrrd")
    touch(tmp_path / "rs" / "001RefStd.nrrd")
    with pytest.raises(InputDataError, match=r"rs: no label for 002RefStd\.nrrd"):
        from_cadpe(tmp_path)
    with pytest.raises(InputDataError, match="images: CAD-PE folder not found"):
        from_cadpe(tmp_path / "rs")


# ------------------------------------------------------------------------------------------------- caching


@pytest.fixture
def nifti_items(tmp_path: Path) -> list[dict[str, str]]:
    image, label = phantom()
    items = []
    for case in ("c1", "c2"):
        write_volume(image, tmp_path / "images" / f"{case}.nii.gz")
        write_volume(label, tmp_path / "labels" / f"{case}.nii.gz")
    items = from_folder(tmp_path / "images", tmp_path / "labels")
    return items


def test_cache_modes_build_the_matching_dataset(nifti_items, tmp_path: Path):
    chain = build_preprocessing(NO_RESAMPLE)
    plain = build_dataset(nifti_items, chain)
    memory = build_dataset(nifti_items, chain, cache="memory", num_workers=1)
    disk = build_dataset(nifti_items, chain, cache="disk", cache_dir=tmp_path / "cache")
    assert type(plain) is Dataset
    assert isinstance(memory, CacheDataset)
    assert isinstance(disk, PersistentDataset)
    expected = plain[0]["image"]
    for dataset in (memory, disk):
        assert torch.equal(dataset[0]["image"], expected)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    again = build_dataset(nifti_items, chain, cache="disk", cache_dir=tmp_path / "cache")
    assert torch.equal(again[0]["image"], expected)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1  # reused
    windowed = build_preprocessing(
        PreprocessingSettings(spacing=None, crop_foreground=False, hu_window=(0, 1000))
    )
    other = build_dataset(nifti_items, windowed, cache="disk", cache_dir=tmp_path / "cache")
    assert not torch.equal(other[0]["image"], expected)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # new settings, new cache entry


def test_training_patches_never_write_into_the_memory_cache(nifti_items):
    """The training chain's memory cache hands over its volumes without a deep copy; patches are copies, so
    writing into them (as an in-place augmentation would) leaves the cached volume as it was."""
    chain = build_train_transforms(NO_RESAMPLE, PatchSettings(patch_size=(8, 8, 8), samples_per_volume=3))
    memory = build_dataset(nifti_items, chain, cache="memory", num_workers=1)
    assert memory.copy_cache is False
    cached = memory._cache[0]["image"].clone()
    for _ in range(3):
        for patch in memory[0]:
            assert "label_fg_indices" not in patch  # the cached indices stay behind
            patch["image"] += 100.0
            patch["label"].zero_()
    assert torch.equal(memory._cache[0]["image"], cached)
    assert memory._cache[0]["label"].sum() > 0
    assert build_dataset(nifti_items, build_preprocessing(NO_RESAMPLE), cache="memory").copy_cache is True


def test_cache_errors():
    with pytest.raises(ConfigError, match="unknown mode 'ram'"):
        build_dataset([], None, cache="ram")
    with pytest.raises(ConfigError, match="'disk' needs a cache_dir"):
        build_dataset([], None, cache="disk")
    with pytest.raises(ConfigError, match="num_workers"):
        build_dataset([], None, num_workers=-1)


def test_training_batches_from_cached_patches(nifti_items):
    patch = PatchSettings(patch_size=(8, 8, 4), samples_per_volume=3, pos_fraction=1.0)
    chain = build_train_transforms(NO_RESAMPLE, patch, aug=None)
    dataset = build_dataset(nifti_items, chain, cache="memory")
    batch = next(iter(DataLoader(dataset, batch_size=2, num_workers=0)))
    assert tuple(batch["image"].shape) == (6, 1, 8, 8, 4)
    assert tuple(batch["label"].shape) == (6, 1, 8, 8, 4)
    assert all(batch["label"][i].sum() > 0 for i in range(6))
