"""Time every registered network on one 3D patch: fp32 vs bfloat16 autocast, with and without channels-last.

    .venv/bin/python benchmarks/bench_networks.py [--size 64] [--repeats 5] [--train-repeats 3]
        [--device auto] [--networks unet monai_unet ...] [--no-backward] [--profile unet ...]

For each network (registry defaults: 1 input channel, 2 classes; batch 1) it measures, after one warm-up run
per setting (oneDNN/cuDNN choose and cache kernels on first use):

* forward time (eval mode, ``torch.no_grad``), median of ``--repeats``, in four settings: fp32,
  fp32 + channels_last_3d ("CL"), bf16 autocast, bf16 autocast + channels_last_3d (on CUDA also fp16 autocast
  + CL, then the fastest setting);
* forward + backward time (training mode), median of ``--train-repeats``, for fp32, bf16 and bf16 + CL;

and prints the speed-ups against fp32 measured in the same run, the agreement of the bf16 + CL prediction with
fp32 (share of voxels with the same arg-max class, largest softmax difference), and a second table with the
speed-ups of each setting's fastest run, which other load on a shared machine disturbs least. Settings are
interleaved within each repetition, and each setting runs its own copy of the network, converted to its
memory format once.

``--profile NAME ...`` prints instead the operators that dominate those networks' forward and training passes
per setting, which is how the analysis in docs/networks.md was made.

The device is chosen with ``--device`` (``auto``: CUDA when available, else CPU).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from pe_segmentation.networks import available_networks, build_network


@dataclass(frozen=True)
class Setting:
    """One way of running a network: compute dtype (``None`` = fp32, no autocast) and memory format."""

    label: str
    dtype: torch.dtype | None
    channels_last: bool


CPU_SETTINGS = [
    Setting("fp32", None, False),
    Setting("fp32+CL", None, True),
    Setting("bf16", torch.bfloat16, False),
    Setting("bf16+CL", torch.bfloat16, True),
]
CUDA_SETTINGS = [*CPU_SETTINGS, Setting("fp16+CL", torch.float16, True)]


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available, else CPU; otherwise the named device (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but no CUDA device is available")
    return device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory_format(net: nn.Module, x: torch.Tensor, channels_last: bool) -> tuple[nn.Module, torch.Tensor]:
    fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    fmt = fmt if channels_last else torch.contiguous_format
    return net.to(memory_format=fmt), x.contiguous(memory_format=fmt)


def _first(output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return output[0] if isinstance(output, list | tuple) else output


def make_runner(
    net: nn.Module, x: torch.Tensor, setting: Setting, backward: bool
) -> Callable[[], torch.Tensor]:
    """A closure that runs one forward (or forward + backward) pass in ``setting`` and returns the logits.

    Each setting gets its own copy of the network, converted to its memory format once, outside the timing.
    """
    device = x.device
    model, inp = _memory_format(copy.deepcopy(net), x, setting.channels_last)
    model.train(backward)

    def run() -> torch.Tensor:
        with torch.autocast(
            device.type, dtype=setting.dtype or torch.float32, enabled=setting.dtype is not None
        ):
            if backward:
                out = _first(model(inp))
                out.float().square().mean().backward()
                model.zero_grad(set_to_none=True)
            else:
                with torch.no_grad():
                    out = _first(model(inp))
        return out.detach()

    return run


def time_settings(
    runners: dict[str, Callable[[], torch.Tensor]], device: torch.device, repeats: int, warmup: int = 1
) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Seconds per run of each setting (interleaved per repetition) and each setting's last output."""
    outputs = {}
    for label, run in runners.items():
        for _ in range(warmup):
            outputs[label] = run()
    times: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(repeats):
        for label, run in runners.items():
            _sync(device)
            start = time.perf_counter()
            outputs[label] = run()
            _sync(device)
            times[label].append(time.perf_counter() - start)
    return times, outputs


def agreement(reference: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    """Share of voxels with the same arg-max class, and the largest absolute softmax difference."""
    p_ref, p_other = reference.float().softmax(1), other.float().softmax(1)
    same = (p_ref.argmax(1) == p_other.argmax(1)).float().mean().item()
    return same, (p_ref - p_other).abs().max().item()


def _print_row(cells: list[str]) -> None:
    print("| " + " | ".join(cells) + " |", flush=True)


def benchmark(args: argparse.Namespace, device: torch.device) -> None:
    settings = CUDA_SETTINGS if device.type == "cuda" else CPU_SETTINGS
    fastest = settings[-1] if device.type == "cuda" else settings[3]
    train_settings = [settings[0], settings[2], fastest]  # fp32, bf16, and the fastest inference setting
    torch.manual_seed(0)
    x = torch.randn(1, 1, *([args.size] * 3), device=device)
    print(
        f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else _cpu_name()}), "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, patch {args.size}^3, batch 1; "
        f"medians of {args.repeats} forward and {args.train_repeats} forward+backward runs "
        "after one warm-up\n"
    )
    labels = [s.label for s in settings]
    train_labels = [s.label for s in train_settings]
    header = ["network", *[f"fwd {c} ms" for c in labels], *[f"x {c}" for c in labels[1:]]]
    if not args.no_backward:
        header += [*[f"train {c} ms" for c in train_labels], *[f"x {c} train" for c in train_labels[1:]]]
    header += [f"argmax agree {fastest.label}", "max abs dp"]
    best_header = ["network", *[f"x {c}" for c in labels[1:]]]
    if not args.no_backward:
        best_header += [f"x {c} train" for c in train_labels[1:]]
    _print_row(header)
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    best_rows = []
    for name in args.networks:
        net = build_network(name).to(device)
        fwd, outputs = time_settings(
            {s.label: make_runner(net, x, s, backward=False) for s in settings}, device, args.repeats
        )
        med = {k: statistics.median(v) for k, v in fwd.items()}
        best = {k: min(v) for k, v in fwd.items()}
        row = [
            name,
            *[f"{1000 * med[c]:.0f}" for c in labels],
            *[f"{med['fp32'] / med[c]:.2f}" for c in labels[1:]],
        ]
        best_row = [name, *[f"{best['fp32'] / best[c]:.2f}" for c in labels[1:]]]
        if not args.no_backward:
            train, _ = time_settings(
                {s.label: make_runner(net, x, s, backward=True) for s in train_settings},
                device,
                args.train_repeats,
            )
            tmed = {k: statistics.median(v) for k, v in train.items()}
            tbest = {k: min(v) for k, v in train.items()}
            row += [f"{1000 * tmed[c]:.0f}" for c in train_labels]
            row += [f"{tmed['fp32'] / tmed[c]:.2f}" for c in train_labels[1:]]
            best_row += [f"{tbest['fp32'] / tbest[c]:.2f}" for c in train_labels[1:]]
        same, max_dp = agreement(outputs["fp32"], outputs[fastest.label])
        row += [f"{100 * same:.2f}%", f"{max_dp:.3f}"]
        _print_row(row)
        best_rows.append(best_row)
        del net
    # on a shared machine the fastest run is the least disturbed one: speed-ups of the minima, for reference
    print("\nspeed-ups of the fastest run of each setting (less sensitive to other load on the machine)\n")
    _print_row(best_header)
    print("|" + "|".join(["---"] + ["---:"] * (len(best_header) - 1)) + "|")
    for best_row in best_rows:
        _print_row(best_row)


def profile(args: argparse.Namespace, device: torch.device) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    settings = CUDA_SETTINGS if device.type == "cuda" else CPU_SETTINGS
    fastest = settings[-1] if device.type == "cuda" else settings[3]
    x = torch.randn(1, 1, *([args.size] * 3), device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for name in args.profile:
        net = build_network(name).to(device)
        runs = [("forward", s, False) for s in (settings[0], fastest)]
        runs += [("train", s, True) for s in (settings[0], settings[2], fastest)]
        for mode, setting, backward in runs:
            run = make_runner(net, x, setting, backward=backward)
            run()
            with torch_profile(activities=activities) as prof:
                run()
            events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in events)
            top = ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in events[:5])
            print(f"{name} {mode} {setting.label}: {total / 1000:.0f} ms; {top}", flush=True)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="cubic patch edge (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward runs per setting (default 5)")
    parser.add_argument(
        "--train-repeats", type=int, default=3, help="timed forward+backward runs (default 3)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--networks", nargs="+", default=available_networks(), choices=available_networks())
    parser.add_argument("--no-backward", action="store_true", help="skip the forward+backward timings")
    parser.add_argument(
        "--profile", nargs="+", choices=available_networks(), help="print top operators instead"
    )
    args = parser.parse_args()
    device = select_device(args.device)
    warnings.simplefilter("ignore")
    if args.profile:
        profile(args, device)
    else:
        benchmark(args, device)


if __name__ == "__main__":
    main()
