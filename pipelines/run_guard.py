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
3. records the SHA-256 of the resolved config and the size + SHA-256 of every input file
   (:func:`common_regs.fingerprints.fingerprint_inputs`) in ``_STARTED.json``; an unfinished folder of a
   *different* config, or whose input files changed since it started, is refused (its checkpoints would be resumed
   into the wrong model, or trained on further with other data) unless ``overwrite``; when it stopped before its
   first checkpoint there is nothing to lose, so it is started over with a warning;
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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from common_regs.fingerprints import fingerprint_inputs, input_change
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


def _read_started(run_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((run_dir / STARTED_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _difference(record: Mapping[str, Any], digest: str, inputs: Mapping[str, Any]) -> str | None:
    """How the unfinished run in ``record`` differs from this one (config, then input files); None if it does not."""
    previous = record.get("config_sha256")
    if previous != digest:
        return f"of another configuration (config SHA-256 {str(previous)[:12]}, now {digest[:12]})"
    if inputs and "inputs" not in record:
        return "whose input files were not recorded (started by an older regkit)"
    change = input_change(record.get("inputs"), inputs)
    return None if change is None else f"whose input {change}; resuming it would train on mixed data"


def _check_unfinished(run_dir: Path, digest: str, inputs: Mapping[str, Any]) -> None:
    if not (run_dir / STARTED_NAME).is_file():
        if (run_dir / "model").exists():  # a run folder written before completion markers existed
            raise FileExistsError(
                f"{run_dir / 'model'} exists; pass overwrite=True (--overwrite) or another output folder."
            )
        return
    difference = _difference(_read_started(run_dir), digest, inputs)
    if difference is not None and any(run_dir.rglob("ckpt-*.pt")):
        raise FileExistsError(
            f"{run_dir} holds an unfinished run {difference}: pass --overwrite to discard it and start over, or use "
            "another output folder."
        )
    if difference is not None:
        logger.warning("%s holds an unfinished run %s, which stopped before its first checkpoint: nothing to "
                       "resume, starting over", run_dir, difference.split(";")[0])
    else:
        logger.warning("%s holds an unfinished run of the same configuration and inputs: resuming it", run_dir)
    # the served model of a run killed between saving it and writing the marker is rebuilt from the checkpoints
    shutil.rmtree(run_dir / "model", ignore_errors=True)


@contextlib.contextmanager
def guarded_run_dir(
    run_dir: str | os.PathLike[str],
    *,
    config: Mapping[str, Any],
    inputs: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    force: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Iterator[Path]:
    """Lock ``run_dir``, check it (module docstring), yield it, and mark it complete when the block succeeds.

    Args:
        run_dir: the run folder.
        config: the resolved config (JSON-like); its canonical SHA-256 identifies the run.
        inputs: the files (or folders) the job reads; their sizes and SHA-256 identify the run too.
        overwrite: discard a finished or unfinished run in the folder.
        force: take over a lock held from another host.
        extra: more fields for ``_SUCCESS.json``.

    Raises:
        common_regs.output_folders.ForeignFolderError: the folder is not empty and holds no regkit marker.
        common_regs.run_dir.OutputLockedError: another live run holds the folder.
        FileExistsError: the folder holds a finished run, or an unfinished one (with checkpoints) of another
            config or other input files, and ``overwrite`` is false.
    """
    run_dir = Path(run_dir)
    digest = config_sha256(config)
    check_regkit_folder(run_dir, RUN_MARKERS)  # before the lock file, which would be written into it
    with OutputLock(lock_path_for(run_dir), force=force):
        fingerprints = fingerprint_inputs(inputs, known=_read_started(run_dir).get("inputs"))
        if overwrite:
            clear_success_marker(run_dir)
        else:
            done = read_success_marker(run_dir)
            if done is not None:
                raise FileExistsError(
                    f"{run_dir} holds a finished run ({SUCCESS_NAME} of {done.get('time')}); pass --overwrite "
                    "or another output folder."
                )
            _check_unfinished(run_dir, digest, fingerprints)
        record = {"config_sha256": digest, "inputs": fingerprints, "pid": os.getpid()}
        atomic_write_text(run_dir / STARTED_NAME, json.dumps(record, indent=2) + "\n")
        yield run_dir
        write_success_marker(run_dir, config=config, extra=extra)
        logger.info("%s complete (%s)", run_dir, SUCCESS_NAME)
