"""Read a 512x512x300 CT DICOM series three ways and print medians and ratios.

    .venv/bin/python benchmarks/bench_io.py [--repeats 5] [--slices 300] [--transfer-syntax explicit]

* pe-seg: :func:`pe_segmentation.io.dicom_reader.read_dicom_series` (header scan, series choice, validation,
  GDCM decode, HU) - what every pe-seg command does with a DICOM folder;
* SimpleITK: ``ImageSeriesReader`` with ``GetGDCMSeriesFileNames``, no validation (the floor);
* MONAI ``PydicomReader`` through ``LoadImage`` (the peer a MONAI pipeline uses for DICOM folders).

Targets (issue 2): pe-seg at most 1.3x SimpleITK's time and at least 5x faster than PydicomReader. The series
is a synthetic CTPA phantom written by the phantom generator. Files are read once before timing so that every
reader sees a warm page cache.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pe_segmentation.data.phantom import PhantomSettings, generate_phantom
from pe_segmentation.io.dicom_reader import read_dicom_series
from pe_segmentation.io.dicom_writer import write_dicom_series


def read_pe_seg(folder: Path) -> np.ndarray:
    return read_dicom_series(folder).volume.array


def read_simpleitk(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def read_monai_pydicom(folder: Path) -> np.ndarray:
    from monai.data import PydicomReader
    from monai.transforms import LoadImage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LoadImage(reader=PydicomReader(), image_only=True)(str(folder)).numpy()


def median_seconds(
    read: Callable[[Path], np.ndarray], folder: Path, repeats: int
) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = read(folder)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pydicom-repeats", type=int, default=3, help="PydicomReader is slow; fewer runs")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--transfer-syntax", default="explicit", choices=["explicit", "rle", "jpegls"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        start = time.perf_counter()
        phantom = generate_phantom(PhantomSettings(shape=(512, 512, args.slices), spacing=(0.7, 0.7, 1.0)), 0)
        write_dicom_series(phantom.image, folder, transfer_syntax=args.transfer_syntax, uid_seed="bench")
        print(
            f"series: 512x512x{args.slices} ({args.transfer_syntax}), made in {time.perf_counter() - start:.1f} s"
        )
        for path in folder.iterdir():  # warm the page cache for every reader alike
            path.read_bytes()

        pe_seg, ours = median_seconds(read_pe_seg, folder, args.repeats)
        plain, theirs = median_seconds(read_simpleitk, folder, args.repeats)
        monai, _ = median_seconds(read_monai_pydicom, folder, args.pydicom_repeats)
        assert np.array_equal(ours, theirs.transpose(2, 1, 0)), "pe-seg and SimpleITK disagree on voxels"

    print(f"{'reader':<28}{'median s':>10}{'vs SimpleITK':>14}")
    for name, seconds in (
        ("pe-seg (with validation)", pe_seg),
        ("SimpleITK ImageSeriesReader", plain),
        ("MONAI PydicomReader", monai),
    ):
        print(f"{name:<28}{seconds:>10.3f}{seconds / plain:>13.2f}x")
    print(f"pe-seg / SimpleITK = {pe_seg / plain:.2f} (target <= 1.3)")
    print(f"PydicomReader / pe-seg = {monai / pe_seg:.1f} (target >= 5)")


if __name__ == "__main__":
    main()
