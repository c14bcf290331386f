"""keep_freed_memory: large CPU tensors come from the reused heap instead of fresh mappings, once set.

Each case runs in its own Python process: the malloc settings are process-wide and would leak into the other
tests. What is checked is glibc's own account of mapped memory (``mallinfo2().hblkhd``, glibc >= 2.33) and the
page faults of a run of 64 MiB tensors, each freed before the next, as a network's layers allocate their outputs.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

from pe_segmentation.runtime.allocator import ENV_SWITCH

try:
    _HAS_MALLINFO2 = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")
except OSError:
    _HAS_MALLINFO2 = False

pytestmark = pytest.mark.skipif(not _HAS_MALLINFO2, reason="needs glibc >= 2.33 (mallinfo2)")

_PROBE = r"""
import ctypes, json, resource, sys
import torch
from pe_segmentation.runtime.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
answers = [keep_freed_memory() for _ in range(2)] if sys.argv[1] == "keep" else []
mapped, faults = [], []
for _ in range(6):  # what a network does layer after layer: allocate a large output, fill it, free it
    before_mapped = libc.mallinfo2().hblkhd
    before_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.full((64 << 20,), 1, dtype=torch.uint8)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before_faults)
    mapped.append(libc.mallinfo2().hblkhd - before_mapped)
    del block
print(json.dumps({"answers": answers, "mapped": mapped, "faults": faults}))
"""

_SIZE = 64 << 20


def _probe(mode: str, env: dict[str, str] | None = None) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env=env, timeout=120
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_default_malloc_maps_large_tensors_afresh_each_time() -> None:
    """The problem being solved: each 64 MiB tensor is a new mapping whose pages fault in when first written."""
    result = _probe("default")
    assert all(size >= _SIZE for size in result["mapped"])
    # at least one fault per 2 MiB even where transparent huge pages back the mapping (4 KiB pages: 16384)
    assert all(count >= _SIZE // (2 << 20) for count in result["faults"][3:])


def test_kept_memory_serves_large_tensors_from_the_heap_and_reuses_its_pages() -> None:
    result = _probe("keep")
    assert result["answers"] == [True, True]
    assert result["mapped"] == [0] * 6
    # once the heap has grown to hold the block, later blocks reuse its pages: no faults (16384 without)
    assert sum(result["faults"][3:]) <= 8


def test_switched_off_by_the_environment() -> None:
    result = _probe("keep", {**os.environ, ENV_SWITCH: "0"})
    assert result["answers"] == [False, False]
    assert all(size >= _SIZE for size in result["mapped"])
