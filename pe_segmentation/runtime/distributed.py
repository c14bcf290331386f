"""Multi-process training with ``torch.distributed`` (DDP), on GPUs (NCCL) or CPUs (gloo).

Two ways in:

* ``torchrun --nproc_per_node N -m pe_segmentation train ...``: torchrun starts the processes and sets
  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
  joins the process group from them (multi-node works the same way).
* ``--parallel`` (``training.distributed: true``): :func:`launch` starts one process per visible GPU itself
  with ``torch.multiprocessing`` on a free local port, and returns rank 0's result.

The backend is NCCL when the processes use CUDA and gloo otherwise (which is how DDP is tested on CPUs).
Only rank 0 writes logs, metrics, TensorBoard events and checkpoints; see :mod:`pe_segmentation.training.run`
for how data and metrics are shared out.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pe_segmentation import errors
from pe_segmentation.errors import ConfigError

log = logging.getLogger(__name__)

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly one-process) run.

    Attributes:
        rank: global rank, 0 when not distributed.
        world_size: number of processes, 1 when not distributed.
        local_rank: rank on this node (the GPU index under CUDA).
        backend: ``nccl``, ``gloo`` or ``None`` when not distributed.
        owns_group: whether :func:`init_distributed` created the process group (and so destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_launcher() -> bool:
    """Whether a launcher (torchrun or :func:`launch`) started this process as one of several."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(use_cuda: bool | None = None, timeout_s: float = 1800.0) -> DistributedContext:
    """Join the process group described by the launcher's environment variables (a no-op without them).

    Args:
        use_cuda: whether the processes train on CUDA (picks NCCL and binds each process to GPU
            ``LOCAL_RANK``); ``None``: whenever CUDA is available.
        timeout_s: how long collective operations wait for the other processes.

    Returns:
        The :class:`DistributedContext`; ``world_size`` 1 when not launched as one of several processes.
    """
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(
            dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend(), False
        )
    if not under_launcher():
        return DistributedContext()
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed support: cannot run several processes")
    missing = [name for name in _ENV if name not in os.environ]
    if missing:
        raise ConfigError(f"distributed launch: environment variable(s) {', '.join(missing)} not set")
    rank, world, local_rank = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    backend = "nccl" if cuda else "gloo"
    kwargs: dict[str, Any] = {}
    if cuda:
        torch.cuda.set_device(local_rank)
        kwargs["device_id"] = torch.device("cuda", local_rank)
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
        **kwargs,
    )
    log.debug("joined process group: rank %d of %d (%s)", rank, world, backend)
    return DistributedContext(rank, world, local_rank, backend, True)


def cleanup_distributed(context: DistributedContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if context.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(value: Any) -> list[Any]:
    """Every process's ``value`` (picklable), in rank order; ``[value]`` when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def free_port() -> int:
    """A TCP port that is free on this machine now (for the rendezvous of :func:`launch`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(
    index: int, world: int, port: int, fn: Callable[..., Any], args: tuple, kwargs: dict, queue: Any
) -> None:
    os.environ.update(
        RANK=str(index),
        LOCAL_RANK=str(index),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    try:
        result = fn(*args, **kwargs)
    except BaseException as err:
        # pass the error back as text: PESegErrors keep their class (and so their exit code) in the parent
        queue.put((index, "error", type(err).__name__, str(err), traceback.format_exc()))
        raise SystemExit(1) from None
    queue.put((index, "ok", result, None, None))


def launch(fn: Callable[..., Any], nprocs: int, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in ``nprocs`` new processes that form one process group; return rank 0's
    result.

    Each process gets the launcher environment (``RANK`` = ``LOCAL_RANK`` = its index, ``WORLD_SIZE``,
    a free ``MASTER_PORT`` on 127.0.0.1) and should call :func:`init_distributed`. ``fn`` and its arguments
    must be picklable (processes are started with ``spawn``).

    Raises:
        The first error a process raised: a :class:`~pe_segmentation.errors.PESegError` keeps its class;
        anything else becomes a ``RuntimeError`` carrying the process's traceback.
    """
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ConfigError(f"number of processes must be an integer >= 1, got {nprocs!r}")
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    port = free_port()
    processes = mp.start_processes(
        _worker, args=(nprocs, port, fn, args, kwargs, queue), nprocs=nprocs, join=False, start_method="spawn"
    )
    try:
        while not processes.join():
            pass
    except mp.ProcessRaisedException:  # pragma: no cover - _worker reports errors through the queue itself
        pass
    except mp.ProcessExitedException:
        pass
    reports = []
    while not queue.empty():
        reports.append(queue.get())
    errors_seen = sorted((r for r in reports if r[1] == "error"), key=lambda r: r[0])
    if errors_seen:
        index, _, name, message, trace = errors_seen[0]
        error_type = getattr(errors, name, None)
        if isinstance(error_type, type) and issubclass(error_type, errors.PESegError):
            raise error_type(message)
        raise RuntimeError(f"process {index} failed: {name}: {message}\n{trace}")
    results = {r[0]: r[2] for r in reports if r[1] == "ok"}
    if 0 not in results:
        raise RuntimeError(
            f"distributed run ended without a result from rank 0 (exit codes: {_exit_codes(processes)})"
        )
    return results[0]


def _exit_codes(processes: Any) -> list[int | None]:
    return [p.exitcode for p in getattr(processes, "processes", [])]
