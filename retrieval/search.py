"""Batch search over Lucene indexes (Pyserini / Lucene); runs come back as ``{qid: {docid: score}}``.

Every query id given comes back as a key: a query that is empty, made only of stopwords, or matches nothing gets
an empty ``{}`` (evaluation then counts it as 0, as ``trec_eval -c``). Java failures are re-raised as Python
exceptions with a one-line message; the Java stack trace is only logged at DEBUG.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from retrieval.index import INDEX_METADATA_FILE, progress_enabled, read_index_metadata
from retrieval.jvm import autoclass, ensure_jvm, translate_java_errors
from retrieval.lucene_topk import LuceneTopK

logger = logging.getLogger(__name__)

__all__ = [
    "Bm25Searcher",
    "IndexNotFoundError",
    "Run",
    "SearchError",
    "check_index_dir",
    "check_search_args",
    "pyserini_run",
    "run_batches",
]

Run = dict[str, dict[str, float]]
Q = TypeVar("Q")

DEFAULT_K1 = 0.9  # Anserini/Pyserini BEIR regressions (bm25-flat), also Anserini's default
DEFAULT_B = 0.4


class IndexNotFoundError(FileNotFoundError):
    """The index folder is missing, is not a complete Lucene index, or is of the wrong kind."""


class SearchError(RuntimeError):
    """Lucene failed while searching; the message names the index."""


def check_index_dir(index_dir: str | os.PathLike[str], *, kind: str | None = None) -> Path:
    """Fail early, with the folder named, when ``index_dir`` is not a committed Lucene index (of ``kind``)."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise IndexNotFoundError(f"{index_dir}: index folder not found.")
    if not any(index_dir.glob("segments_*")):
        raise IndexNotFoundError(f"{index_dir}: not a Lucene index (no segments_* commit file); rebuild it.")
    metadata = read_index_metadata(index_dir)
    if kind is not None and metadata is not None and metadata.get("kind") != kind:
        raise IndexNotFoundError(
            f"{index_dir}: index kind {metadata.get('kind')!r} (in {INDEX_METADATA_FILE}), "
            f"but a {kind!r} index is needed."
        )
    return index_dir


def run_batches(
    items: Sequence[tuple[str, Q]],
    search_batch: Callable[[list[tuple[str, Q]]], Run],
    *,
    batch_size: int,
    desc: str,
    show_progress: bool | None,
) -> Run:
    """Call ``search_batch`` on consecutive chunks of ``(qid, query)`` (a progress bar counts the queries)."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    run: Run = {}
    with tqdm(total=len(items), desc=desc, unit="query", disable=not progress_enabled(show_progress)) as bar:
        for start in range(0, len(items), batch_size):
            chunk = list(items[start : start + batch_size])
            run.update(search_batch(chunk))
            bar.update(len(chunk))
    return run


def pyserini_run(hits: Mapping[str, Sequence[Any]]) -> Run:
    """A Pyserini ``batch_search`` result ``{qid: [hit]}`` as a run."""
    return {qid: {hit.docid: float(hit.score) for hit in results} for qid, results in hits.items()}


def check_search_args(k: int, threads: int) -> None:
    """Validate the ``k`` and ``threads`` of a search call."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be an integer >= 1, got {k!r}.")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"`threads` must be an integer >= 1, got {threads!r}.")


class Bm25Searcher:
    """BM25 over a Lucene index, as Pyserini's ``LuceneSearcher`` ranks it.

    Lucene's BM25: ``score(q, d) = Σ_{t ∈ q} ln(1 + (N − n_t + 0.5)/(n_t + 0.5)) · tf/(tf + k1 (1 − b + b·dl/avgdl))``
    (Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond", FnTIR 2009, with Lucene's
    non-negative idf). Query text goes through the same analyzer as the documents (Anserini's default English
    analyzer). One thread searches through Lucene directly (:class:`retrieval.lucene_topk.LuceneTopK`); more threads
    go through Pyserini's ``LuceneSearcher.batch_search``; both give the same run.

    Args:
        index_dir: a folder written by :func:`retrieval.index.build_bm25_index` (or any Anserini text index).
        k1: term-frequency saturation. Default 0.9 (source: Anserini/Pyserini BEIR ``flat`` regressions).
        b: length normalisation. Default 0.4 (source: same).
    """

    def __init__(self, index_dir: str | os.PathLike[str], *, k1: float = DEFAULT_K1, b: float = DEFAULT_B) -> None:
        if not k1 >= 0:
            raise ValueError(f"`k1` must be >= 0, got {k1}.")
        if not 0 <= b <= 1:
            raise ValueError(f"`b` must be in [0, 1], got {b}.")
        self.index_dir = check_index_dir(index_dir, kind="bm25")
        ensure_jvm()
        with translate_java_errors(IndexNotFoundError, f"{self.index_dir}: cannot open Lucene index"):
            similarity = autoclass("org.apache.lucene.search.similarities.BM25Similarity")(float(k1), float(b))
            self._lucene = LuceneTopK(self.index_dir, similarity)
            self._analyzer = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()
        self._batch_searcher: Any = None
        self.k1, self.b = k1, b
        logger.info("Bm25Searcher: %s, k1=%s, b=%s (defaults 0.9/0.4: Pyserini BEIR flat)", self.index_dir, k1, b)

    @property
    def num_docs(self) -> int:
        return self._lucene.num_docs

    def search(
        self,
        queries: Mapping[str, str],
        *,
        k: int = 1000,
        threads: int = 1,
        batch_size: int = 256,
        show_progress: bool | None = None,
    ) -> Run:
        """Top-``k`` documents per query, ``batch_size`` queries per progress step.

        ``threads=1`` searches Lucene directly on this thread; more run Pyserini's batch search on that many Java
        threads (the same run). Empty, whitespace-only and stopword-only queries get an empty result.
        """
        check_search_args(k, threads)
        for qid, text in queries.items():
            if not isinstance(text, str):
                raise TypeError(f"query {qid!r}: text must be a string, got {type(text).__name__}.")
        items = [(str(qid), text) for qid, text in queries.items() if text.strip()]

        def search_batch(chunk: list[tuple[str, str]]) -> Run:
            with translate_java_errors(SearchError, f"BM25 search in {self.index_dir} failed"):
                if threads == 1:
                    return {qid: self._lucene.top_k(self._lucene.text_query(self._analyzer, text), k)
                            for qid, text in chunk}
                return pyserini_run(self._batch().batch_search(
                    [text for _, text in chunk], [qid for qid, _ in chunk], k=k, threads=threads
                ))

        found = run_batches(
            items, search_batch, batch_size=batch_size, desc="BM25 search", show_progress=show_progress
        )
        return {str(qid): found.get(str(qid), {}) for qid in queries}

    def _batch(self) -> Any:
        """Pyserini's ``LuceneSearcher`` on the same index (opened on the first search over several threads)."""
        if self._batch_searcher is None:
            from pyserini.search.lucene import LuceneSearcher

            with translate_java_errors(IndexNotFoundError, f"{self.index_dir}: cannot open Lucene index"):
                self._batch_searcher = LuceneSearcher(str(self.index_dir))
                self._batch_searcher.set_bm25(float(self.k1), float(self.b))
        return self._batch_searcher

    def close(self) -> None:
        """Release the Lucene readers."""
        self._lucene.close()
        if self._batch_searcher is not None:
            self._batch_searcher.close()

    def __enter__(self) -> Bm25Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
