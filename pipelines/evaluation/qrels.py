"""Judgments: read BEIR ``query-id<TAB>corpus-id<TAB>score`` or TREC ``qid 0 docid rel`` files, write TREC ones."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from common_regs.io import atomic_path
from retrieval.beir import BeirFormatError, read_qrels

__all__ = ["load_qrels", "write_trec_qrels"]


def _read_trec_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise BeirFormatError(
                    f"{path}:{line_no}: expected TREC qrels `qid iter docid rel`, got {len(parts)} fields."
                )
            try:
                qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
            except ValueError:
                raise BeirFormatError(f"{path}:{line_no}: relevance must be an integer, got {parts[3]!r}.") from None
    if not qrels:
        raise BeirFormatError(f"{path}: no judgments.")
    return qrels


def load_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Judgments from a BEIR qrels TSV (3 columns, optional header) or a TREC qrels file (4 columns)."""
    path = Path(path)
    if not path.is_file():
        raise BeirFormatError(f"{path}: qrels file not found.")
    with open(path, encoding="utf-8-sig") as handle:
        first = next((line for line in handle if line.strip()), "")
    return _read_trec_qrels(path) if len(first.split()) == 4 and "\t" not in first.strip() else read_qrels(path)


def write_trec_qrels(qrels: Mapping[str, Mapping[str, int]], path: str | os.PathLike[str]) -> Path:
    """Write ``{qid: {docid: relevance}}`` atomically as TREC qrels (``qid 0 docid rel``).

    :func:`load_qrels` reads the file back unchanged.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for qid, docs in qrels.items():
            for docid, relevance in docs.items():
                if any(not value or any(ch.isspace() for ch in value) for value in (str(qid), str(docid))):
                    raise ValueError(f"query {qid!r}, document {docid!r}: TREC qrels ids must be non-empty, "
                                     "without whitespace.")
                out.write(f"{qid} 0 {docid} {int(relevance)}\n")
    return Path(path)
