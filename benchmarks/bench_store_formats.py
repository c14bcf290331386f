"""Why the preprocessed store keeps NumPy files: size, write time and random-patch read time of one preprocessed
full-size case in the candidate formats, measured side by side.

    .venv/bin/python benchmarks/bench_store_formats.py [--image STORE_CASE/image.npy] [--patch 64]

Without ``--image`` it synthesizes one 512 x 512 x 300 phantom at 0.7 mm and preprocesses it as
``configs/unet.yaml`` does (body crop, 1 mm). Candidates: the store's float16 ``.npy`` read through a memory map
(the peer every other line is compared with), HDF5 chunks through h5py (gzip-1 and lzf, byte shuffle; h5py is
already a dependency of pe-seg), and blosc2 NDArrays (LZ4 and zstd, shuffle) when ``blosc2`` is importable
(it is not a dependency). Each reads the same 200 random patches, opening the file for each read as the
store does; medians. The page cache is warm (the file was just written): this compares decoding, not disks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _preprocessed_phantom(work: Path) -> np.ndarray:
    from monai.transforms import Compose

    from pe_segmentation.api import synth
    from pe_segmentation.config import load_config
    from pe_segmentation.data.transforms import build_geometry_transforms

    synth(work / "phantom", 1, 0, shape=(512, 512, 300), spacing=(0.7, 0.7, 0.7), profile="uniform")
    chain: Compose = build_geometry_transforms(load_config(ROOT / "configs/unet.yaml").preprocessing)
    data = chain(
        {
            "image": str(work / "phantom/images/phantom_000.nii.gz"),
            "label": str(work / "phantom/labels/phantom_000.nii.gz"),
        }
    )
    return data["image"].numpy().astype(np.float16)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, help="a store case's image.npy (default: synthesize one)")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_store_formats_"))
    image = np.load(args.image) if args.image else _preprocessed_phantom(work)
    image = image.astype(np.float16)
    n = args.patch
    rng = np.random.default_rng(0)
    shape = image.shape[1:]
    starts = [tuple(int(rng.integers(0, s - n + 1)) for s in shape) for _ in range(args.reads)]

    def box(start: tuple[int, ...]) -> tuple[slice, ...]:
        return (slice(None), *(slice(s, s + n) for s in start))

    def npy_write(path: Path) -> None:
        np.save(path, image)

    def npy_read(path: Path, start: tuple[int, ...]) -> np.ndarray:
        mapped = np.load(path, mmap_mode="r")
        return np.array(mapped[box(start)], dtype=np.float32)

    candidates: list[tuple[str, str, Callable, Callable]] = [
        ("npy float16, memory map", "npy", npy_write, npy_read)
    ]
    for compression, level in (("gzip", 1), ("lzf", None)):

        def h5_write(path: Path, compression=compression, level=level) -> None:
            with h5py.File(path, "w") as handle:
                handle.create_dataset(
                    "image",
                    data=image,
                    chunks=(1, 32, 32, 32),
                    compression=compression,
                    compression_opts=level,
                    shuffle=True,
                )

        def h5_read(path: Path, start: tuple[int, ...]) -> np.ndarray:
            with h5py.File(path, "r") as handle:
                return handle["image"][box(start)].astype(np.float32)

        candidates.append((f"HDF5 {compression} + shuffle, 32^3 chunks", "h5", h5_write, h5_read))
    try:
        import blosc2
    except ImportError:
        blosc2 = None
    if blosc2 is not None:
        for codec, level in ((blosc2.Codec.LZ4, 5), (blosc2.Codec.ZSTD, 1)):

            def b2_write(path: Path, codec=codec, level=level) -> None:
                blosc2.asarray(
                    image,
                    urlpath=str(path),
                    mode="w",
                    chunks=(1, 64, 64, 64),
                    blocks=(1, 32, 32, 32),
                    cparams=blosc2.CParams(codec=codec, clevel=level, filters=[blosc2.Filter.SHUFFLE]),
                )

            def b2_read(path: Path, start: tuple[int, ...]) -> np.ndarray:
                return blosc2.open(str(path), mode="r")[box(start)].astype(np.float32)

            candidates.append(
                (f"blosc2 {codec.name.lower()}-{level}, 64^3 chunks", "b2nd", b2_write, b2_read)
            )
    else:
        print("blosc2 not installed: its lines are left out")
    print(
        f"one case {list(image.shape)} float16 ({image.nbytes / 1e6:.1f} MB), {args.reads} random {n}^3 patches"
    )
    reference = None
    for name, suffix, write, read in candidates:
        path = work / f"case.{suffix}"
        begin = time.perf_counter()
        write(path)
        written = time.perf_counter() - begin
        times = []
        for start in starts:
            begin = time.perf_counter()
            patch = read(path, start)
            times.append(time.perf_counter() - begin)
            assert np.array_equal(patch, image[box(start)].astype(np.float32))
        median = statistics.median(times)
        reference = reference or (median, _size(path))
        print(
            f"{name:<34} {_size(path) / 1e6:6.1f} MB ({_size(path) / reference[1]:.2f}x) | write {written:5.2f} s | "
            f"patch read median {median * 1e3:6.2f} ms ({median / reference[0]:5.1f}x)"
        )
        os.remove(path)


if __name__ == "__main__":
    main()
