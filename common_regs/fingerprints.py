"""Fingerprints of a job's input files (size + SHA-256), so that a resumed job never mixes old and new data.

A resumable job (a training run, a sharded encoding) records :func:`fingerprint_inputs` of the files it reads next
to its partial results; before resuming it computes them again and :func:`input_change` names the first file that
differs. A cache records :func:`content_fingerprints` (keyed by names such as ``corpus.jsonl`` rather than paths,
without times: a copy of the same files elsewhere keeps the cache valid) and :func:`cache_change` says why it must be
rebuilt. Hashing streams the file (1 MiB blocks). A digest recorded earlier is reused without reading
the file again when the size and modification time (ns) are unchanged and the file was already older than two
seconds when it was hashed (git's "racy clean" rule: a file written in the same clock tick as the hash could
change again without its mtime moving).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from common_regs.checkpoint import sha256_file

__all__ = ["cache_change", "content_fingerprints", "fingerprint_inputs", "input_change"]

_RACY_NS = 2_000_000_000


def _files(path: Path) -> list[tuple[str, Path]]:
    """``(key, file)`` pairs of an input: the file itself, every file under a folder (sorted), nothing if absent."""
    if path.is_dir():
        return [(f"{path}/{p.relative_to(path).as_posix()}", p) for p in sorted(path.rglob("*")) if p.is_file()]
    return [(str(path), path)] if path.is_file() else []


def _fingerprint(path: Path, known: Mapping[str, Any] | None) -> dict[str, int | str]:
    stat = path.stat()
    if (
        isinstance(known, Mapping)
        and known.get("size") == stat.st_size
        and known.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(known.get("hashed_ns"), int)
        and stat.st_mtime_ns < known["hashed_ns"] - _RACY_NS
        and isinstance(known.get("sha256"), str)
    ):
        return dict(known)
    hashed_ns = time.time_ns()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "hashed_ns": hashed_ns, "sha256": sha256_file(path)}


def fingerprint_inputs(
    paths: Iterable[str | os.PathLike[str]], *, known: Mapping[str, Any] | None = None
) -> dict[str, dict[str, int | str] | None]:
    """``{path: {"size", "sha256", "mtime_ns", "hashed_ns"}}`` of each input; a folder stands for every file in it.

    Args:
        paths: input files or folders, as the job names them (the keys keep that spelling). A path that does not
            exist maps to None (the job reports it when it reads it).
        known: a previous result; its digests are reused for unchanged files (module docstring).
    """
    known = known if isinstance(known, Mapping) else {}
    result: dict[str, dict[str, int | str] | None] = {}
    for path in paths:
        files = _files(Path(path))
        if not files:
            result[str(path)] = None
        for key, file in files:
            result[key] = _fingerprint(file, known.get(key))
    return result


def _short(entry: Mapping[str, Any] | str | None) -> str:
    if entry is None:
        return "absent"
    if isinstance(entry, Mapping):
        return f"{entry.get('size')} bytes, SHA-256 {str(entry.get('sha256'))[:12]}"
    return f"digest {str(entry)[:12]}"


def _identity(entry: Any) -> Any:
    """What two recordings of one input must share: size and SHA-256 of a file, the value of a digest string."""
    return (entry.get("size"), entry.get("sha256")) if isinstance(entry, Mapping) else entry


def input_change(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str | None:
    """The first input that differs between two :func:`fingerprint_inputs` results, described; None if none.

    Example: ``"data/log.parquet changed (78391 bytes, SHA-256 1f0c2a9e77b1 → 80112 bytes, SHA-256 9b2e03c4d5f6)"``.
    An entry may also be a digest string (e.g. of generated pseudo-queries), compared by value.
    """
    recorded = recorded if isinstance(recorded, Mapping) else {}
    for key in sorted(set(recorded) | set(current)):
        before, now = recorded.get(key), current.get(key)
        if _identity(before) != _identity(now):
            return f"{key} changed ({_short(before)} → {_short(now)})"
    return None


def content_fingerprints(files: Mapping[str, str | os.PathLike[str]]) -> dict[str, dict[str, int | str] | None]:
    """``{name: {"size", "sha256"}}`` of ``{name: path}`` (a folder: ``name/<relative path>`` per file inside)."""
    result: dict[str, dict[str, int | str] | None] = {}
    for name, path in files.items():
        for key, entry in fingerprint_inputs([path]).items():
            content = None if entry is None else {"size": entry["size"], "sha256": entry["sha256"]}
            result[name + key[len(str(path)) :]] = content
    return result


def cache_change(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str | None:
    """Why a cache whose identity was ``recorded`` does not serve ``current``; None when it does.

    Both are mappings with an ``"inputs"`` entry (:func:`content_fingerprints`) and other JSON values; a changed input
    file is named first, then the other keys that differ.
    """
    recorded = recorded if isinstance(recorded, Mapping) else {}
    change = input_change(recorded.get("inputs"), current.get("inputs") or {})
    if change is not None:
        return change
    keys = sorted(k for k in set(recorded) | set(current) if k != "inputs" and recorded.get(k) != current.get(k))
    return None if not keys else f"{', '.join(keys)} differ"
