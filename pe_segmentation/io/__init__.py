"""Reading and writing CT and labels: DICOM series, NIfTI/NRRD/MHA volumes, FUMPE masks.

Everything is read into a :class:`Volume` (voxels ``[i, j, k]`` and a RAS affine). The MONAI reader lives in
:mod:`pe_segmentation.io.monai_reader` (imported on its own, as it pulls in MONAI).
"""

from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.dicom_writer import write_dicom_series
from pe_segmentation.io.fumpe import read_fumpe_label, read_fumpe_mask, read_fumpe_nifti_mask
from pe_segmentation.io.loader import load_volume
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import read_volume, write_volume

__all__ = [
    "Volume",
    "load_volume",
    "read_dicom_series",
    "read_fumpe_label",
    "read_fumpe_mask",
    "read_fumpe_nifti_mask",
    "read_volume",
    "write_dicom_series",
    "write_volume",
]
