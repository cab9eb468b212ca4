"""Output folders that are never shared by two live runs and never look complete before they are.

* :class:`OutputLock`: a lock file created exclusively (a fully written temporary file is ``link(2)``-ed to the
  lock name, which, like ``O_CREAT|O_EXCL``, fails when the name exists, so a lock is never seen half-written;
  plain ``O_CREAT|O_EXCL`` where the file system has no hard links). It holds the pid, host, process start
  time, time and command line of its owner. A second run is refused with :class:`OutputLockedError`, a
  one-line message naming the lock file and its owner.
* A lock whose owner is provably dead (same host, pid not running, or the pid now belongs to a process started
  later) is stale: it is reported with a warning and taken over, so rerunning a killed command resumes it. A
  lock from another host (a shared file system: the pid cannot be checked) or an unreadable one is taken over
  only with ``force=True`` (``--force``). A lock held by a live process on this host is never broken.
* Completion marker ``_SUCCESS.json`` (Hadoop's ``_SUCCESS`` convention, with content): written last, with the
  SHA-256 of the run's canonical JSON config, package versions and time. Readers and resume logic treat a
  folder without it as unfinished.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common_regs.io import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "LOCK_NAME",
    "SUCCESS_NAME",
    "OutputLock",
    "OutputLockedError",
    "clear_success_marker",
    "config_sha256",
    "lock_path_for",
    "read_success_marker",
    "remove_stale_temporaries",
    "write_success_marker",
]

LOCK_NAME = ".regkit.lock"
SUCCESS_NAME = "_SUCCESS.json"
_VERSIONED = ("regkit", "torch", "numpy")


class OutputLockedError(RuntimeError):
    """Another run holds the output folder's lock (the message names the lock file and its owner)."""


def _process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22); None when unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "(comm)": state is field 3, starttime field 22


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def lock_path_for(directory: str | os.PathLike[str], *, inside: bool = True) -> Path:
    """The lock file that guards ``directory``.

    ``<dir>/.regkit.lock`` (a run folder filled in place) or ``<parent>/.<name>.lock`` (a folder that is published by
    one rename, such as a Lucene index, where a file inside would be replaced with the folder).
    """
    directory = Path(directory)
    return directory / LOCK_NAME if inside else directory.with_name(f".{directory.name}.lock")


class OutputLock:
    """Exclusive lock of an output folder for the lifetime of one run (context manager).

    Args:
        path: the lock file (see :func:`lock_path_for`).
        force: also take over a lock whose owner cannot be checked (another host, unreadable lock file).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with OutputLock(lock_path_for(folder)) as lock:
        ...     lock.path.is_file()
        True
        >>> lock.path.is_file()
        False
    """

    def __init__(self, path: str | os.PathLike[str], *, force: bool = False) -> None:
        self.path = Path(path)
        self.force = force
        self.held = False

    def _owner(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_start": _process_start(os.getpid()),
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "argv": sys.argv,
        }

    def _create(self) -> bool:
        """Create the lock file exclusively with our owner record; False when it already exists."""
        payload = json.dumps(self._owner(), indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f"{self.path.name}.", suffix=".new", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            except OSError:  # no hard links on this file system: exclusive create, then write
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _describe(self, owner: Mapping[str, Any] | None) -> str:
        if owner is None:
            return "an unreadable owner record"
        return f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('time')}"

    def _staleness(self, owner: Mapping[str, Any] | None) -> str | None:
        """Why the lock is provably stale, or None when its owner may be alive."""
        if owner is None or not isinstance(owner.get("pid"), int):
            return None
        if owner.get("host") != socket.gethostname():
            return None
        pid = owner["pid"]
        if not _pid_alive(pid):
            return f"pid {pid} is not running"
        recorded, now = owner.get("process_start"), _process_start(pid)
        if recorded is not None and now is not None and recorded != now:
            return f"pid {pid} now belongs to another process"
        return None

    def _read(self) -> tuple[str, dict[str, Any] | None] | None:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            owner = json.loads(raw)
        except json.JSONDecodeError:
            owner = None
        return raw, owner if isinstance(owner, dict) else None

    def _take_over(self, raw: str) -> bool:
        """Remove the stale lock whose content is ``raw``; False when someone else replaced it meanwhile."""
        tomb = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.replace(self.path, tomb)
        except FileNotFoundError:
            return True  # gone already: just retry the create
        if tomb.read_text(encoding="utf-8") != raw:  # we moved a fresh lock of another process: put it back
            with contextlib.suppress(FileExistsError):
                os.link(tomb, self.path)
            tomb.unlink(missing_ok=True)
            return False
        tomb.unlink(missing_ok=True)
        return True

    def acquire(self) -> OutputLock:
        """Take the lock; take over a stale one (warning); raise :class:`OutputLockedError` otherwise."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._create():
                self.held = True
                logger.debug("locked %s", self.path)
                return self
            current = self._read()
            if current is None:
                continue
            raw, owner = current
            why = self._staleness(owner)
            if why is None and owner is not None and owner.get("host") == socket.gethostname():
                raise OutputLockedError(
                    f"{self.path.parent} is in use by another run ({self._describe(owner)}; lock file {self.path})."
                )
            if why is None and not self.force:
                raise OutputLockedError(
                    f"{self.path.parent} is locked by {self._describe(owner)} (lock file {self.path}); its owner "
                    "cannot be checked from this host: pass --force if that run is dead."
                )
            reason = why or "--force"
            logger.warning("taking over the stale lock %s of %s (%s)", self.path, self._describe(owner), reason)
            if not self._take_over(raw):
                continue
        raise OutputLockedError(f"could not take the lock {self.path}: other runs keep replacing it.")

    def release(self) -> None:
        """Remove the lock file if this object holds it (and it is still ours)."""
        if not self.held:
            return
        current = self._read()
        if current is not None and current[1] is not None and current[1].get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Delete ``.<name>.*.tmp`` siblings of ``target`` left by killed :mod:`common_regs.io` atomic writes.

    Call it only while holding ``target``'s lock: a live writer's temporary has the same name pattern.
    """
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    if removed:
        logger.warning("removed %d unfinished temporary output(s) of %s: %s", len(removed), target,
                       ", ".join(p.name for p in removed))
    return removed


def scratch_folder(kind: str, work_dir: str | os.PathLike[str] | None) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder ``.regkit-<kind>-<pid>-*`` inside ``work_dir`` (a run's own folder; None = system temp).

    Scratch data (e.g. a streamed log's partitioned copies) then stays with the run it belongs to, and the
    folders a killed process left there are removed first: the pid in the name tells a dead owner from a live one
    (another rank of the same run, say).
    """
    if work_dir is not None:
        for leftover in Path(work_dir).glob(f".regkit-{kind}-*-*"):
            pid = leftover.name.removeprefix(f".regkit-{kind}-").split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)
                logger.warning("removed %s, left by a killed run", leftover)
    return tempfile.TemporaryDirectory(prefix=f".regkit-{kind}-{os.getpid()}-", dir=work_dir)


def config_sha256(config: Any) -> str:
    """SHA-256 of the canonical JSON of ``config`` (sorted keys; non-JSON values through ``str``)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@functools.cache  # a process' packages do not change under it; the lookups cost ~5 ms per marker
def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def write_success_marker(
    directory: str | os.PathLike[str], *, config: Any = None, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``<directory>/_SUCCESS.json`` (atomically; call it after every other output of the run)."""
    payload = {
        "complete": True,
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config_sha256": config_sha256(config) if config is not None else None,
        "versions": dict(_versions()),
        **(extra or {}),
    }
    return atomic_write_text(Path(directory) / SUCCESS_NAME, json.dumps(payload, indent=2, default=str) + "\n")


def read_success_marker(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The completion marker of ``directory``, or None when the folder is unfinished (no or unreadable marker)."""
    path = Path(directory) / SUCCESS_NAME
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        logger.warning("%s is unreadable (%s); the folder counts as unfinished", path, err)
        return None
    return payload if isinstance(payload, dict) and payload.get("complete") is True else None


def clear_success_marker(directory: str | os.PathLike[str]) -> None:
    """Remove the marker first when a finished folder is about to be rewritten (it must not look complete)."""
    (Path(directory) / SUCCESS_NAME).unlink(missing_ok=True)
