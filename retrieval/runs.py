"""TREC run files: ``qid Q0 docid rank score tag``, ranks from 1 by descending score."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from common_regs.io import atomic_path

__all__ = ["RunFormatError", "read_trec_run", "write_trec_run"]


class RunFormatError(ValueError):
    """A run file line is malformed; the message names file and line."""


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike[str], tag: str = "regkit") -> Path:
    """Write ``run`` atomically; ties are broken by docid (descending), as trec_eval sorts them."""
    if any(ch.isspace() for ch in tag) or not tag:
        raise ValueError(f"run `tag` must be a non-empty word without spaces, got {tag!r}.")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)
            for rank, (docid, score) in enumerate(ranked, start=1):
                out.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    return Path(path)


def read_trec_run(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    path = Path(path)
    if not path.is_file():
        raise RunFormatError(f"{path}: run file not found.")
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 6:
                raise RunFormatError(f"{path}:{line_no}: expected 6 fields `qid Q0 docid rank score tag`, got {len(parts)}.")
            qid, _, docid, _, score, _ = parts
            try:
                value = float(score)
            except ValueError:
                raise RunFormatError(f"{path}:{line_no}: score {score!r} is not a number.") from None
            if docid in run.setdefault(qid, {}):
                raise RunFormatError(f"{path}:{line_no}: document {docid!r} appears twice for query {qid!r}.")
            run[qid][docid] = value
    return run
