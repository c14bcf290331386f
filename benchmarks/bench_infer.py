"""End-to-end ``pe-seg infer`` against a plain MONAI pipeline on a 512x512x300 CT series, in one run.

    .venv/bin/python benchmarks/bench_infer.py [--checkpoint PATH] [--slices 300] [--peer fp32 bf16]

Both pipelines run the same network with the same weights on the same DICOM series, each in its own process
started from scratch (imports, model loading and writing included), one after the other:

* ``pe-seg infer`` as users run it (mask NIfTI, DICOM SEG, JSON report and PNG preview), with its defaults:
  ``--precision auto`` (bf16 on this CPU) and channels-last;
* the plain MONAI model-zoo pipeline: ``LoadImaged`` (MONAI's default reader for a DICOM folder),
  ``EnsureChannelFirstd``, ``Orientationd``, ``Spacingd``, ``ScaleIntensityRanged``, ``SlidingWindowInferer``
  (Gaussian, same window size, overlap and window batch), ``Activationsd`` (softmax), ``Invertd``,
  ``AsDiscreted`` (argmax), ``SaveImaged``; ``fp32`` is how a bundle runs on a CPU (MONAI's engines autocast
  only on CUDA), ``bf16`` is the same pipeline given pe-seg's bf16 autocast + channels-last, so that the
  ratio shows what the pipeline alone gains.

Printed: stage timings, wall time, peak resident memory (``VmHWM`` of each process, or the sampled peak of
its process tree's summed ``Pss`` where that is larger, see :class:`TreeMemory`), the ratios, the
non-network share of pe-seg's wall time, and agreement: Dice between the pe-seg and MONAI masks, and of each
with the phantom's reference emboli. With ``--fast`` it also runs ``pe-seg infer --fast`` and reports its Dice
against the normal mode's mask and the reference.

pe-seg runs the network only on windows that hold some of the territory where emboli can be (lungs and
pulmonary arteries, found by the scan quality checks). The run ``pe-seg --no-territory`` runs every window, as
the MONAI pipeline does; the benchmark prints the share of windows skipped and the time this saves.

``--recipe CONFIG`` (issue 21) times that recipe's own network instead, e.g. ``configs/unet.yaml`` (width 32,
depth 4, 96^3 windows, 1 mm), with random weights whose last layer is biased so that about 5% of the voxels of
the phantom's windows are embolus (masks are not empty, probabilities not all near 0 or 1), saved once and used
by every pipeline. The phantom is ``--slices`` (default 400) axial slices of 512 x 512 at 0.7 x 0.7 x 1 mm, a
CTPA's real field of view. Runs alternate (``--repeats``, default 3); the medians decide. Targets: peak memory at
most 0.5x the fp32 MONAI pipeline's and under 3 GB, ``pe-seg --no-territory`` at least 6x faster than it.
``--baseline-tree DIR`` also runs pe-seg from another source tree (the code before a change) in the
alternation, and compares the two pe-segs' probability maps (``--save-probability``, one extra run each):
equal to 1e-3 is the target.

Without ``--checkpoint`` (or when that file does not exist yet) a model is first trained on phantoms with
``pe-seg``'s own engine (``configs/unet.yaml`` at ``--base-channels``, 64^3 patches, 96^3 inference windows)
and saved there, so later runs reuse it. Targets (issue 5): pe-seg at least 4x faster end to end than the
MONAI pipeline, at most 0.5x its peak memory, Dice agreement of the masks at least 0.98; on a CUDA GPU
(``--device cuda``, both pipelines there, the peer with fp16 autocast as bundles run) a full CTPA in under
5 s including I/O.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "pe-seg-bench"


# ------------------------------------------------------------------------------------------------ data, model


def make_series(folder: Path, slices: int, seed: int) -> tuple[Path, Path]:
    """A 512 x 512 x ``slices`` CTPA phantom at 0.7 x 0.7 x 1 mm as a DICOM series, and its embolus label."""
    from pe_segmentation.data.phantom import LABEL_EMBOLUS, PhantomSettings, generate_phantom
    from pe_segmentation.io.dicom_writer import write_dicom_series
    from pe_segmentation.io.volume_files import write_volume

    phantom = generate_phantom(PhantomSettings(shape=(512, 512, slices), spacing=(0.7, 0.7, 1.0)), seed)
    series = folder / "series"
    write_dicom_series(phantom.image, series, uid_seed=f"bench-infer-{seed}")
    label = phantom.label.with_array((phantom.label.array == LABEL_EMBOLUS).astype(np.uint8))
    return series, write_volume(label, folder / "reference.nii.gz")


def train_model(path: Path, base_channels: int, epochs: int, cases: int, work: Path) -> Path:
    """Train ``configs/unet.yaml`` at ``base_channels`` on phantoms with pe-seg's engine; copy best.pt to ``path``."""
    from pe_segmentation.config import load_config
    from pe_segmentation.data.phantom import PhantomSettings, generate_dataset
    from pe_segmentation.training import run_training

    data = work / "phantoms"
    # the bench series' field of view (358 x 358 x 300 mm) at a coarser voxel, resampled to 1 mm in training
    generate_dataset(
        data, cases, seed=1, settings=PhantomSettings(shape=(256, 256, 214), spacing=(1.4, 1.4, 1.4))
    )
    config = load_config(
        ROOT / "configs" / "unet.yaml",
        [
            f"data.path={data}",
            "data.dataset=synthetic",
            "data.val_fraction=0.15",
            f"model.base_channels={base_channels}",
            "patch.patch_size=[64, 64, 64]",
            "patch.samples_per_volume=4",
            "patch.pos_fraction=0.4",
            "validation.roi_size=[96, 96, 96]",
            f"validation.every={epochs}",
            f"training.epochs={epochs}",
            "training.augment=false",
            "training.channels_last=true",
            "optimizer.lr=3e-3",
            "schedule.warmup_epochs=1",
            f"output.run_dir={work / 'run'}",
            "output.tensorboard=false",
        ],
    )
    result = run_training(config, progress=False)
    best = result.best_checkpoint or result.last_checkpoint
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, path)
    print(f"trained {epochs} epochs on {cases} phantoms: validation Dice {result.best_dice}")
    return path


def untrained_model(path: Path, width: int) -> Path:
    """``configs/unet.yaml`` at ``width`` with random weights and a last layer that says "background" everywhere.

    For timing a network of another size without training it: the network's cost is that of a trained one,
    and its empty mask costs pe-seg's post-processing about what a trained model's few clots cost (the MONAI
    pipeline's inversion does not depend on the mask). Agreement figures are meaningless then and not printed.
    """
    import torch

    from pe_segmentation.config import load_config
    from pe_segmentation.networks import build_network
    from pe_segmentation.runtime.checkpoint import save_checkpoint

    config = load_config(ROOT / "configs" / "unet.yaml", [f"model.base_channels={width}"])
    torch.manual_seed(0)
    network = build_network(config.model.name, **config.model.params)
    head = [m for m in network.modules() if isinstance(m, torch.nn.Conv3d) and m.out_channels == 2][-1]
    with torch.no_grad():
        head.bias.copy_(torch.tensor([20.0, -20.0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(
        path, {"kind": "untrained", "model": network.state_dict(), "config": config.to_dict()}
    )


def recipe_model(recipe: Path, path: Path, series: Path, positive_share: float = 0.05) -> Path:
    """``recipe``'s network with random weights (seed 0) and a last layer biased so that about
    ``positive_share`` of the voxels of three windows of ``series`` (preprocessed, at the middle of the grid, fp32)
    have an embolus probability of 0.5 or more; saved as a checkpoint with the recipe's config."""
    import torch

    from pe_segmentation.config import load_config
    from pe_segmentation.data.transforms import build_inference_transforms
    from pe_segmentation.networks import build_network
    from pe_segmentation.runtime.checkpoint import save_checkpoint

    config = load_config(recipe)
    torch.manual_seed(0)
    network = build_network(config.model.name, **config.model.params).eval()
    image = build_inference_transforms(config.preprocessing)({"image": str(series)})["image"].as_tensor()
    roi = tuple(config.validation.roi_size or config.patch.patch_size)
    centre = [max(n // 2 - r // 2, 0) for n, r in zip(image.shape[1:], roi, strict=True)]
    samples = []
    for share in (0.3, 0.5, 0.7):  # three windows along the first axis
        start = list(centre)
        start[0] = min(int(image.shape[1] * share), max(image.shape[1] - roi[0], 0))
        index = tuple(slice(s, s + r) for s, r in zip(start, roi, strict=True))
        with torch.no_grad():
            logits = network(image[(slice(None), *index)][None]).float()
        log_odds = logits[:, -1] - (logits[:, 0] if logits.shape[1] > 1 else 0.0)
        samples.append(log_odds.flatten()[::7])
    shift = float(torch.quantile(torch.cat(samples), 1.0 - positive_share))
    head = [m for m in network.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.Conv2d))][-1]
    with torch.no_grad():
        head.bias[-1] -= shift
    print(f"{recipe.name}: random weights, last layer biased by {-shift:.3f} ({positive_share:.0%} positive)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(
        path, {"kind": "untrained", "model": network.state_dict(), "config": config.to_dict()}
    )


# ------------------------------------------------------------------------------------------------ the runs


PEAK_MARK = "bench-infer-peak-kib:"
GPU_PEAK_MARK = "bench-infer-gpu-peak-mib:"
TREE_MARK = "bench-infer-tree:"


def report_peaks() -> None:
    """Print this process's peak resident memory and, if it used CUDA, its peak GPU memory (for the parent)."""
    import torch

    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else 0.0
    print(f"{GPU_PEAK_MARK}{gpu:.1f}\n{PEAK_MARK}{own_peak_kib()}", flush=True)


def own_peak_kib() -> int:
    """This process's peak resident memory (KiB): ``VmHWM`` of ``/proc/self/status``.

    Not ``ru_maxrss`` from ``wait4``: Linux carries the parent's high-water mark into a forked child across
    ``exec``, so a child of a parent that trained a model in-process would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource  # not Linux: the best available figure

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child(args: list[str], tree: Path | None = None) -> tuple[float, float, float, str]:
    """Run a Python child process (with ``tree`` first on its ``PYTHONPATH``: another pe-seg source tree);
    return its wall time, its peak resident and GPU memory (GiB) and its stdout."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    sampler = TreeMemory(process.pid)
    sampler.start()
    stdout = process.stdout.read() if process.stdout else ""  # until the child closes it (at exit)
    process.wait()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} ... failed with exit code {process.returncode}")
    marks = [line for line in stdout.splitlines() if line.startswith(PEAK_MARK)]
    gpu_marks = [line for line in stdout.splitlines() if line.startswith(GPU_PEAK_MARK)]
    if not marks or not gpu_marks:
        raise SystemExit(f"{' '.join(args[:3])} ... did not report its peak memory")
    rest = "\n".join(line for line in stdout.splitlines() if not line.startswith((PEAK_MARK, GPU_PEAK_MARK)))
    gpu = float(gpu_marks[-1][len(GPU_PEAK_MARK) :]) / 1024
    peak = max(int(marks[-1][len(PEAK_MARK) :]), sampler.peak_kib) / 2**20
    return wall, peak, gpu, rest


class TreeMemory(threading.Thread):
    """The peak, sampled every 50 ms, of the memory of a process and all its descendants together: the sum of
    their proportional set sizes (``Pss``), which counts a page shared by several of them once. With
    ``VmHWM`` (a process's exact peak, reported by the child itself) it gives "process + children".

    Not ``ru_maxrss`` of ``RUSAGE_CHILDREN``: a child forked during imports (``import monai`` runs ``uname -p``)
    reports the whole parent's pages as its own, 0.4 GB here, and would be added to every pipeline's peak.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            total = sum(_pss_kib(pid) for pid in _process_tree(self.pid))
            self.peak_kib = max(self.peak_kib, total)
            self.stop.wait(self.interval)


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its living descendants (Linux ``/proc``; just ``pid`` elsewhere)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                stack.extend(int(child) for child in children.read_text().split())
            except OSError:  # the task ended meanwhile
                continue
    return found


def _pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)


def run_pe_seg(
    series: Path, output: Path, checkpoint: Path, device: str, extra: list[str], tree: Path | None = None
) -> dict[str, Any]:
    args = [__file__, "--child", "pe-seg", "--", "-q", "infer", "--input", str(series)]
    args += ["--output", str(output), "--checkpoint", str(checkpoint), "--device", device, *extra]
    wall, peak, gpu, stdout = run_child(args, tree)
    ran = [line[len(TREE_MARK) :] for line in stdout.splitlines() if line.startswith(TREE_MARK)]
    if tree is not None and ran != [str(tree)]:
        raise SystemExit(f"pe-seg ran from {ran}, not from {tree}")
    report = json.loads((output / series.name / "report.json").read_text())
    return {
        "wall": wall,
        "peak_gib": peak,
        "gpu_gib": gpu,
        "seconds": report["seconds"],
        "territory": report.get("territory", {}),
        "mask": output / series.name / "mask.nii.gz",
    }


def run_monai(series: Path, output: Path, checkpoint: Path, variant: str, device: str) -> dict[str, Any]:
    args = [__file__, "--child", "monai", "--", str(series), str(output), str(checkpoint)]
    wall, peak, gpu, stdout = run_child([*args, variant, device])
    seconds = json.loads(stdout.strip().splitlines()[-1])
    return {
        "wall": wall,
        "peak_gib": peak,
        "gpu_gib": gpu,
        "seconds": seconds,
        "mask": Path(seconds.pop("mask")),
    }


def monai_pipeline(series: str, output: str, checkpoint: str, variant: str, device_name: str = "cpu") -> None:
    """The MONAI model-zoo style pipeline (in a child process); prints its stage timings as JSON.

    ``variant``: ``fp32``, ``bf16`` or ``fp16`` (autocast, as a bundle's ``amp: true`` on a GPU), with
    ``+crop`` for the same pipeline given pe-seg's body crop (``CropForegroundd`` before ``Spacingd``, the
    checkpoint's threshold and margin), whose windows then lie where pe-seg's do. ``device_name``: on a GPU
    the preprocessed volume, the windows and the stitched output all live there, as in the model zoo's bundles.
    """
    precision, _, crop = variant.partition("+")
    seconds: dict[str, Any] = {}
    start = time.perf_counter()
    import torch
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import (
        Activationsd,
        AsDiscreted,
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Orientationd,
        SaveImaged,
        ScaleIntensityRanged,
        Spacingd,
    )

    from pe_segmentation.config import Config
    from pe_segmentation.networks import build_network
    from pe_segmentation.runtime.checkpoint import load_checkpoint

    saved = load_checkpoint(checkpoint)
    config = Config.from_dict(saved["config"])
    network = build_network(config.model.name, **config.model.params)
    network.load_state_dict(saved["model"])
    device = torch.device(device_name)
    network = network.to(device).eval()
    if device.type == "cuda":
        torch.ones(1, device=device).sum().item()  # CUDA context made here, not inside the first stage
    seconds["imports_and_model"] = time.perf_counter() - start

    pre = config.preprocessing
    a_min, a_max, b_min, b_max = pre.intensity_map  # the window, or the foreground scheme's clip and map
    load = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])
    steps: list[Any] = [Orientationd("image", axcodes="RAS")]
    if crop:
        threshold = pre.body_threshold_hu
        steps.append(
            CropForegroundd(
                "image", "image", select_fn=lambda x: x > threshold, margin=pre.margin, allow_smaller=True
            )
        )
    steps.append(Spacingd("image", pixdim=pre.monai_pixdim, mode="bilinear"))
    steps.append(ScaleIntensityRanged("image", a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True))
    preprocess = Compose(steps)
    roi = tuple(config.validation.roi_size or config.patch.patch_size)
    inferer = SlidingWindowInferer(
        roi, config.inference.sw_batch_size, config.inference.overlap, mode="gaussian", device=device
    )
    post = Compose(
        [
            Activationsd("pred", softmax=True),
            Invertd("pred", transform=preprocess, orig_keys="image", nearest_interp=False, to_tensor=True),
            AsDiscreted("pred", argmax=True),
        ]
    )
    save = SaveImaged(
        "pred",
        output_dir=output,
        output_postfix="seg",
        separate_folder=False,
        resample=False,
        output_dtype=np.uint8,
    )

    def timed(name: str, fn: Any, data: Any) -> Any:
        begin = time.perf_counter()
        result = fn(data)
        seconds[name] = time.perf_counter() - begin
        return result

    data = timed("load", load, {"image": series})
    data = timed("preprocess", preprocess, data)
    begin = time.perf_counter()
    with torch.no_grad():
        image = data["image"][None].to(device)
        if precision in ("bf16", "fp16"):
            network = network.to(memory_format=torch.channels_last_3d)

            def forward(x: torch.Tensor) -> torch.Tensor:
                return network(x.contiguous(memory_format=torch.channels_last_3d)).float()

            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            with torch.autocast(device.type, dtype=dtype):
                data["pred"] = inferer(image, forward)[0]
        else:
            data["pred"] = inferer(image, network)[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    seconds["network"] = time.perf_counter() - begin
    data = timed("invert", post, data)
    timed("save", save, data)
    seconds["mask"] = str(next(Path(output).glob("*_seg.nii*")))
    print(json.dumps(seconds))
    report_peaks()


def child_pe_seg(argv: list[str]) -> int:
    """``pe-seg ARGV`` through the real CLI; says which source tree ran it."""
    import pe_segmentation
    from pe_segmentation.cli import main

    code = main(argv)
    report_peaks()
    print(f"{TREE_MARK}{Path(pe_segmentation.__file__).resolve().parents[1]}", flush=True)
    return code


# ------------------------------------------------------------------------------------------------ comparison


def read_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A mask in its closest RAS orientation (so that grids written in other axis orders compare)."""
    import nibabel as nib

    image = nib.as_closest_canonical(nib.load(path))
    return np.asarray(image.dataobj) > 0, image.affine


def dice(a: Path, b: Path) -> float:
    (x, ax), (y, ay) = read_mask(a), read_mask(b)
    if x.shape != y.shape or not np.allclose(ax, ay, atol=1e-3):
        raise SystemExit(f"{a} and {b} are not on the same grid: {x.shape} {y.shape}\n{ax}\n{ay}")
    total = int(x.sum()) + int(y.sum())
    return 2.0 * int(np.logical_and(x, y).sum()) / total if total else 1.0


def stage_line(name: str, result: dict[str, Any], network_key: str = "network") -> str:
    stages = ", ".join(f"{k} {v:.2f}" for k, v in result["seconds"].items() if isinstance(v, float))
    network = result["seconds"].get(network_key, 0.0)
    share = (result["wall"] - network) / result["wall"]
    gpu = f" (GPU {result['gpu_gib']:5.2f} GiB)" if result["gpu_gib"] else ""
    return (
        f"{name:<16} wall {result['wall']:7.1f} s | peak {result['peak_gib']:5.2f} GiB{gpu} | "
        f"non-network {result['wall'] - network:5.1f} s ({share:.0%}) | stages (s): {stages}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, help=f"trained there if missing (default: {CACHE}/bench_infer_unetB_eE.pt)"
    )
    parser.add_argument("--base-channels", type=int, default=16, help="width of the trained model")
    parser.add_argument("--train-epochs", type=int, default=40)
    parser.add_argument(
        "--untrained-width",
        type=int,
        help="time an untrained configs/unet.yaml network of this width instead (no agreement figures)",
    )
    parser.add_argument(
        "--recipe",
        type=Path,
        help="time this recipe's network (random weights, last layer biased to ~5%% positive voxels) on a "
        "full-size phantom; default peers: fp32; 3 repeats; 400 slices",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="also run pe-seg from this source tree (e.g. the commit before a change) and compare probabilities",
    )
    parser.add_argument("--train-cases", type=int, default=7)
    parser.add_argument("--slices", type=int, help="phantom slices (default 300; 400 with --recipe)")
    parser.add_argument("--seed", type=int, default=7, help="phantom seed of the benchmark series")
    parser.add_argument(
        "--peer",
        nargs="+",
        choices=["fp32", "bf16", "fp16", "fp32+crop", "bf16+crop", "fp16+crop"],
        help="MONAI pipelines to run (+crop: with pe-seg's body crop, for a like-for-like agreement; default: "
        "fp32 bf16 bf16+crop, with --recipe fp32)",
    )
    parser.add_argument("--fast", action="store_true", help="also run pe-seg infer --fast")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N, for both pipelines")
    parser.add_argument(
        "--repeats",
        type=int,
        help="alternating runs of each; medians are printed (default 2; 3 with --recipe)",
    )
    parser.add_argument(
        "--keep", type=Path, help="keep the series and outputs in this folder (and reuse them)"
    )
    parser.add_argument("--child", choices=["pe-seg", "monai"], help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    recipe = args.recipe is not None
    args.slices = args.slices or (400 if recipe else 300)
    args.repeats = args.repeats or (3 if recipe else 2)
    args.peer = args.peer or (["fp32"] if recipe else ["fp32", "bf16", "bf16+crop"])
    return args


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """The benchmark series (reused from ``--keep``) and its reference label; the checkpoint in
    ``args.checkpoint``."""
    series, reference = work / "series", work / "reference.nii.gz"
    start = time.perf_counter()
    if not (args.keep and reference.is_file() and len(list(series.glob("*"))) == args.slices):
        series, reference = make_series(work, args.slices, args.seed)
    if args.recipe is not None:
        args.checkpoint = recipe_model(args.recipe, work / f"recipe_{args.recipe.stem}.pt", series)
    elif args.untrained_width is not None:
        args.checkpoint = untrained_model(
            work / f"untrained_unet{args.untrained_width}.pt", args.untrained_width
        )
    elif args.checkpoint is None:
        args.checkpoint = CACHE / f"bench_infer_unet{args.base_channels}_e{args.train_epochs}.pt"
    if not args.checkpoint.is_file():
        print(f"no {args.checkpoint}: training one (cached for later runs)")
        train_model(args.checkpoint, args.base_channels, args.train_epochs, args.train_cases, work / "train")
    for path in series.iterdir():  # warm the page cache for both pipelines alike
        path.read_bytes()
    print(f"series ready in {time.perf_counter() - start:.1f} s")
    return series, reference


def pipelines(args: argparse.Namespace, series: Path) -> dict[str, Any]:
    """Each pipeline to time: its name and a function of its output folder."""
    device, checkpoint = args.device, args.checkpoint
    runs: dict[str, Any] = {
        "pe-seg": lambda out: run_pe_seg(series, out, checkpoint, device, []),
        "pe-seg --no-territory": lambda out: run_pe_seg(series, out, checkpoint, device, ["--no-territory"]),
    }
    if args.baseline_tree is not None:
        tree = args.baseline_tree.resolve()
        runs["baseline"] = lambda out: run_pe_seg(series, out, checkpoint, device, [], tree)
        runs["baseline --no-territory"] = lambda out: run_pe_seg(
            series, out, checkpoint, device, ["--no-territory"], tree
        )
    for precision in args.peer:
        runs[f"monai {precision}"] = lambda out, p=precision: run_monai(series, out, checkpoint, p, device)
    if args.fast:
        runs["pe-seg --fast"] = lambda out: run_pe_seg(series, out, checkpoint, device, ["--fast"])
    return runs


def alternate(runs: dict[str, Any], repeats: int, work: Path) -> dict[str, dict[str, Any]]:
    """Run every pipeline ``repeats`` times, alternating; per pipeline the run of median wall time, with the
    medians (and ranges) of wall time and peak memory over all its runs."""
    every: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for repeat in range(repeats):
        for name, run in runs.items():
            out = work / f"{name.replace(' ', '_').replace('-', '')}_{repeat}"
            result = run(out)
            every[name].append(result)
            print(
                f"  run {repeat + 1}/{repeats} {name}: {result['wall']:.1f} s, {result['peak_gib']:.2f} GiB",
                flush=True,
            )
    results = {}
    for name, done in every.items():
        walls = [r["wall"] for r in done]
        peaks = [r["peak_gib"] for r in done]
        middle = sorted(done, key=lambda r: r["wall"])[len(done) // 2]
        results[name] = {
            **middle,
            "wall": statistics.median(walls),
            "walls": walls,
            "peak_gib": statistics.median(peaks),
            "peaks": peaks,
        }
    return results


def print_ratios(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    ours = results["pe-seg"]
    for name, result in results.items():
        walls = ", ".join(f"{w:.1f}" for w in result["walls"])
        peaks = ", ".join(f"{p:.2f}" for p in result["peaks"])
        print(
            f"{name:<24} wall median {result['wall']:7.1f} s ({walls}) | peak median "
            f"{result['peak_gib']:5.2f} GiB ({peaks})"
        )
    print()
    for name, result in results.items():
        print(stage_line(name, result))
    print()
    untrained = args.untrained_width is not None
    for name, result in results.items():
        if name == "pe-seg":
            continue
        ratio = result["wall"] / ours["wall"]
        agreement = "n/a (untrained)" if untrained else f"{dice(ours['mask'], result['mask']):.4f}"
        print(
            f"{name:<24} wall ratio vs pe-seg {ratio:5.2f}x | peak memory ratio "
            f"{ours['peak_gib'] / result['peak_gib']:.2f}x | Dice with pe-seg mask {agreement}"
        )
    if not untrained:
        # an agreement of two empty masks is 1.0 and says nothing: show how much each mask holds
        print(
            "mask voxels: "
            + ", ".join(f"{n} {int(read_mask(r['mask'])[0].sum())}" for n, r in results.items())
        )


def print_targets(results: dict[str, dict[str, Any]]) -> None:
    """Issue 21's targets against the fp32 MONAI pipeline, from the medians."""
    peer = results.get("monai fp32")
    if peer is None:
        return
    every = results["pe-seg --no-territory"]
    ours = results["pe-seg"]
    peak = max(ours["peak_gib"], every["peak_gib"])
    print(
        f"\ntargets vs monai fp32 (medians): peak {peak:.2f} GiB = {peak / peer['peak_gib']:.2f}x its "
        f"{peer['peak_gib']:.2f} GiB (target <= 0.5x and < 3 GiB); speed --no-territory "
        f"{peer['wall'] / every['wall']:.2f}x (target >= 6x), with the territory {peer['wall'] / ours['wall']:.2f}x"
    )
    for name in ("baseline", "baseline --no-territory"):
        if name in results:
            base, new = results[name], results[name.replace("baseline", "pe-seg")]
            print(
                f"{name.replace('baseline', 'pe-seg'):<24} vs the baseline tree: peak "
                f"{new['peak_gib']:.2f} vs {base['peak_gib']:.2f} GiB ({new['peak_gib'] / base['peak_gib']:.2f}x), "
                f"wall {new['wall']:.1f} vs {base['wall']:.1f} s ({base['wall'] / new['wall']:.2f}x faster)"
            )


def compare_probabilities(args: argparse.Namespace, series: Path, work: Path) -> None:
    """One ``--save-probability`` run of pe-seg here and in the baseline tree: the largest difference."""
    import nibabel as nib

    maps = []
    for name, tree in (("pe-seg", None), ("baseline", args.baseline_tree.resolve())):
        out = work / f"probability_{name}"
        run_pe_seg(series, out, args.checkpoint, args.device, ["--save-probability"], tree)
        maps.append(np.asarray(nib.load(out / series.name / "probability.nii.gz").dataobj, dtype=np.float32))
    difference = np.abs(maps[0] - maps[1])
    print(
        f"probabilities vs the baseline tree: max |difference| {difference.max():.2e} (target <= 1e-3), "
        f"mean {difference.mean():.2e}; voxels >= 0.5: {int((maps[0] >= 0.5).sum())} vs "
        f"{int((maps[1] >= 0.5).sum())}"
    )


def main() -> None:
    args = parse_args()
    if args.child == "pe-seg":
        raise SystemExit(child_pe_seg(args.rest))
    if args.child == "monai":
        monai_pipeline(*args.rest)
        return

    import torch

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_infer_"))
    work.mkdir(parents=True, exist_ok=True)
    series, reference = prepare(args, work)
    print(
        f"series: 512x512x{args.slices} at 0.7x0.7x1.0 mm (phantom seed {args.seed}); checkpoint "
        f"{args.checkpoint}; device {args.device}"
        + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else "")
        + f", CPU threads {torch.get_num_threads()}, torch {torch.__version__}; load average "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
    )
    results = alternate(pipelines(args, series), args.repeats, work)
    print(f"load average after the runs: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print_ratios(args, results)
    if args.untrained_width is None and args.recipe is None:
        print()
        for name, result in results.items():
            print(
                f"{name:<16} Dice with the phantom's reference emboli {dice(result['mask'], reference):.4f}"
            )
    ours, every = results["pe-seg"], results["pe-seg --no-territory"]
    territory = ours["territory"]
    print(
        f"\nterritory: {territory.get('windows_skipped', 0)} of "
        f"{territory.get('windows_run', 0) + territory.get('windows_skipped', 0)} windows skipped "
        f"({territory.get('skipped_share', 0.0):.0%}); network {ours['seconds']['network']:.1f} s vs "
        f"{every['seconds']['network']:.1f} s with every window, wall {ours['wall']:.1f} s vs {every['wall']:.1f} s "
        f"(saves {every['wall'] - ours['wall']:.1f} s, {1 - ours['wall'] / every['wall']:.0%}); "
        f"{territory.get('dropped_clots', 0)} candidate clot(s) dropped outside it"
    )
    network_share = 1 - ours["seconds"]["network"] / ours["wall"]
    print(
        f"\npe-seg: non-network time {network_share:.0%} of its wall time; "
        + ", ".join(
            f"{results[n]['wall'] / ours['wall']:.2f}x faster than {n}"
            for n in results
            if n.startswith("monai")
        )
    )
    print_targets(results)
    if args.baseline_tree is not None:
        compare_probabilities(args, series, work)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
