"""Label values: integer masks pass (float files holding integers too); anything else is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from pe_segmentation.data.label_values import CheckLabelValuesd, integer_label_values
from pe_segmentation.errors import InputDataError, user_error


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array([0, 1, 3], np.uint8), [0, 1, 3]),
        (np.array([0.0, 1.0004, 2.0], np.float32), [0, 1, 2]),  # float file of integers, rounding noise
        (np.array([True, False]), [True, False]),
    ],
)
def test_integer_masks_pass(array, expected):
    assert integer_label_values(array, "a.nii.gz").tolist() == expected


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.array([0.0, 0.3], np.float32), "non-integer values (e.g. 0.3)"),
        (np.array([0, -1], np.int16), "negative values (min -1)"),
        (np.array([0.0, np.nan], np.float32), "NaN or infinite"),
        (np.array([1 + 1j]), "voxel type complex128"),
    ],
)
def test_other_values_are_refused_naming_the_file(array, problem):
    with pytest.raises(InputDataError) as caught:
        integer_label_values(array, "labels/c.nii.gz")
    assert str(caught.value).startswith("labels/c.nii.gz: label")
    assert problem in str(caught.value)


def test_transform_names_the_label_file_and_surfaces_through_monai_wrapping():
    from monai.transforms import Compose

    label = MetaTensor(torch.full((1, 4, 4, 4), 0.5), meta={"filename_or_obj": "/data/case_7_seg.nii.gz"})
    chain = Compose([CheckLabelValuesd("label")])
    with pytest.raises(RuntimeError) as caught:  # MONAI wraps errors raised inside a transform
        chain({"label": label})
    found = user_error(caught.value)
    assert isinstance(found, InputDataError)
    assert str(found).startswith("/data/case_7_seg.nii.gz: label holds non-integer values (e.g. 0.5)")
    good = MetaTensor(torch.ones((1, 4, 4, 4)))
    assert chain({"label": good})["label"] is good


def test_user_error_is_none_for_bugs():
    inner = KeyError("x")
    wrapped = RuntimeError("applying transform")
    wrapped.__cause__ = inner
    assert user_error(wrapped) is None
    refused = InputDataError("a.nii.gz: bad")
    wrapped.__cause__ = refused
    assert user_error(wrapped) is refused
