"""MONAI's LoadImage(d) through PESegReader: MetaTensors whose affine is SimpleITK's geometry."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from conftest import make_affine
from monai.transforms import LoadImage, LoadImaged

from pe_segmentation.io.monai_reader import PESegReader
from pe_segmentation.io.volume import Volume, affine_from_sitk
from pe_segmentation.io.volume_files import write_volume


def test_dicom_folder_loads_as_metatensor_with_simpleitk_affine(hu_volume, series_writer):
    volume = Volume(hu_volume.array, make_affine(euler_deg=(20, -10, 35)))
    folder = series_writer(volume)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    expected = affine_from_sitk(reader.Execute())

    image = LoadImage(reader=PESegReader(), image_only=True)(folder)

    assert tuple(image.shape) == volume.shape
    np.testing.assert_allclose(image.affine.numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(image.numpy(), volume.array.astype(np.float32))
    assert image.meta["space"] == "RAS"


def test_dictionary_loading_of_image_and_label_files(tmp_path, hu_volume):
    write_volume(hu_volume, tmp_path / "image.nii.gz")
    label = hu_volume.with_array((hu_volume.array > 0).astype(np.uint8))
    write_volume(label, tmp_path / "label.nrrd")
    loader = LoadImaged(keys=("image", "label"), reader=PESegReader(), ensure_channel_first=True)

    data = loader({"image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nrrd")})

    assert data["image"].shape == (1, 24, 20, 8)
    np.testing.assert_allclose(data["label"].affine.numpy(), data["image"].affine.numpy(), atol=1e-4)
    assert int(data["label"].sum()) == int((hu_volume.array > 0).sum())
    assert data["image"][0, 5, 3, 2] == 495


def test_reader_claims_folders_and_volume_files_only(tmp_path):
    reader = PESegReader()
    assert reader.verify_suffix(str(tmp_path))
    assert all(reader.verify_suffix(name) for name in ("a.nii.gz", "b.mha", "c.dcm"))
    assert not reader.verify_suffix("d.png")
