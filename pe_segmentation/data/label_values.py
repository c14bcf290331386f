"""The one check of label values, shared by training (:class:`CheckLabelValuesd`) and ``pe-seg evaluate``.

Labels are integer masks: 0 is background, values > 0 are emboli (one value per clot in some datasets). A float
file holding integers is fine; anything else (probabilities, negative values, a CT given as a label) is refused
with the file named, because rounding or thresholding it would silently train or score on a wrong mask.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from pe_segmentation.errors import InputDataError

#: How far a float label value may lie from an integer and still count as that integer.
INTEGER_TOLERANCE = 1e-3


def integer_label_values(
    array: np.ndarray, source: object, what: str = "label", hint: str = ""
) -> np.ndarray:
    """``array`` as integer label values (float arrays rounded), or an error naming ``source``.

    Args:
        array: the label voxels.
        source: the file (or other name) the label came from, for the message.
        what: what the array is (``label``, ``prediction``), for the message.
        hint: text appended to the non-integer message.

    Raises:
        InputDataError: non-integer, non-numeric or negative values.
    """
    if array.dtype == bool:
        return array
    if np.issubdtype(array.dtype, np.floating):
        rounded = np.rint(array)
        off = np.abs(array - rounded)
        if off.size and not np.isfinite(off).all():
            raise InputDataError(f"{source}: {what} holds NaN or infinite values; expected an integer mask")
        if off.max(initial=0) > INTEGER_TOLERANCE:
            example = float(array.flat[int(np.argmax(off))])
            raise InputDataError(
                f"{source}: {what} holds non-integer values (e.g. {example:.4g}); expected an integer mask{hint}"
            )
        array = rounded
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputDataError(f"{source}: {what} has voxel type {array.dtype}; expected integer labels")
    if array.size and array.min() < 0:
        raise InputDataError(
            f"{source}: {what} holds negative values (min {array.min():g}); expected 0 = background, > 0 = embolus"
        )
    return array


class CheckLabelValuesd(MapTransform):
    """Refuses labels that are not integer masks (see :func:`integer_label_values`), naming the file.

    Placed right after loading, before binarisation, which would otherwise turn a probability map or a
    negative-valued mask into some mask without a word.
    """

    def __init__(self, keys: Sequence[Hashable]) -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            values = label.numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
            source = getattr(label, "meta", {}).get("filename_or_obj", key)
            integer_label_values(values, source)
        return d
