"""Checksummed, rotated checkpoints: SHA-256 sidecars verified on load, the newest K kept, fallback to a good one.

Crash-safety practice shared by every regkit trainer and by resumable encoders:

* a file is written to a temporary sibling, fsynced and renamed (:func:`common_regs.io.atomic_path`), so the
  final name never holds a half-written file;
* its SHA-256 (:mod:`hashlib`) is then written atomically beside it as ``<name>.sha256`` in ``sha256sum``
  format (``<hex>  <name>``; check by hand with ``sha256sum -c ckpt-000000042.pt.sha256``);
* on load the digest is recomputed; a missing sidecar (killed between the two renames), a truncated or a
  corrupted file is reported with a warning naming the file and both digests, and the previous checkpoint is
  used instead (Lucene's commit-point checksums follow the same idea: a commit is trusted only after its
  checksum verifies).

:class:`CheckpointDir` names checkpoints ``<prefix>-<step:09d><suffix>`` (zero-padded so that names sort by step),
keeps the newest ``keep`` (default 2: the latest plus one fallback) and prunes older ones only after a new one
is completely written.

:func:`global_rng_state` / :func:`set_global_rng_state` hold the global torch and numpy RNG states as tensors and
plain numbers, so a checkpoint reads back with ``torch.load(weights_only=True)`` (:mod:`common_regs.safe_load`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from common_regs.io import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKSUM_SUFFIX",
    "CheckpointDir",
    "CheckpointError",
    "ChecksumError",
    "checksum_path",
    "global_rng_state",
    "save_with_checksum",
    "set_global_rng_state",
    "sha256_file",
    "verify_checksum",
]

CHECKSUM_SUFFIX = ".sha256"
_CHUNK = 1 << 20
T = TypeVar("T")


class ChecksumError(ValueError):
    """A file does not match its recorded SHA-256 (truncated, corrupted) or has no checksum sidecar."""


class CheckpointError(RuntimeError):
    """Checkpoints exist but none of them verifies; the message lists each file and why it was rejected."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def global_rng_state() -> dict[str, Any]:
    """The global torch and numpy (legacy ``np.random``) RNG states as tensors and plain numbers (no pickles)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                   "position": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}
    return {"torch": torch.get_rng_state(), "numpy": numpy_state}


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`global_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))


def checksum_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar of ``path``: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def save_with_checksum(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` the file atomically at ``path``, then write its SHA-256 sidecar atomically; return ``path``.

    The digest is taken from the fsynced temporary file before the rename, so it is the digest of exactly the
    bytes published under ``path``. A crash between the two renames leaves a file without (or with a stale)
    sidecar, which :func:`verify_checksum` rejects.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            write(tmp)
            digest = sha256_file(tmp)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk / file-size limit as a RuntimeError
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
        raise OSError(
            f"writing {path} failed ({type(err).__name__}: {err}); {free / 1e6:,.0f} MB free there. A full disk or "
            "a file-size limit is the usual cause; the partial file was discarded, earlier files are intact."
        ) from err
    atomic_write_text(checksum_path(path), f"{digest}  {path.name}\n")
    return path


def verify_checksum(path: str | os.PathLike[str]) -> str:
    """Recompute the SHA-256 of ``path`` and compare it with its sidecar; return the digest.

    Raises:
        ChecksumError: the sidecar is missing or unreadable, or the digests differ (the message names the file,
            the recorded and the actual digest and the file size).
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found.")
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        raise ChecksumError(f"{path}: no checksum file {sidecar.name} (the write was interrupted).")
    fields = sidecar.read_text(encoding="utf-8", errors="replace").split()
    recorded = fields[0].lower() if fields else ""
    if not re.fullmatch(r"[0-9a-f]{64}", recorded):
        raise ChecksumError(f"{sidecar}: not a SHA-256 checksum file (got {sidecar.read_bytes()[:80]!r}).")
    actual = sha256_file(path)
    if actual != recorded:
        raise ChecksumError(
            f"{path}: SHA-256 mismatch, recorded {recorded[:16]}…, actual {actual[:16]}… "
            f"({path.stat().st_size} bytes; truncated or corrupted)."
        )
    return actual


class CheckpointDir:
    """Rotated, checksummed checkpoints ``<prefix>-<step:09d><suffix>`` in one folder.

    Args:
        directory: the folder (created on the first save).
        keep: how many of the newest checkpoints to keep. Default 2 (regkit convention: the latest plus one
            verified fallback in case the latest is damaged).
        prefix: file name prefix. Default "ckpt".
        suffix: file name suffix. Default ".pt".

    Example:
        >>> import tempfile
        >>> ckpts = CheckpointDir(tempfile.mkdtemp(), keep=2)
        >>> for step in (1, 2, 3):
        ...     _ = ckpts.save(step, lambda tmp: tmp.write_text(str(step)))
        >>> [s for s, _ in ckpts.checkpoints()]
        [3, 2]
        >>> ckpts.load_latest(lambda p: p.read_text())[1]
        '3'
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, keep: int = 2, prefix: str = "ckpt", suffix: str = ".pt"
    ) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"`keep` must be an integer >= 1, got {keep!r}.")
        if not prefix or "/" in prefix:
            raise ValueError(f"`prefix` must be a non-empty file name prefix, got {prefix!r}.")
        self.directory = Path(directory)
        self.keep, self.prefix, self.suffix = keep, prefix, suffix
        self._pattern = re.compile(rf"{re.escape(prefix)}-(\d+){re.escape(suffix)}")

    def path(self, step: int) -> Path:
        """File name of the checkpoint at ``step``."""
        if step < 0:
            raise ValueError(f"`step` must be >= 0, got {step}.")
        return self.directory / f"{self.prefix}-{step:09d}{self.suffix}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every checkpoint file present, newest first (verified or not)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = self._pattern.fullmatch(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
        return sorted(found, reverse=True)

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """Write the checkpoint of ``step`` (``write(tmp_path)``) with its checksum, then prune beyond ``keep``.

        Saving a step that already exists replaces it (atomically); the fallback kept is the previous step.
        """
        path = save_with_checksum(self.path(step), write)
        for _, old in self.checkpoints()[self.keep :]:
            old.unlink(missing_ok=True)
            checksum_path(old).unlink(missing_ok=True)
        # temporaries of writes killed before their rename (atomic_path names them ".<name>.<random>.tmp");
        # one writer per folder is assumed (the run folder's lock, common_regs.run_dir.OutputLock)
        for stale in self.directory.glob(f".{self.prefix}-*.tmp"):
            stale.unlink(missing_ok=True)
        return path

    def load_latest(self, load: Callable[[Path], T]) -> tuple[Path, T] | None:
        """``load`` the newest checkpoint whose checksum verifies; None when there is no checkpoint at all.

        A checkpoint that fails verification is skipped with a warning naming the file and the mismatch. Errors
        raised by ``load`` itself on a verified file (an incompatible model, say) are not corruption and
        propagate unchanged.

        Raises:
            CheckpointError: checkpoints exist but none verifies.
        """
        rejected = []
        for _, path in self.checkpoints():
            try:
                verify_checksum(path)
            except (ChecksumError, FileNotFoundError) as err:
                logger.warning("unusable checkpoint: %s Falling back to the previous one.", err)
                rejected.append(f"{path.name}: {err}")
                continue
            if rejected:
                logger.warning("using checkpoint %s after rejecting %d newer one(s)", path, len(rejected))
            return path, load(path)
        if rejected:
            raise CheckpointError(
                f"no valid checkpoint in {self.directory}: " + "; ".join(rejected)
                + ". Delete the folder to start over."
            )
        return None
