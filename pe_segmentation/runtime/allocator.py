"""Keep freed CPU memory in the process for reuse, so that large tensors do not fault in fresh pages each time.

glibc's ``malloc`` serves every block above its mmap threshold (32 MiB at most) with freshly mapped pages and
unmaps them on ``free``. A 3D network's activations are tens of MiB each (16 channels of two 96^3 windows in
bf16: 54 MiB), so on a CPU each layer of each window batch had the kernel map and zero its output anew: a third
of a benchmark network's time (0.46 s against 0.31 s per batch of two windows, ``docs/inference.md``).

The usual cure is a caching allocator preloaded into the process (jemalloc or tcmalloc through ``LD_PRELOAD``,
as Intel's PyTorch tuning guide advises), which a user must install and remember to set. glibc does the same
when told to serve large blocks from its heap and not to give freed memory back (``mallopt``); torch has no
setting for its CPU allocator, so this is done by hand here. The cost: memory freed by the process is reused by
it but not returned to the system before it exits, and the heap fragments a little (the benchmark's peak
resident memory grew by 7%, 1.71 to 1.84 GB).

``PE_SEG_KEEP_FREED_MEMORY=0`` switches it off.

What is kept is capped by hand instead: :func:`release_freed_memory` (glibc's ``malloc_trim``) hands the freed
memory back to the system between the stages of a prediction and between cases, so that memory freed by
preprocessing (about 0.5 GB for a 512 x 512 x 400 CT) is not still counted while the network runs, nor one
case's peak while the next case starts. It took 20-130 ms per call for 0.1-1 GB (docs/inference.md, "Where the
memory goes").
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

ENV_SWITCH = "PE_SEG_KEEP_FREED_MEMORY"

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # the largest value mallopt takes (an int): the heap's top is kept up to 2 GiB free

_applied: bool | None = None


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (musl has a mallopt that does nothing)
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Make this process's ``malloc`` reuse freed large blocks instead of unmapping and remapping them.

    Call it before the large allocations of a CPU job. It applies to the whole process and to processes forked
    from it later (data-loader workers), once; later calls return the first one's answer.

    Returns:
        whether glibc took the settings: ``False`` on other C libraries and platforms, or when
        ``PE_SEG_KEEP_FREED_MEMORY`` is ``0``/``false``/``no``.
    """
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no"):
        _applied = False
        return _applied
    libc = _glibc()
    _applied = bool(
        libc is not None
        and libc.mallopt(_M_MMAP_MAX, 0) == 1
        and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER) == 1
    )
    log.debug("keep freed memory for reuse: %s", _applied)
    return _applied


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` took effect in this process."""
    return bool(_applied)


def release_freed_memory() -> bool:
    """Give the memory this process has freed back to the system (glibc's ``malloc_trim(0)``).

    Returns:
        whether anything was released (``False`` also on other C libraries and platforms).
    """
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0) == 1)
