"""TREC run files: ``qid Q0 docid rank score tag``, ranks from 1 in trec_eval order.

trec_eval ignores the rank column and re-sorts each query's documents by score descending, ties broken by document
id descending (``strcmp`` order, which equals Python's code-point order for UTF-8). :func:`rank_documents` is that
order; the writer uses it so that the rank column agrees with what trec_eval (and :mod:`pipelines.evaluation`)
computes.

The reader checks every line and raises :class:`RunFormatError` naming the file, line and column of the first
problem: not UTF-8, a field count other than 6, a rank that is not an integer (its value is otherwise ignored), a
score that is not a finite decimal number in ASCII (``1_0``, ``nan``, ``inf`` and non-ASCII digits are refused,
although Python's ``float`` would take them), a document listed twice for one query.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from common_regs.io import atomic_path

__all__ = ["RunFormatError", "rank_documents", "read_trec_run", "write_trec_run"]


class RunFormatError(ValueError):
    """A run file line is malformed; the message names file and line."""


_RANK = re.compile(r"[+-]?[0-9]+")
_SCORE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _shown(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


def rank_documents(docs: Mapping[str, float], k: int | None = None) -> list[tuple[str, float]]:
    """``(docid, score)`` pairs in trec_eval order (score descending, then docid descending), cut to ``k``."""
    ranked = sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return ranked if k is None else ranked[:k]


def _check_id(value: str, what: str) -> None:
    # U+FEFF too: at the start of the file it would be read back as a byte-order mark and dropped.
    if not value or any(ch.isspace() or ch == "\ufeff" for ch in value):
        raise ValueError(
            f"{what} {value!r} cannot be written to a TREC run: it must be non-empty, without whitespace or U+FEFF."
        )


def write_trec_run(
    run: Mapping[str, Mapping[str, float]], path: str | os.PathLike[str], tag: str = "regkit", *, k: int | None = None
) -> Path:
    """Write ``run`` atomically (top ``k`` per query when given); queries with no documents write no line.

    Scores are written with 6 decimals (Anserini's format); reading a file back can therefore tie documents whose
    scores differ by less than 5e-7. Evaluate the in-memory run when that matters.
    """
    _check_id(tag, "run `tag`")
    if k is not None and k < 1:
        raise ValueError(f"`k` must be >= 1 or None, got {k}.")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for qid, docs in run.items():
            _check_id(str(qid), "query id")
            for rank, (docid, score) in enumerate(rank_documents(docs, k), start=1):
                _check_id(str(docid), f"query {qid!r}: document id")
                if not math.isfinite(score):
                    raise ValueError(f"query {qid!r}, document {docid!r}: score must be finite, got {score}.")
                out.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    return Path(path)


def read_trec_run(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Read a TREC run into ``{qid: {docid: score}}`` (the rank column is ignored, as trec_eval does)."""
    path = Path(path)
    if not path.is_file():
        raise RunFormatError(f"{path}: run file not found.")
    run: dict[str, dict[str, float]] = {}
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise RunFormatError(f"{path}:{line_no}: not UTF-8 (byte {err.start} of the line).") from None
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 6:
                raise RunFormatError(
                    f"{path}:{line_no}: expected 6 fields `qid Q0 docid rank score tag`, got {len(parts)}."
                )
            qid, _, docid, rank, score, _ = parts
            if not _RANK.fullmatch(rank):
                raise RunFormatError(f"{path}:{line_no}: rank (field 4) {_shown(rank)} is not an integer.")
            if not _SCORE.fullmatch(score):
                raise RunFormatError(f"{path}:{line_no}: score {_shown(score)} is not a number (field 5).")
            value = float(score)
            if not math.isfinite(value):
                raise RunFormatError(f"{path}:{line_no}: score {_shown(score)} is not finite (field 5).")
            if docid in run.setdefault(qid, {}):
                raise RunFormatError(f"{path}:{line_no}: document {docid!r} appears twice for query {qid!r}.")
            run[qid][docid] = value
    return run
