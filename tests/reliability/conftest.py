"""Fixtures of the reliability tests: ``pe-seg`` run in this process, a tiny checkpoint, file listings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from inference.conftest import one_thread  # noqa: F401 (autouse: one intra-op thread for tiny networks)
from inference.helpers import tiny_config, write_checkpoint

from pe_segmentation.cli import main


@dataclass(frozen=True)
class CliResult:
    """What one ``pe-seg`` call gave: its exit code and what it printed."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """The ``error:`` lines on stderr (a failed command prints exactly one)."""
        return [line for line in self.err.splitlines() if line.startswith(("error:", "internal error:"))]


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder`` (hidden ones included), relative, sorted; ``[]`` when it does not exist."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def pe_seg(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``pe-seg ARGS`` through the real front end in this process (argparse exits become exit codes)."""

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as stop:  # argparse usage errors
            code = int(stop.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pe-seg checkpoint of a 2-level UNet of width 4 (random weights), shared by the session."""
    return write_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", tiny_config())
