"""Atomic file output: a result either appears whole under its final name or not at all."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pe_segmentation.errors import OutputError

#: Names of :func:`atomic_output`'s temporary files: ``.{final name}.{mkstemp's 8 characters}.tmp{suffixes}``.
_TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\..*)?")


def _fsync_directory(directory: Path) -> None:
    """Persist a rename on POSIX file systems; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; on success fsync it and rename it to ``path``.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.nrrd``) so that libraries choosing a
    format by extension write the right one. On any error the temporary file is removed and nothing
    appears under ``path``; OS errors are reported as :class:`OutputError` naming the file.

    Args:
        path: the final file name.
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{final.parent}: cannot create output folder ({err.strerror or err})") from err
    suffix = "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _fsync_directory(final.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{final}: cannot write ({err.strerror or err})") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_partial_outputs(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of atomic writes that never finished in ``folder`` (the process was killed or
    the machine stopped mid-write; an ordinary error removes its own) and return their paths.

    Only for folders that one process writes at a time, such as a run's checkpoint folder: a temporary file of a
    write still in progress elsewhere would be removed too.
    """
    removed: list[Path] = []
    directory = Path(folder)
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        if _TEMPORARY_NAME.fullmatch(path.name) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


#: Names of :func:`atomic_output_folder`'s temporary folders: ``.{final name}.{mkdtemp's 8 characters}.tmp``.
_TEMPORARY_FOLDER = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


@contextlib.contextmanager
def atomic_output_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success fsync its files and rename it to ``path``.

    A folder of several files (the arrays of one preprocessed case) then appears whole or not at all: on any
    error the temporary folder is removed. When ``path`` already exists by then (another process wrote the
    same folder meanwhile), that one is kept and this one discarded: both hold the same result.

    Raises:
        OutputError: the folder cannot be created or renamed, naming it.
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as err:
        raise OutputError(f"{final.parent}: cannot create output folder ({err.strerror or err})") from err
    try:
        yield tmp
        for child in tmp.iterdir():
            with open(child, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_directory(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # written meanwhile by another process
        _fsync_directory(final.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{final}: cannot write ({err.strerror or err})") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_folders(folder: str | os.PathLike[str], older_than_s: float) -> list[Path]:
    """Delete the temporary folders of :func:`atomic_output_folder` in ``folder`` left by writes that never
    finished (a killed process) and untouched for ``older_than_s`` seconds; return their paths.

    The age keeps a write still in progress in another process (sharing the folder) from being removed.
    """
    removed: list[Path] = []
    directory = Path(folder)
    if not directory.is_dir():
        return removed
    cutoff = time.time() - older_than_s
    for path in directory.iterdir():
        if _TEMPORARY_FOLDER.fullmatch(path.name) and path.is_dir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
    return removed
