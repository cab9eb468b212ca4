"""Crash-safe file output: write to a temporary sibling, fsync, then rename over the target.

A reader never sees a half-written file: either the previous version or the complete new one.
Used for checkpoints, parquet conversions, run files and indexes across regkit. Files and folders are created with
the modes the process's umask allows (``0666`` / ``0777`` minus the umask), like any ``open`` / ``mkdir``.
A folder is replaced only when it is regkit's (:mod:`common_regs.output_folders`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from common_regs.output_folders import check_regkit_folder

__all__ = ["atomic_dir", "atomic_path", "atomic_write_text"]

_NAME_TRIES = 100


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temporary(target: Path, *, directory: bool) -> Path:
    """Create a fresh ``.<name>.<random>.tmp`` beside ``target``; the kernel applies the umask to its mode.

    ``tempfile.mkstemp`` / ``mkdtemp`` would create it 0600 / 0700, and the rename would keep that private mode.
    """
    for _ in range(_NAME_TRIES):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            if directory:
                tmp.mkdir(mode=0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {target}: {_NAME_TRIES} names were taken.")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it is fsynced and renamed to ``target``.

    On an exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(target, directory=False)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically (:func:`atomic_path`); returns ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


@contextlib.contextmanager
def atomic_dir(
    target: str | os.PathLike[str], *, overwrite: bool = False, markers: Sequence[str] = ()
) -> Iterator[Path]:
    """Yield a temporary directory next to ``target``; on success it replaces ``target`` in one rename.

    Args:
        target: the folder to publish.
        overwrite: replace an existing ``target``, provided it is empty or regkit's.
        markers: files (relative paths) that the writer puts in every folder it publishes: an existing non-empty
            ``target`` is replaced only when it holds one of them.

    Raises:
        FileExistsError: ``target`` exists and ``overwrite`` is false.
        common_regs.output_folders.ForeignFolderError: ``target`` is not empty and holds none of ``markers``
            (checked before anything is written).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"output directory {target} already exists; pass overwrite=True to replace it.")
    check_regkit_folder(target, markers)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(target, directory=True)
    try:
        yield tmp
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
