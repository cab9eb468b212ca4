"""Run folders of CLI jobs: one live run per folder, resumable after a crash, complete only when marked so.

:func:`guarded_run_dir` wraps a job that fills a run folder in place (``regkit recsys train``):

0. refuses a folder that is not empty and holds no regkit marker (``_SUCCESS.json``, ``_STARTED.json``, the lock,
   or ``model/serving.json`` of a run written before the markers existed), even with ``overwrite``: regkit never
   writes into or deletes files it did not write (:mod:`common_regs.output_folders`);
1. takes ``<run>/.regkit.lock`` (:class:`common_regs.run_dir.OutputLock`): a second concurrent run is refused
   with a one-line error naming the lock; the lock of a killed run on this host is reported and taken over, so
   rerunning the same command resumes it; ``force`` also takes over a lock from another host;
2. refuses a folder whose ``_SUCCESS.json`` says it is finished, unless ``overwrite`` (which removes the marker
   before anything else is written, so a half-rewritten folder never looks complete);
3. records the SHA-256 of the resolved config in ``_STARTED.json``; an unfinished folder of a *different* config
   is refused (its checkpoints would be resumed into the wrong model) unless ``overwrite``;
4. after the job returns, writes ``_SUCCESS.json`` (config hash, versions, time) last.

A crash leaves the lock (stale once the process is gone), ``_STARTED.json`` and the job's checkpoints, and no
``_SUCCESS.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from common_regs.io import atomic_write_text
from common_regs.output_folders import check_regkit_folder
from common_regs.run_dir import (
    LOCK_NAME,
    SUCCESS_NAME,
    OutputLock,
    clear_success_marker,
    config_sha256,
    lock_path_for,
    read_success_marker,
    write_success_marker,
)

logger = logging.getLogger(__name__)

__all__ = ["RUN_MARKERS", "STARTED_NAME", "guarded_run_dir"]

STARTED_NAME = "_STARTED.json"
RUN_MARKERS = (SUCCESS_NAME, STARTED_NAME, LOCK_NAME, "model/serving.json")


def _check_unfinished(run_dir: Path, digest: str) -> None:
    started = run_dir / STARTED_NAME
    if not started.is_file():
        if (run_dir / "model").exists():  # a run folder written before completion markers existed
            raise FileExistsError(
                f"{run_dir / 'model'} exists; pass overwrite=True (--overwrite) or another --output-dir."
            )
        return
    try:
        previous = json.loads(started.read_text(encoding="utf-8")).get("config_sha256")
    except (json.JSONDecodeError, AttributeError):
        previous = None
    if previous != digest:
        raise FileExistsError(
            f"{run_dir} holds an unfinished run of another configuration (config SHA-256 {str(previous)[:12]}, "
            f"now {digest[:12]}); pass --overwrite to discard it, or use another --output-dir."
        )
    logger.warning("%s holds an unfinished run of the same configuration: resuming it", run_dir)
    # the served model of a run killed between saving it and writing the marker is rebuilt from the checkpoints
    shutil.rmtree(run_dir / "model", ignore_errors=True)


@contextlib.contextmanager
def guarded_run_dir(
    run_dir: str | os.PathLike[str],
    *,
    config: Mapping[str, Any],
    overwrite: bool = False,
    force: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Iterator[Path]:
    """Lock ``run_dir``, check it (module docstring), yield it, and mark it complete when the block succeeds.

    Raises:
        common_regs.output_folders.ForeignFolderError: the folder is not empty and holds no regkit marker.
        common_regs.run_dir.OutputLockedError: another live run holds the folder.
        FileExistsError: the folder holds a finished run, or an unfinished one of another config, and
            ``overwrite`` is false.
    """
    run_dir = Path(run_dir)
    digest = config_sha256(config)
    check_regkit_folder(run_dir, RUN_MARKERS)  # before the lock file, which would be written into it
    with OutputLock(lock_path_for(run_dir), force=force):
        if overwrite:
            clear_success_marker(run_dir)
        else:
            done = read_success_marker(run_dir)
            if done is not None:
                raise FileExistsError(
                    f"{run_dir} holds a finished run ({SUCCESS_NAME} of {done.get('time')}); pass --overwrite "
                    "or another --output-dir."
                )
            _check_unfinished(run_dir, digest)
        atomic_write_text(
            run_dir / STARTED_NAME, json.dumps({"config_sha256": digest, "pid": os.getpid()}, indent=2) + "\n"
        )
        yield run_dir
        write_success_marker(run_dir, config=config, extra=extra)
        logger.info("%s complete (%s)", run_dir, SUCCESS_NAME)
