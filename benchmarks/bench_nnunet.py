"""``pe-seg infer --nnunet`` against nnU-Net's own ``nnUNetPredictor`` on the same model folder and CT.

    python benchmarks/bench_nnunet.py [--shape 512 512 300] [--network published] [--mirror]
        [--runs nnunet pe-seg no-territory fp32] [--float32-reference]

Needs pe-seg's ``nnunet`` extra (``make setup-nnunet``). Writes an nnU-Net v2 trained-model folder in nnU-Net's
formats with random weights (``tests/inference/nnunet_models.py``; the final layer biased so that about 5% of
the voxels come out embolus) and a CTPA phantom of ``--shape`` voxels at 0.7 x 0.7 x 1 mm as NIfTI, then runs,
each in its own fresh process (imports, model loading and writing included), one after the other:

* ``nnunet``: ``nnUNetPredictor`` (set up with ``manual_initialization``: no trainer-class search) on the CPU,
  as nnU-Net runs there (float32, its float16 sliding-window sums): read with ``SimpleITKIO``, preprocess,
  predict, resample the logits back and write the segmentation;
* ``pe-seg``: ``pe-seg infer --nnunet`` with its defaults (bf16 where the CPU has it, territory on: windows
  outside the lungs and pulmonary arteries skipped) and all its outputs;
* ``pe-seg --no-territory``: every window, as nnU-Net runs them;
* ``pe-seg fp32``: ``--precision fp32 --no-territory --save-probability``, for agreement: the largest absolute
  difference of the embolus probabilities against nnU-Net's, and the Dice of the masks.

Printed: every stage's time, wall time, peak resident memory (as in ``bench_infer.py``), and the ratios against
nnU-Net. ``--network published`` is the published PE model's residual-encoder U-Net re-planned at a 128^3
patch (6 stages, 32..320 features); ``tiny`` (default at small sizes) a 3-stage U-Net at 32^3 for a quick run.
Targets (issue 19): pe-seg at least 3x faster end to end with its default precision and at most 0.5x nnU-Net's
peak memory, with and without mirroring; probabilities within 1e-3 in fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "inference")]

import bench_infer  # noqa: E402  (its child-process runner and memory figures)
import nnunet_models  # noqa: E402  (the model folders of the tests)

NETWORKS = {
    # kind, stages, features, patch (plans' order: z, y, x)
    "tiny": ("plain", 3, 8, (32, 32, 32)),
    "published": ("resenc", 6, 32, (128, 128, 128)),
}
SPACING = (1.0, 0.74, 0.74)
RUNS = ("nnunet", "pe-seg", "no-territory", "fp32")  # the published plan's spacing (z, y, x)


def make_inputs(
    work: Path, shape: tuple[int, int, int], spacing: tuple[float, ...], network: str, plan: tuple[float, ...]
) -> tuple[Path, Path]:
    """The phantom CT as NIfTI and the model folder (cached in ``work``)."""
    import SimpleITK as sitk

    from pe_segmentation.data.phantom import PhantomSettings, generate_phantom
    from pe_segmentation.io.volume_files import write_volume

    ct = work / f"ct_{'x'.join(map(str, shape))}_{'x'.join(map(str, spacing))}.nii.gz"
    if not ct.exists():
        phantom = generate_phantom(PhantomSettings(shape=shape, spacing=spacing), 0)
        write_volume(phantom.image, ct)
    folder = work / f"model_{network}_{'x'.join(map(str, plan))}"
    if not folder.exists():
        kind, stages, features, patch = NETWORKS[network]
        nnunet_models.write_model(
            folder, kind=kind, spacing=plan, patch=patch, stages=stages, features=features
        )
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(ct)))  # z, y, x: about the plan's grid
        centre = [n // 2 for n in array.shape]
        crop = tuple(
            slice(max(c - p // 2, 0), max(c - p // 2, 0) + p) for c, p in zip(centre, patch, strict=True)
        )
        nnunet_models.recalibrate(folder, array[crop], patch)
    return ct, folder


def child_nnunet(ct: str, folder: str, output: str, mirror: str, sums: str) -> None:
    """nnUNetPredictor on one CT (``sums``: ``16`` as it runs, ``32`` with float32 sliding-window sums); prints
    its stage times as JSON."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape,
    )
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    predictor = nnunet_models.nnunet_predictor(Path(folder), (0,), mirror == "1")
    seconds["model"] = time.perf_counter() - start
    io = SimpleITKIO()
    start = time.perf_counter()
    data, properties = io.read_images([ct])
    seconds["load"] = time.perf_counter() - start
    start = time.perf_counter()
    preprocessor = DefaultPreprocessor(verbose=False)
    data, _, properties = preprocessor.run_case_npy(
        data,
        None,
        properties,
        predictor.plans_manager,
        predictor.configuration_manager,
        predictor.dataset_json,
    )
    seconds["preprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    with nnunet_models.float32_sums() if sums == "32" else contextlib.nullcontext():
        logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
    seconds["network"] = time.perf_counter() - start
    start = time.perf_counter()
    segmentation, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits,
        predictor.plans_manager,
        predictor.configuration_manager,
        predictor.label_manager,
        properties,
        True,
    )
    seconds["postprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    io.write_seg(segmentation, str(Path(output) / "seg.nii.gz"), properties)
    np.save(Path(output) / "probability.npy", probabilities[1].astype(np.float32))
    seconds["write"] = time.perf_counter() - start
    bench_infer.report_peaks()
    print(json.dumps(seconds), flush=True)


def run_nnunet(ct: Path, folder: Path, output: Path, mirror: bool, sums: int = 16) -> dict[str, Any]:
    output.mkdir(parents=True, exist_ok=True)
    args = [
        __file__,
        "--child",
        "nnunet",
        str(ct),
        str(folder),
        str(output),
        "1" if mirror else "0",
        str(sums),
    ]
    wall, peak, _, stdout = bench_infer.run_child(args)
    return {"wall": wall, "peak_gib": peak, "seconds": json.loads(stdout.strip().splitlines()[-1])}


def run_pe_seg(ct: Path, folder: Path, output: Path, mirror: bool, extra: list[str]) -> dict[str, Any]:
    args = [__file__, "--child", "pe-seg", "-q", "infer", "--input", str(ct), "--output", str(output)]
    args += [
        "--nnunet",
        str(folder),
        "--folds",
        "0",
        "--device",
        "cpu",
        *(["--tta"] if mirror else []),
        *extra,
    ]
    wall, peak, _, _ = bench_infer.run_child(args)
    case = output / ct.name[: -len(".nii.gz")]
    report = json.loads((case / "report.json").read_text())
    return {
        "wall": wall,
        "peak_gib": peak,
        "seconds": report["seconds"],
        "territory": report["territory"],
        "case": case,
    }


def agreement(nnunet_out: Path, case: Path) -> tuple[float, float]:
    """Largest absolute difference of the probabilities, and Dice of the masks (threshold 0.5)."""
    import SimpleITK as sitk

    theirs = np.load(nnunet_out / "probability.npy")
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "probability.nii.gz")))
    a, b = theirs >= 0.5, ours >= 0.5
    dice = 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)
    return float(np.abs(theirs - ours).max()), dice


def line(name: str, result: dict[str, Any], base: dict[str, Any] | None) -> str:
    stages = ", ".join(f"{k} {v:.2f}" for k, v in result["seconds"].items())
    ratio = (
        ""
        if base is None
        else f"  ({base['wall'] / result['wall']:.2f}x faster, {result['peak_gib'] / base['peak_gib']:.2f}x memory)"
    )
    return f"{name:22s} wall {result['wall']:7.1f} s  peak {result['peak_gib']:.2f} GiB{ratio}\n{'':22s} {stages}"


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        if sys.argv[2] == "nnunet":
            child_nnunet(*sys.argv[3:8])
            return
        sys.exit(bench_infer.child_pe_seg(sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300), help="phantom voxels (x y z)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.7, 0.7, 1.0), help="phantom mm (x y z)")
    parser.add_argument("--network", choices=list(NETWORKS), default="published")
    parser.add_argument(
        "--plan-spacing",
        type=float,
        nargs=3,
        default=SPACING,
        help="the plan's spacing (z y x; published plan's)",
    )
    parser.add_argument("--mirror", action="store_true", help="mirroring (nnU-Net's default; pe-seg --tta)")
    parser.add_argument(
        "--float32-reference",
        action="store_true",
        help="also run nnUNetPredictor with float32 sliding-window sums and measure agreement against it",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        choices=RUNS,
        default=list(RUNS),
        help="pipelines to run, in this order after nnU-Net (a full-size fp32 run takes as long as nnU-Net's)",
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pe-seg-bench-nnunet")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ct, folder = make_inputs(
        args.work, tuple(args.shape), tuple(args.spacing), args.network, tuple(args.plan_spacing)
    )
    out = args.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    where = f"{'x'.join(map(str, args.shape))} at {' x '.join(map(str, args.spacing))} mm"
    print(f"CT {where}, network {args.network}, plan spacing {args.plan_spacing}, mirroring {args.mirror}")
    pe_seg_runs = {
        "pe-seg": ("pe-seg", []),
        "no-territory": ("pe-seg --no-territory", ["--no-territory"]),
        "fp32": ("pe-seg fp32", ["--precision", "fp32", "--no-territory", "--save-probability"]),
    }
    results: dict[str, dict[str, Any]] = {}
    if "nnunet" in args.runs:
        results["nnU-Net"] = run_nnunet(ct, folder, out / "nnunet", args.mirror)
        print(line("nnU-Net", results["nnU-Net"], None), flush=True)
    for run in args.runs:
        if run in pe_seg_runs:
            name, extra = pe_seg_runs[run]
            results[name] = run_pe_seg(ct, folder, out / run, args.mirror, extra)
            print(line(name, results[name], results.get("nnU-Net")), flush=True)
    if "pe-seg" in results:
        skipped = results["pe-seg"]["territory"]
        print(
            f"territory: {skipped.get('windows_run')} windows run, {skipped.get('windows_skipped')} skipped"
        )
    if "nnU-Net" in results and "pe-seg fp32" in results:
        difference, dice = agreement(out / "nnunet", results["pe-seg fp32"]["case"])
        print(
            f"agreement, pe-seg fp32 (no territory) vs nnU-Net as it runs: max |dp| {difference:.2e}, "
            f"Dice {dice:.4f}"
        )
    if args.float32_reference and "pe-seg fp32" in results:
        reference = run_nnunet(ct, folder, out / "nnunet32", args.mirror, sums=32)
        difference, dice = agreement(out / "nnunet32", results["pe-seg fp32"]["case"])
        print(line("nnU-Net float32 sums", reference, None))
        print(
            f"agreement, pe-seg fp32 vs nnU-Net with float32 sums: max |dp| {difference:.2e}, Dice {dice:.4f}"
        )


if __name__ == "__main__":
    main()
