"""Where the memory of one ``pe-seg infer`` goes: resident memory at each stage boundary, each stage's exact peak.

    .venv/bin/python benchmarks/trace_infer_memory.py --input CT --checkpoint CKPT [--tree DIR] [--trim]

Runs ``pe-seg infer --device cpu`` on one case in this process, through the real CLI, with the predictor's
stages wrapped. At each boundary it reads ``VmRSS`` (what the process holds) and ``VmHWM`` (its peak since the
previous boundary), then resets ``VmHWM`` (``5`` into ``/proc/self/clear_refs``, Linux 4.0 and later), so each
stage's peak is exact, not sampled. Stage names that a tree lacks are skipped, so an older tree traces too:

* ``--tree DIR`` runs the ``pe_segmentation`` of another source tree, e.g. a checkout of the commit before
  issue 21 (``git worktree add BASE e44bdcb``);
* ``--trim`` hands the freed memory back to the system (``malloc_trim``) before every stage, which the pre-issue
  pipeline never did, so that each stage's own need shows instead of the heap that earlier stages left behind.

For a tree with a memory budget it also prints what the plan expected of each stage
(:mod:`pe_segmentation.runtime.memory_budget`), beside what was measured. docs/inference.md ("Where the memory
goes") has the figures for the shipped recipe on a 512 x 512 x 400 CTPA.
"""

from __future__ import annotations

import argparse
import ctypes
import inspect
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GIB = 2**30
T0 = time.perf_counter()


def status_bytes(field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM``) of this process, in bytes."""
    text = Path("/proc/self/status").read_text(encoding="ascii")
    found = re.search(field + r":\s+(\d+)", text)
    return int(found.group(1)) * 1024 if found else 0


class Trace:
    """Stage boundaries: the resident memory at each, and the peak since the one before."""

    def __init__(self, trim: bool) -> None:
        self.trim = trim
        self.marks: list[dict[str, Any]] = []
        self.captured: dict[str, Any] = {}
        self._reset()

    @staticmethod
    def _reset() -> None:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")

    def mark(self, label: str) -> None:
        """Record a boundary (``> stage`` when it starts, ``< stage`` when it ends) and restart the peak."""
        if self.trim and label.startswith(">"):
            ctypes.CDLL(None).malloc_trim(0)
        rss, peak = status_bytes("VmRSS"), status_bytes("VmHWM")
        self.marks.append(
            {"t": time.perf_counter() - T0, "label": label, "rss": rss, "peak_since_last": peak}
        )
        self._reset()

    def wrap(self, owner: Any, name: str, label: str | None = None, keep: str | None = None) -> None:
        """Mark the start and end of every call of ``owner.name`` (skipped when it has none)."""
        if not hasattr(owner, name):
            return
        static = inspect.getattr_static(owner, name)
        original = getattr(owner, name)  # bound already for a classmethod
        text = label or name

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.mark("> " + text)
            result = original(*args, **kwargs)
            self.mark("< " + text)
            if keep:
                self.captured[keep] = result
            return result

        setattr(owner, name, staticmethod(wrapped) if isinstance(static, classmethod) else wrapped)

    def table(self) -> str:
        """One line per boundary: resident memory then, and the peak since the previous one."""
        lines = [f"{'time':>7}  {'boundary':<58} {'VmRSS':>9}  {'peak since the line above':>25}"]
        for m in self.marks:
            lines.append(
                f"{m['t']:6.1f}s  {m['label']:<58} {m['rss'] / GIB:5.2f} GiB  {m['peak_since_last'] / GIB:21.2f} GiB"
            )
        return "\n".join(lines)


def instrument(trace: Trace) -> None:
    """Wrap the stages of ``pe-seg infer``'s predictor, in whichever tree was imported."""
    import pe_segmentation.inference.case_run as case_run
    import pe_segmentation.inference.predictor as predictor
    import pe_segmentation.inference.window_network as window_network

    trace.wrap(
        predictor.Predictor, "from_checkpoint", "Predictor.from_checkpoint (weights, window measurement)"
    )
    for name in ("load_volume", "assess_scan", "drop_outside_territory", "probability_to_mask"):
        trace.wrap(predictor, name)
    for name in ("_preprocess", "_network_territory", "_drop_small_clots"):
        trace.wrap(predictor.Predictor, name)
    trace.wrap(predictor, "network_probability", "network (sliding window)")  # since issue 21
    trace.wrap(predictor.Predictor, "_network_probability", "network (sliding window)")  # before
    trace.wrap(predictor, "release_freed_memory", "release_freed_memory (predictor)")
    trace.wrap(case_run, "write_case", "write_case (NIfTI, DICOM SEG, report, preview)")
    try:
        import pe_segmentation.inference.memory as memory
        import pe_segmentation.inference.preprocessing as preprocessing
    except ImportError:  # before issue 21: the chain ran whole inside Predictor._preprocess
        _wrap_split(trace, predictor, "_split_at_resampling", wrap_after=True)
    else:
        _wrap_split(trace, preprocessing, "split_at_resampling", wrap_after=False)
        trace.wrap(preprocessing, "_resample_in_slabs", "resampling in slabs")
        trace.wrap(memory, "release_freed_memory", "release_freed_memory (memory budget)")
        trace.wrap(memory.MemoryGuard, "plan", "memory plan", keep="plan")
        original = memory.preprocess_estimate

        def preprocess_estimate(*args: Any, **kwargs: Any) -> Any:
            trace.captured["preprocess"] = original(*args, **kwargs)
            return trace.captured["preprocess"]

        memory.preprocess_estimate = preprocess_estimate
    _wrap_first_batch(trace, window_network.EmbolusLogit)


def _wrap_split(trace: Trace, owner: Any, name: str, wrap_after: bool) -> None:
    """Mark the chain up to the body crop (and, when it runs whole, the resampling after it)."""
    original: Callable[[Any], tuple[Any, Any]] = getattr(owner, name)

    def split(chain: Any) -> tuple[Any, Any]:
        before, after = original(chain)

        def run_before(data: Any) -> Any:
            trace.mark("> chain up to the body crop")
            result = before(data)
            trace.mark("< chain up to the body crop")
            return result

        def run_after(data: Any) -> Any:
            trace.mark("> resampling and windowing, whole volume")
            result = after(data)
            trace.mark("< resampling and windowing, whole volume")
            return result

        return run_before, (run_after if wrap_after else after)

    setattr(owner, name, split)


def _wrap_first_batch(trace: Trace, network: Any) -> None:
    """Mark the first network call on two or more windows (the window batch's activations)."""
    original = network._averaged_log_odds
    seen = {"done": False}

    def averaged(self: Any, x: Any) -> Any:
        first = not seen["done"] and x.shape[0] >= 2 and any("network" in m["label"] for m in trace.marks)
        if first:
            seen["done"] = True
            trace.mark("> first batch of windows")
        result = original(self, x)
        if first:
            trace.mark("< first batch of windows")
        return result

    network._averaged_log_odds = averaged


def estimates(trace: Trace) -> list[str]:
    """What the memory plan expected of each stage, when the tree has one."""
    lines = []
    for estimate in [trace.captured.get("preprocess"), *getattr(trace.captured.get("plan"), "stages", ())]:
        if estimate is None:
            continue
        parts = ", ".join(f"{name} {size / GIB:.3f}" for name, size in estimate.parts.items())
        lines.append(f"  {estimate.stage:<11} +{estimate.total / GIB:.3f} GiB over what is held ({parts})")
    plan = trace.captured.get("plan")
    if plan is not None:
        lines.append(
            f"  plan: window batch {plan.sw_batch_size}, {plan.output_dtype} stitching, expected peak "
            f"{plan.peak_bytes / GIB:.2f} GiB"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="one CT (DICOM folder or volume file)")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--tree", type=Path, help="run the pe_segmentation of this source tree")
    parser.add_argument("--trim", action="store_true", help="hand freed memory back before every stage")
    parser.add_argument("--output", type=Path, help="pe-seg infer's output folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the boundaries here")
    args, extra = parser.parse_known_args()
    if args.tree is not None:
        sys.path.insert(0, str(args.tree.resolve()))
    trace = Trace(args.trim)
    trace.mark("python started")
    import torch  # noqa: F401

    trace.mark("torch imported")
    import pe_segmentation
    from pe_segmentation.cli import main as pe_seg

    trace.mark("monai, pe_segmentation imported")
    instrument(trace)
    with tempfile.TemporaryDirectory() as scratch:
        output = args.output or Path(scratch)
        infer = ["infer", "--input", args.input, "--output", str(output), "--checkpoint", args.checkpoint]
        code = pe_seg(["-q", *infer, "--device", "cpu", *extra])
    trace.mark("end")
    ctypes.CDLL(None).malloc_trim(0)
    trace.mark("after malloc_trim")
    print(f"pe-seg infer from {Path(pe_segmentation.__file__).parent}: exit code {code}")
    print(trace.table())
    peak = max(m["peak_since_last"] for m in trace.marks)
    print(f"peak resident memory: {peak / GIB:.2f} GiB")
    lines = estimates(trace)
    if lines:
        print("the memory plan's estimates (runtime/memory_budget.py):", *lines, sep="\n")
    if args.json is not None:
        args.json.write_text(json.dumps({"marks": trace.marks, "peak": peak, "exit_code": code}, indent=1))
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
