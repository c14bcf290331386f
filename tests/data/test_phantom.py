"""Synthetic CTPA phantoms: determinism, geometry, label/image consistency, HU, size distribution, datasets."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from pe_segmentation.data.phantom import (
    PhantomSettings,
    Tissue,
    case_seed,
    format_summary,
    generate_dataset,
    generate_phantom,
)
from pe_segmentation.errors import ConfigError
from pe_segmentation.io.volume import volume_from_sitk

SMALL = PhantomSettings(shape=(64, 64, 48), spacing=(5.6, 5.6, 6.6))
# fine enough for emboli under 50 mm^3 (15.6 mm^3 voxels), small enough to make 30 cases in about 2 s
FINE = PhantomSettings(shape=(80, 80, 64), spacing=(2.5, 2.5, 2.5))
CLEAN = PhantomSettings(shape=(96, 96, 80), spacing=(3.0, 3.0, 3.0), noise_hu=0.0, blur_sigma=0.0)
NEIGHBOURS_26 = np.ones((3, 3, 3), dtype=bool)


def _classify(volume_mm3: float) -> str:
    """Size class written out independently of the package: > 500 central, 50-500 segmental, < 50 small."""
    if volume_mm3 > 500.0:
        return "central"
    return "segmental" if volume_mm3 >= 50.0 else "small"


@pytest.fixture(scope="module")
def clean_phantoms():
    return [generate_phantom(CLEAN, seed) for seed in range(4)]


@pytest.fixture(scope="module")
def fine_cases():
    return [generate_phantom(FINE, case_seed(11, i)) for i in range(30)]


# -- determinism --------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_arrays_and_different_seeds_differ():
    a, b, c = generate_phantom(SMALL, 7), generate_phantom(SMALL, 7), generate_phantom(SMALL, 8)
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.label.array, b.label.array)
    assert a.emboli == b.emboli
    assert not np.array_equal(a.image.array, c.image.array)
    assert not np.array_equal(a.label.array, c.label.array)


def test_case_seed_does_not_depend_on_how_many_cases_are_made():
    spawned = np.random.SeedSequence(5).spawn(4)[3]
    alone = generate_phantom(SMALL, case_seed(5, 3))
    among = generate_phantom(SMALL, spawned)
    np.testing.assert_array_equal(alone.image.array, among.image.array)
    generator = generate_phantom(SMALL, np.random.default_rng(case_seed(5, 3)))
    np.testing.assert_array_equal(alone.label.array, generator.label.array)


# -- geometry and units -------------------------------------------------------------------------------------


def test_volumes_have_lps_axial_geometry_and_image_types():
    phantom = generate_phantom(SMALL, 1)
    sx, sy, sz = SMALL.spacing
    nx, ny, nz = SMALL.shape
    expected = np.array(
        [
            [-sx, 0, 0, (nx - 1) / 2 * sx],
            [0, -sy, 0, (ny - 1) / 2 * sy],
            [0, 0, sz, -(nz - 1) / 2 * sz],
            [0, 0, 0, 1],
        ]
    )
    for volume in (phantom.image, phantom.label):
        np.testing.assert_allclose(volume.affine, expected, atol=1e-9)
        assert volume.shape == SMALL.shape
        assert volume.orientation_code == "LPS"
    assert phantom.image.array.dtype == np.int16
    assert phantom.label.array.dtype == np.uint8
    # the field's centre is the RAS origin
    centre = expected @ np.array([(nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)


def test_anatomy_is_built_in_millimetres_independent_of_sampling():
    coarse = generate_phantom(PhantomSettings(shape=(64, 64, 48), spacing=(5.6, 5.6, 6.6)), 3)
    fine = generate_phantom(PhantomSettings(shape=(128, 128, 96), spacing=(2.8, 2.8, 3.3)), 3)
    assert len(coarse.branches) == len(fine.branches)
    for a, b in zip(coarse.branches, fine.branches, strict=True):
        np.testing.assert_allclose(a.tube.start, b.tube.start)
        np.testing.assert_allclose(a.tube.end, b.tube.end)
        assert a.tube.radius == pytest.approx(b.tube.radius)

    def lung_ml(phantom) -> float:
        voxel = np.prod(phantom.settings.spacing)
        return np.count_nonzero(phantom.tissues == Tissue.LUNG) * voxel / 1000

    assert lung_ml(coarse) == pytest.approx(lung_ml(fine), rel=0.05)
    assert 2000 < lung_ml(fine) < 8000  # adult lungs hold a few litres


def test_branches_shrink_from_trunk_to_about_two_millimetres(clean_phantoms):
    for phantom in clean_phantoms:
        scale = phantom.settings.grid.field_mm / np.array([360.0, 360.0, 320.0])
        radii = {b.generation: [] for b in phantom.branches}
        for branch in phantom.branches:
            radii[branch.generation].append(branch.radius / np.cbrt(np.prod(scale)))
        assert 10.0 <= radii[0][0] <= 15.5
        assert max(radii) >= 5
        assert 1.5 <= min(min(r) for r in radii.values()) <= 3.0
        for branch in phantom.branches[1:]:
            assert branch.radius < phantom.branches[branch.parent].radius


# -- labels and image ---------------------------------------------------------------------------------------


def test_every_embolus_voxel_lies_inside_the_artery_tree(clean_phantoms):
    for phantom in clean_phantoms:
        emboli = phantom.label.array == 1
        assert emboli.any()
        assert not np.any(emboli & ~phantom.vessels)
        assert set(np.unique(phantom.label.array)) <= {0, 1}
        np.testing.assert_array_equal(emboli, phantom.instances > 0)


def test_emboli_are_separate_components_matching_their_records(fine_cases):
    voxel = float(np.prod(FINE.spacing))
    for phantom in fine_cases[:10]:
        components, count = ndimage.label(phantom.label.array == 1, structure=NEIGHBOURS_26)
        assert count == len(phantom.emboli)
        for info in phantom.emboli:
            voxels = phantom.instances == info.index
            assert np.count_nonzero(voxels) == info.voxels
            assert len(np.unique(components[voxels])) == 1  # one embolus, one component
            assert info.volume_mm3 == pytest.approx(info.voxels * voxel)
            assert info.size_class == _classify(info.voxels * voxel)
            np.testing.assert_allclose(np.argwhere(voxels).mean(axis=0), info.centroid_ijk)
            ras = phantom.image.affine @ np.append(info.centroid_ijk, 1.0)
            np.testing.assert_allclose(ras[:3], info.centroid_ras_mm)


def test_vessel_label_marks_patent_lumen_as_two():
    settings = PhantomSettings(shape=(64, 64, 48), spacing=(5.6, 5.6, 6.6), vessel_label=True)
    plain, labelled = generate_phantom(SMALL, 2), generate_phantom(settings, 2)
    np.testing.assert_array_equal(labelled.image.array, plain.image.array)
    label = labelled.label.array
    np.testing.assert_array_equal(label == 1, plain.label.array == 1)
    np.testing.assert_array_equal(label == 2, labelled.vessels & (label != 1))
    assert set(np.unique(label)) == {0, 1, 2}


def test_hu_before_blur_and_noise_match_ctpa(clean_phantoms):
    for phantom in clean_phantoms:
        hu, tissues = phantom.image.array, phantom.tissues
        emboli = phantom.instances > 0
        for info in phantom.emboli:
            values = hu[phantom.instances == info.index]
            assert np.all(values == round(info.hu))
        assert hu[emboli].min() >= 20
        assert hu[emboli].max() <= 90
        # a clot's unlabelled neighbours are part clot (its sub-voxel edge): between clot and their tissue
        near = ndimage.binary_dilation(emboli, structure=NEIGHBOURS_26) & ~emboli
        edge = hu[near]
        assert edge.min() >= 0.6 * -1000 + 0.4 * 20
        assert edge.max() <= 500
        lumen = hu[phantom.vessels & ~emboli & ~near]
        assert lumen.min() >= 250
        assert lumen.max() <= 500
        lung = hu[(tissues == Tissue.LUNG) & ~near]
        assert abs(lung.mean() + 850) < 15
        assert lung.min() > -950
        assert lung.max() < -750
        fat = hu[tissues == Tissue.FAT]
        assert -130 < fat.mean() < -80
        muscle = hu[tissues == Tissue.MUSCLE]
        assert muscle.min() >= 30
        assert muscle.max() <= 60
        bone = hu[np.isin(tissues, [Tissue.BONE, Tissue.CORTICAL_BONE])]
        assert bone.min() >= 150
        assert bone.max() >= 800
        assert np.all(hu[tissues == Tissue.AIR] == -1000)
        assert hu[0, 0, 0] == -1000  # corner of the field: air around the patient


def test_hu_with_blur_and_noise_keep_clot_artery_and_lung_values():
    phantom = generate_phantom(PhantomSettings(shape=(128, 128, 100), spacing=(2.8, 2.8, 3.2)), 4)
    hu = phantom.image.array.astype(float)
    largest = max(phantom.emboli, key=lambda e: e.voxels)
    core = ndimage.binary_erosion(phantom.instances == largest.index)
    assert core.sum() >= 5
    assert 20 <= hu[core].mean() <= 90
    patent = ndimage.binary_erosion(
        phantom.vessels & ~ndimage.binary_dilation(phantom.instances > 0, iterations=2)
    )
    assert 250 <= hu[patent].mean() <= 500
    lung = ndimage.binary_erosion(phantom.tissues == Tissue.LUNG, iterations=2)
    assert abs(hu[lung].mean() + 850) < 20
    assert 10 < hu[lung].std() < 60  # texture and noise, not a flat fill

    quiet = generate_phantom(PhantomSettings(shape=(128, 128, 100), spacing=(2.8, 2.8, 3.2), noise_hu=0.0), 4)
    noise = hu - quiet.image.array  # same draws up to the noise, which comes last
    assert 14.0 < noise.std() < 16.0
    assert abs(noise.mean()) < 0.5


# -- size distribution --------------------------------------------------------------------------------------


def test_emboli_per_case_range_draws_uniformly_in_it(fine_cases):
    """An explicit ``emboli_per_case`` range still bounds the count (FUMPE's draw is the default: see
    test_phantom_clots.py for the distribution)."""
    settings = PhantomSettings(shape=(64, 64, 48), spacing=(5.6, 5.6, 6.6), emboli_per_case=(2, 3))
    counts = [len(generate_phantom(settings, case_seed(4, i)).emboli) for i in range(6)]
    assert all(1 <= c <= 3 for c in counts)
    assert max(len(p.emboli) for p in fine_cases) > 0


def test_small_emboli_on_a_coarse_grid_cover_at_least_one_voxel():
    voxel = float(np.prod(SMALL.spacing))  # 207 mm^3: a small clot cannot be labelled below 50 mm^3
    emboli = [e for seed in range(20) for e in generate_phantom(SMALL, case_seed(0, seed)).emboli]
    assert all(e.voxels >= 1 and e.volume_mm3 == pytest.approx(e.voxels * voxel) for e in emboli)
    small_targets = [e for e in emboli if e.target_volume_mm3 < 50]
    assert small_targets
    for embolus in small_targets:
        assert embolus.voxels == 1
        assert embolus.enlarged
        assert embolus.size_class == "segmental"


# -- settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shape": (31, 64, 64)}, "shape"),
        ({"shape": (64, 64, 48), "spacing": (1.0, 1.0, 1.0)}, "too small to hold the chest"),
        ({"spacing": (0.0, 1.0, 1.0)}, "positive"),
        ({"shape": (64, 64)}, "three"),
        ({"noise_hu": -1.0}, "noise_hu"),
        ({"emboli_per_case": (0, 3)}, "emboli_per_case"),
        ({"vessel_label": "yes"}, "vessel_label"),
    ],
)
def test_invalid_settings_raise_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=message) as caught:
        PhantomSettings(**options)
    assert "\n" not in str(caught.value)


def test_for_field_keeps_the_default_field_of_view():
    from_shape = PhantomSettings.for_field(shape=(64, 64, 50))
    assert from_shape.spacing == pytest.approx((5.6, 5.6, 6.4))
    from_spacing = PhantomSettings.for_field(spacing=(2.8, 2.8, 3.2))
    assert from_spacing.shape == (128, 128, 100)
    assert PhantomSettings.for_field(noise_hu=0.0) == PhantomSettings(noise_hu=0.0)


# -- datasets -----------------------------------------------------------------------------------------------


def test_generate_dataset_writes_files_and_datalist(tmp_path: Path):
    summary = generate_dataset(tmp_path / "ds", cases=3, seed=9, settings=SMALL, progress=False)
    root = tmp_path / "ds"
    datalist = json.loads((root / "datalist.json").read_text())
    assert datalist["name"] == "pe-seg synthetic CTPA"
    assert datalist["seed"] == 9
    assert datalist["labels"] == {"0": "background", "1": "embolus"}
    assert datalist["spacing"] == list(SMALL.spacing)
    assert datalist["numTraining"] == 3 == len(datalist["training"])
    total = 0
    for index, entry in enumerate(datalist["training"]):
        name = f"phantom_{index:03d}"
        assert entry["case"] == name
        assert entry["image"] == f"images/{name}.nii.gz"
        assert entry["label"] == f"labels/{name}.nii.gz"
        assert "dicom" not in entry
        expected = generate_phantom(SMALL, case_seed(9, index))
        image = nib.load(root / entry["image"])
        label = nib.load(root / entry["label"])
        np.testing.assert_array_equal(np.asarray(image.dataobj), expected.image.array)
        np.testing.assert_array_equal(np.asarray(label.dataobj), expected.label.array)
        assert image.get_data_dtype() == np.int16
        np.testing.assert_allclose(image.affine, expected.image.affine, atol=1e-4)
        assert [e["volume_mm3"] for e in entry["emboli"]] == [round(e.volume_mm3, 2) for e in expected.emboli]
        for record, info in zip(entry["emboli"], expected.emboli, strict=True):
            assert record["class"] == info.size_class
            assert record["occlusive"] == info.occlusive
        total += len(entry["emboli"])
    block = datalist["summary"]
    assert block["emboli"] == total == len(summary.emboli)
    assert sum(c["count"] for c in block["classes"].values()) == total
    assert summary.datalist == root / "datalist.json"


def test_dicom_series_holds_the_same_hu_and_can_be_rewritten(tmp_path: Path):
    settings = PhantomSettings(shape=(48, 48, 40), spacing=(7.5, 7.5, 8.0))
    for _ in range(2):  # the second run replaces the first series
        generate_dataset(
            tmp_path, cases=1, seed=2, settings=settings, formats=("nifti", "dicom"), progress=False
        )
    entry = json.loads((tmp_path / "datalist.json").read_text())["training"][0]
    assert entry["dicom"] == "dicom/phantom_000"
    files = sorted((tmp_path / entry["dicom"]).glob("*.dcm"))
    assert len(files) == settings.shape[2]
    slices = sorted((pydicom.dcmread(f) for f in files), key=lambda ds: float(ds.ImagePositionPatient[2]))
    expected = generate_phantom(settings, case_seed(2, 0)).image.array
    for k in (0, 17, 39):
        ds = slices[k]
        hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu.T, expected[:, :, k])
    assert not list(tmp_path.glob("dicom/.*"))  # no staging folders left behind
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / entry["dicom"])))
    series = volume_from_sitk(reader.Execute())
    phantom = generate_phantom(settings, case_seed(2, 0))
    np.testing.assert_array_equal(series.array, phantom.image.array)
    np.testing.assert_allclose(series.affine, phantom.image.affine, atol=1e-4)


def test_dicom_only_dataset_points_the_image_at_the_series(tmp_path: Path):
    settings = PhantomSettings(shape=(48, 48, 40), spacing=(7.5, 7.5, 8.0))
    generate_dataset(tmp_path, cases=1, seed=0, settings=settings, formats=("dicom",), progress=False)
    entry = json.loads((tmp_path / "datalist.json").read_text())["training"][0]
    assert entry["image"] == entry["dicom"] == "dicom/phantom_000"
    assert not (tmp_path / "images").exists()
    assert (tmp_path / entry["label"]).is_file()


@pytest.mark.parametrize(
    ("cases", "formats", "message"),
    [(0, ("nifti",), "cases"), (2, ("png",), "formats"), (2, (), "formats")],
)
def test_generate_dataset_rejects_bad_arguments(tmp_path: Path, cases, formats, message):
    with pytest.raises(ConfigError, match=message):
        generate_dataset(tmp_path, cases=cases, settings=SMALL, formats=formats, progress=False)
    assert not (tmp_path / "datalist.json").exists()


def test_format_summary_reports_the_size_distribution(tmp_path: Path):
    summary = generate_dataset(tmp_path, cases=4, seed=1, settings=FINE, progress=False)
    text = format_summary(summary)
    counts = {c: sum(e.size_class == c for e in summary.emboli) for c in ("central", "segmental", "small")}
    assert f"Emboli: {len(summary.emboli)} " in text
    for size, count in counts.items():
        line = next(row for row in text.splitlines() if row.strip().startswith(size))
        assert line.split("mm^3", 1)[1].split()[0] == str(count)  # first column after the definition
        assert f"{count / len(summary.emboli):.1%}" in line
    assert "> 500 mm^3" in text
    assert "50-500 mm^3" in text
    assert "< 50 mm^3" in text
    assert str(tmp_path / "datalist.json") in text
