"""Fixtures of the inference tests (helpers live in :mod:`helpers`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from .helpers import tiny_config, write_checkpoint


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny networks gain nothing from two, and tests run side by side."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A checkpoint of :func:`tiny_config`'s network."""
    return write_checkpoint(tmp_path / "model.pt", tiny_config())


@pytest.fixture
def run_infer() -> Callable[..., int]:
    """``pe-seg infer ARGS`` through the real CLI front end (exit code, one-line errors)."""
    from pe_segmentation.cli import main

    def run(*args: Any) -> int:
        return main(["infer", *[str(a) for a in args]])

    return run
