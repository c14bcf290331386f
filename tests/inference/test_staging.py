"""Case folders are staged and swapped in whole; what dead runs left is cleared, on this machine only."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pe_segmentation.inference import outputs
from pe_segmentation.inference.outputs import staged_case_folder


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_case_replaces_its_folder_whole(tmp_path):
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "old.txt").write_text("previous run")
    with staged_case_folder(tmp_path, "ct") as staging:
        assert staging.name.startswith(".ct.partial-")
        (staging / "mask.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct"]
    assert sorted(p.name for p in (tmp_path / "ct").iterdir()) == ["mask.txt"]

    def fail_mid_case() -> None:
        with staged_case_folder(tmp_path, "ct") as staging:
            (staging / "mask.txt").write_text("half")
            raise RuntimeError("failed mid-case")

    with pytest.raises(RuntimeError, match="mid-case"):
        fail_mid_case()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct"]
    assert (tmp_path / "ct" / "mask.txt").read_text() == "new"


def test_only_this_machines_dead_staging_folders_are_cleared(tmp_path, dead_pid, monkeypatch):
    monkeypatch.setattr(outputs, "_this_host", lambda: "node_a")
    left = {
        f".ct.partial-node_a-{dead_pid}": False,  # this machine, process gone: cleared
        f".ct.old-node_a-{dead_pid}": False,
        f".ct.partial-{dead_pid}": False,  # written before staging names held the host: local
        f".ct.partial-node_b-{dead_pid}": True,  # another machine sharing the folder: its pid means nothing here
        f".ct.partial-node_a-{os.getppid()}": True,  # this machine, process alive (this test's parent)
        f".ct2.partial-node_a-{dead_pid}": True,  # another case
    }
    for name in left:
        (tmp_path / name).mkdir()
    with staged_case_folder(tmp_path, "ct") as staging:
        assert staging.name == f".ct.partial-node_a-{os.getpid()}"
    kept = {p.name for p in tmp_path.iterdir()}
    assert kept == {"ct"} | {name for name, stays in left.items() if stays}
