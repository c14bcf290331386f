"""The run folder of a new run: refused when it holds a run, removed only when this run made it and was refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from pe_segmentation.errors import ConfigError, InputDataError
from pe_segmentation.training import ensure_new_run_folder, removed_if_refused


def _with_last_checkpoint(run_dir: Path) -> Path:
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
    return run_dir


# ----------------------------------------------------------------------------------------- ensure_new_run_folder


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "empty"])
def test_a_missing_or_empty_folder_is_accepted(tmp_path, exists):
    run_dir = tmp_path / "run"
    if exists:
        run_dir.mkdir()
    ensure_new_run_folder(run_dir)
    assert run_dir.exists() == exists  # the check creates nothing


def test_a_folder_with_other_files_but_no_last_checkpoint_is_accepted(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"weights")
    (run_dir / "train.log").write_text("an earlier refused run\n")
    ensure_new_run_folder(run_dir)


def test_a_folder_that_holds_a_run_is_refused_with_the_option_name(tmp_path):
    run_dir = _with_last_checkpoint(tmp_path / "run")
    with pytest.raises(ConfigError) as caught:
        ensure_new_run_folder(run_dir)
    assert str(caught.value) == (
        f"output.run_dir {run_dir} already holds a run (checkpoints/last.pt): resume it with "
        f"--resume {run_dir}, or choose another output.run_dir"
    )


def test_the_option_name_is_named_in_both_places(tmp_path):
    run_dir = _with_last_checkpoint(tmp_path / "run")
    with pytest.raises(ConfigError) as caught:
        ensure_new_run_folder(run_dir, option="output_dir")
    message = str(caught.value)
    assert message.startswith(f"output_dir {run_dir} already holds a run")
    assert message.endswith("or choose another output_dir")
    assert "output.run_dir" not in message


# ------------------------------------------------------------------------------------------- removed_if_refused


def _run_that_fails(run_dir: Path, error: BaseException, *, first_checkpoint: bool = False) -> None:
    """A run in ``run_dir`` that writes its log (and, if asked, its first checkpoint), then raises ``error``."""
    with removed_if_refused(run_dir):
        run_dir.mkdir(exist_ok=True)
        (run_dir / "train.log").write_text("started\n")
        if first_checkpoint:
            _with_last_checkpoint(run_dir)
        raise error


def _wrapped_by_monai(error: Exception) -> RuntimeError:
    """``error`` as MONAI re-raises an error from inside a transform: only the cause keeps it."""
    wrapper = RuntimeError("applying transform <LoadImaged>")
    wrapper.__cause__ = error
    return wrapper


def test_a_folder_this_run_created_is_removed_when_refused_before_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(InputDataError, match="unreadable case"):
        _run_that_fails(run_dir, InputDataError("unreadable case"))
    assert not run_dir.exists()


def test_a_user_error_wrapped_by_monai_counts_as_refused(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="applying transform"):
        _run_that_fails(run_dir, _wrapped_by_monai(ConfigError("bad label values")))
    assert not run_dir.exists()


def test_a_folder_that_existed_before_is_kept(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine\n")
    with pytest.raises(ConfigError):
        _run_that_fails(run_dir, ConfigError("refused"))
    assert (run_dir / "notes.txt").read_text() == "mine\n"


def test_a_run_that_wrote_its_first_checkpoint_is_kept(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(InputDataError):
        _run_that_fails(run_dir, InputDataError("a case broke in epoch 2"), first_checkpoint=True)
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def test_a_folder_is_kept_when_the_error_is_a_bug_not_a_user_error(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ZeroDivisionError):
        _run_that_fails(run_dir, ZeroDivisionError("a bug"))
    assert (run_dir / "train.log").is_file()


def test_a_run_that_succeeds_keeps_its_folder(tmp_path):
    run_dir = tmp_path / "run"
    with removed_if_refused(run_dir):
        run_dir.mkdir()
    assert run_dir.is_dir()


def test_no_folder_to_watch_lets_errors_through(tmp_path):
    with pytest.raises(ConfigError, match="refused"), removed_if_refused(None):
        raise ConfigError("refused")
    assert list(tmp_path.iterdir()) == []
