"""Training at the scale of real data sets: full-size phantoms, preprocessed once into the store, patches read from
it; against the same training reading MONAI's disk cache (``PersistentDataset``), in the same run.

    .venv/bin/python benchmarks/bench_scale.py [--cases 60] [--work DIR] [--workers 2] [--iterations 50]

Steps (each timed):

1. synthesize ``--cases`` phantoms of 512 x 512 x 300 voxels at 0.7 mm (``--profile``, ``--seed``) into
   ``WORK/phantoms`` (kept, and reused by the next call with the same settings);
2. ``pe-seg plan`` for this CPU (:func:`pe_segmentation.api.plan`) into ``WORK/plan``: its time, and the
   planned spacing, patch and normalisation (the training below keeps its one fixed network);
3. ``pe-seg preprocess`` (:func:`pe_segmentation.api.preprocess`) of ``configs/unet.yaml`` into ``WORK/store``:
   seconds per case, store size against the raw NIfTI;
4. ``--iterations`` training iterations of ``configs/unet.yaml`` at width 16 on 64^3 patches, in a child process,
   reading the store (``data.cache: store``, ``--workers`` persistent workers); then the peer: the same
   training with ``data.cache: disk`` (MONAI's ``PersistentDataset`` of whole preprocessed volumes), once to fill
   its cache (cold: every volume is read and preprocessed in the loop) and once reading it (warm).

For each training it prints the peak memory of the trainer and its workers together (summed PSS, sampled every
0.1 s from ``/proc/PID/smaps_rollup`` over the process tree, what ``psutil``'s ``memory_full_info().pss`` reads),
and the share of each iteration spent waiting for data (from ignite's ``GET_BATCH_STARTED`` to
``GET_BATCH_COMPLETED``, over the iteration to its ``ITERATION_COMPLETED``), first iteration apart (worker
start-up). Targets (issue 18): store under 2 GB, data waits under 10 %. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "unet.yaml"
SHAPE = (512, 512, 300)
SPACING = (0.7, 0.7, 0.7)


# ------------------------------------------------------------------------------------------------ memory


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                todo += [int(p) for p in task.read_text().split()]
    return found


class PeakPss:
    """Samples the summed PSS of a process tree every ``interval`` seconds in a thread; ``peak_mb`` after."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval, self.peak_kb = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in _tree(self.pid)))
            self._stop.wait(self.interval)

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


# ------------------------------------------------------------------------------------------------ child


class Timing:
    """Per iteration: seconds waiting for the batch, and seconds of the whole iteration; stops the run after
    ``stop_after`` iterations."""

    def __init__(self, stop_after: int) -> None:
        self.stop_after, self.waits, self.totals = stop_after, [], []
        self._start = self._got = 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(
            Events.GET_BATCH_STARTED, lambda _: setattr(self, "_start", time.perf_counter())
        )
        engine.add_event_handler(
            Events.GET_BATCH_COMPLETED, lambda _: setattr(self, "_got", time.perf_counter())
        )
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _completed(self, engine) -> None:
        now = time.perf_counter()
        self.waits.append(self._got - self._start)
        self.totals.append(now - self._start)
        if len(self.totals) >= self.stop_after:
            engine.terminate()


def child(arguments: str) -> None:
    """The training run in its own process (so that its memory is measured alone); writes its timings."""
    from pe_segmentation.api import train

    spec = json.loads(arguments)
    timing = Timing(spec["iterations"])
    begin = time.perf_counter()
    train(str(RECIPE), spec["overrides"], handlers=[timing])
    result = {"waits": timing.waits, "totals": timing.totals, "seconds": time.perf_counter() - begin}
    Path(spec["output"]).write_text(json.dumps(result))


def train_in_child(work: Path, name: str, overrides: list[str], iterations: int) -> dict:
    """Run :func:`child`, measuring the peak PSS of its process tree; its log goes to ``WORK/name.log``."""
    output = work / f"{name}.json"
    spec = {"overrides": overrides, "iterations": iterations, "output": str(output)}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(work / f"{name}.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        with PeakPss(process.pid) as memory:
            code = process.wait()
    if code != 0:
        raise SystemExit(f"{name}: training failed (exit {code}); see {work / f'{name}.log'}")
    result = json.loads(output.read_text())
    result["peak_mb"] = memory.peak_mb
    return result


# ------------------------------------------------------------------------------------------------ steps


def synthesize(folder: Path, cases: int, seed: int, profile: str) -> float | None:
    """The phantoms (reused when ``folder`` already holds this set); seconds per case, ``None`` if reused."""
    from pe_segmentation.api import synth

    marker = folder / "bench_scale.json"
    wanted = {"cases": cases, "seed": seed, "profile": profile, "shape": SHAPE, "spacing": SPACING}
    if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(wanted)):
        return None
    shutil.rmtree(folder, ignore_errors=True)
    begin = time.perf_counter()
    shape, spacing = list(SHAPE), list(SPACING)
    synth(folder, cases, seed, shape=shape, spacing=spacing, profile=profile, progress=True)
    marker.write_text(json.dumps(wanted))
    return (time.perf_counter() - begin) / cases


def plan(datalist: Path, output: Path) -> str:
    """``pe-seg plan`` on the set, for this CPU: its fingerprint time and the recipe's main figures."""
    from pe_segmentation.api import plan as plan_dataset

    begin = time.perf_counter()
    run = plan_dataset(datalist, output, cpu=True)
    seconds = time.perf_counter() - begin
    recipe = yaml.safe_load((output / "plan.yaml").read_text())
    return (
        f"{seconds:.1f} s ({seconds / max(1, len(run.fingerprint.cases)):.2f} s per case); spacing "
        f"{recipe['preprocessing']['spacing']} mm, patch {recipe['patch']['patch_size']}, "
        f"normalisation {recipe['preprocessing']['normalization']}; {output / 'plan.yaml'}"
    )


def _summary(name: str, result: dict) -> str:
    waits, totals = result["waits"][1:], result["totals"][1:]
    share = sum(waits) / sum(totals) if totals else float("nan")
    shares = [w / t for w, t in zip(waits, totals, strict=True) if t > 0]
    return (
        f"{name:<16} peak PSS {result['peak_mb']:7.0f} MB | iteration median {statistics.median(totals):6.3f} s | "
        f"data wait {100 * share:5.1f} % of iteration time (median per iteration {100 * statistics.median(shares):5.1f} %) "
        f"| first iteration {result['totals'][0]:6.1f} s | run {result['seconds']:6.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--work", type=Path, default=Path("bench_scale_work"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", choices=("uniform", "clinical"), default="uniform")
    parser.add_argument(
        "--workers", type=int, default=2, help="data-loader workers (and preprocessing processes)"
    )
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--no-peer", action="store_true", help="skip the disk-cache peer")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    phantoms = work / "phantoms"
    per_case = synthesize(phantoms, args.cases, args.seed, args.profile)
    print(
        f"synthesis: {args.cases} phantoms {SHAPE} at {SPACING} mm, "
        + ("reused" if per_case is None else f"{per_case:.1f} s per case")
    )
    print(f"plan: {plan(phantoms / 'datalist.json', work / 'plan')}")

    from pe_segmentation.api import preprocess

    common = [
        f"data.path={phantoms / 'datalist.json'}",
        "data.dataset=datalist",
        "data.val_fraction=0",
        f"data.num_workers={args.workers}",
        "model.base_channels=16",
        "patch.patch_size=[64,64,64]",
        "output.tensorboard=false",
    ]
    store_dir = work / "store"
    shutil.rmtree(store_dir, ignore_errors=True)
    begin = time.perf_counter()
    result = preprocess(
        str(RECIPE), [*common, f"data.store_dir={store_dir}", f"output.run_dir={work / 'prep'}"]
    )
    wall = time.perf_counter() - begin
    seconds = sorted(result.seconds)
    print(
        f"preprocess: {result.cases} cases in {wall:.0f} s with {args.workers} worker(s): {wall / result.cases:.1f} s "
        f"per case (wall), median {statistics.median(seconds):.1f} s per case in one worker; store "
        f"{result.store_bytes / 1e9:.2f} GB vs raw NIfTI {result.source_bytes / 1e9:.2f} GB "
        f"({result.store_bytes / result.source_bytes:.2f}x)"
    )
    runs = {}
    shutil.rmtree(work / "runs", ignore_errors=True)
    store = [
        *common,
        "data.cache=store",
        f"data.store_dir={store_dir}",
        f"output.run_dir={work / 'runs/store'}",
    ]
    runs["store"] = train_in_child(work, "store", store, args.iterations)
    print(_summary("store", runs["store"]), flush=True)
    if not args.no_peer:
        disk = [*common, "data.cache=disk", f"output.run_dir={work / 'runs/disk'}"]
        runs["disk (cold)"] = train_in_child(work, "disk_cold", disk, args.iterations)
        print(_summary("disk (cold)", runs["disk (cold)"]), flush=True)
        shutil.rmtree(
            work / "runs/disk/checkpoints", ignore_errors=True
        )  # the same folder: its cache is kept
        runs["disk (warm)"] = train_in_child(work, "disk_warm", disk, args.iterations)
        print(_summary("disk (warm)", runs["disk (warm)"]), flush=True)
        cache = sum(p.stat().st_size for p in (work / "runs/disk/cache").rglob("*.pt"))
        print(f"disk cache: {cache / 1e9:.2f} GB for the volumes its {args.iterations} iterations read")
        warm, ours = runs["disk (warm)"], runs["store"]
        print(
            f"ratio store / disk (warm): peak PSS {ours['peak_mb'] / warm['peak_mb']:.2f}x, "
            f"median iteration {statistics.median(ours['totals'][1:]) / statistics.median(warm['totals'][1:]):.2f}x"
        )


if __name__ == "__main__":
    main()
