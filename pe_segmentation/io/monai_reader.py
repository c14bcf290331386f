"""A MONAI :class:`~monai.data.ImageReader` over pe-seg's readers.

With it, ``LoadImage(reader=PESegReader())`` and ``LoadImaged`` read DICOM series (validated, chosen by the
series rule, decoded by GDCM) and NIfTI/NRRD/MHA files into MetaTensors whose affine is the RAS affine of
:class:`~pe_segmentation.io.volume.Volume`, which equals SimpleITK's geometry of the same input.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from pe_segmentation.io.loader import load_volume
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import is_volume_file

# MONAI's LoadImage instantiates every registered reader, including the GPU DICOM decoder, which warns on each
# construction on machines without nvImageCodec. pe-seg decodes DICOM with GDCM, so that notice is noise.
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec", category=UserWarning)
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


class PESegReader(ImageReader):
    """Read DICOM folders/files and NIfTI/NRRD/MHA volumes for MONAI transforms.

    Args:
        series_uid: for DICOM folders with several series, the SeriesInstanceUID to read.
        dtype: cast voxels to this dtype (None keeps the stored type: int16 HU, uint8 labels).
    """

    def __init__(self, series_uid: str | None = None, dtype: np.dtype | type | None = np.float32) -> None:
        super().__init__()
        self.series_uid = series_uid
        self.dtype = dtype

    def verify_suffix(self, filename: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> bool:
        """Volume files by extension, folders (DICOM series) and ``.dcm`` files."""
        return all(
            Path(name).is_dir() or is_volume_file(name) or str(name).lower().endswith(".dcm")
            for name in ensure_tuple(filename)
        )

    def read(
        self, data: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], **kwargs: Any
    ) -> list[Volume]:
        """Read each path; errors are :class:`~pe_segmentation.errors.InputDataError` naming the path."""
        return [load_volume(name, self.series_uid) for name in ensure_tuple(data)]

    def get_data(self, img: Volume | Sequence[Volume]) -> tuple[np.ndarray, dict]:
        """The voxel array (several inputs are stacked on a new first axis) and MONAI's metadata keys."""
        volumes = list(ensure_tuple(img))
        arrays = [v.array if self.dtype is None else v.array.astype(self.dtype, copy=False) for v in volumes]
        first = volumes[0]
        meta = {
            MetaKeys.AFFINE: first.affine.copy(),
            MetaKeys.ORIGINAL_AFFINE: first.affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(first.shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if len(volumes) == 1 else 0,
            "pixdim": np.concatenate([[1.0], first.spacing, [1.0] * 4]),
            "pe_seg_format": first.metadata.get("format", ""),
        }
        if first.metadata.get("series_uid"):  # None for a series whose files have no SeriesInstanceUID
            meta["series_uid"] = first.metadata["series_uid"]
        array = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=0)
        return array, meta
