"""Batch search over Lucene indexes through Pyserini; runs come back as ``{qid: {docid: score}}``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from tqdm.auto import tqdm

from retrieval.jvm import ensure_jvm

logger = logging.getLogger(__name__)

__all__ = ["Bm25Searcher", "IndexNotFoundError", "Run", "check_index_dir"]

Run = dict[str, dict[str, float]]


class IndexNotFoundError(FileNotFoundError):
    """The index folder is missing or is not a complete Lucene index."""


def check_index_dir(index_dir: str | os.PathLike[str]) -> Path:
    """Fail early, with the folder named, when ``index_dir`` is not a committed Lucene index."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise IndexNotFoundError(f"{index_dir}: index folder not found.")
    if not any(index_dir.glob("segments_*")):
        raise IndexNotFoundError(f"{index_dir}: not a Lucene index (no segments_* commit file); rebuild it.")
    return index_dir


class Bm25Searcher:
    """BM25 over a Lucene index. Defaults k1=0.9, b=0.4: Anserini/Pyserini's BEIR regression settings.

    Args:
        index_dir: a folder written by :func:`retrieval.index.build_bm25_index` (or any Anserini index).
        k1: BM25 term-frequency saturation.
        b: BM25 length normalization.
    """

    def __init__(self, index_dir: str | os.PathLike[str], *, k1: float = 0.9, b: float = 0.4) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs `k1` >= 0 and `b` in [0, 1], got k1={k1}, b={b}.")
        self.index_dir = check_index_dir(index_dir)
        ensure_jvm()
        from pyserini.search.lucene import LuceneSearcher

        try:
            self._searcher = LuceneSearcher(str(self.index_dir))
        except Exception as err:  # a JVM exception: keep its message, not the Java trace
            raise IndexNotFoundError(f"{self.index_dir}: cannot open Lucene index ({err}).") from err
        self._searcher.set_bm25(k1, b)
        self.k1, self.b = k1, b

    @property
    def num_docs(self) -> int:
        return int(self._searcher.num_docs)

    def search(
        self,
        queries: Mapping[str, str],
        *,
        k: int = 1000,
        threads: int = 2,
        batch_size: int = 256,
        show_progress: bool = True,
    ) -> Run:
        """Top-``k`` documents per query. Empty (or whitespace-only) queries get an empty result."""
        if k < 1:
            raise ValueError(f"`k` must be >= 1, got {k}.")
        run: Run = {qid: {} for qid in queries}
        items = [(qid, text) for qid, text in queries.items() if text and text.strip()]
        with tqdm(total=len(items), desc="BM25 search", unit="query", disable=not show_progress) as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                hits = self._searcher.batch_search(
                    [text for _, text in chunk], [qid for qid, _ in chunk], k=k, threads=threads
                )
                for qid, results in hits.items():
                    run[qid] = {hit.docid: float(hit.score) for hit in results}
                bar.update(len(chunk))
        return run
