"""Candidate mining and teacher scores for ensemble distillation: BM25 and dense top-k per query, cached on disk.

For each query the candidate list is the union of the BM25 top-k (Lucene, k1 = 0.9, b = 0.4) and the dense top-k
(a sentence-transformers bi-encoder, cosine), plus any ``include`` documents (e.g. the judged positives). Every
candidate is scored by *every* teacher — BM25 through Lucene's exact per-document score
(``IndexReaderUtils.computeQueryDocumentScoreWithSimilarity``) when it is outside BM25's own top-k — so the
min-max ensemble (:func:`common_regs.distill.minmax_ensemble_scores`) sees complete rows.
This is the teacher set of Geng et al. 2024 (arXiv:2411.04403): a dense and a lexical/sparse teacher, scores
min-max normalised per query and teacher, averaged, scaled.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from common_regs.distill import minmax_ensemble_scores
from common_regs.fingerprints import cache_change
from common_regs.io import atomic_write_text
from retrieval.index import INDEX_METADATA_FILE, build_bm25_index, progress_enabled
from retrieval.jvm import autoclass, translate_java_errors
from retrieval.search import DEFAULT_B, DEFAULT_K1, Bm25Searcher, SearchError

logger = logging.getLogger(__name__)

__all__ = [
    "TEACHERS",
    "Bm25Scorer",
    "Candidates",
    "cached_bm25_index",
    "dense_topk",
    "ensemble_run",
    "mine_candidates",
]

TEACHERS = ("bm25", "dense")
FORMAT_VERSION = 1


class Bm25Scorer:
    """Exact Lucene BM25 score of any (query, document) pair of a BM25 index (same analyzer and k1/b as search)."""

    def __init__(self, index_dir: str | os.PathLike[str], *, k1: float = DEFAULT_K1, b: float = DEFAULT_B) -> None:
        from retrieval.search import check_index_dir

        self.index_dir = check_index_dir(index_dir, kind="bm25")
        utils = autoclass("io.anserini.index.IndexReaderUtils")
        similarity = autoclass("org.apache.lucene.search.similarities.BM25Similarity")
        with translate_java_errors(SearchError, f"{self.index_dir}: cannot open the index"):
            self._reader = utils.getReader(str(self.index_dir))
        self._utils = utils
        self._similarity = similarity(float(k1), float(b))

    def score(self, query: str, doc_ids: Sequence[str]) -> list[float]:
        """BM25 score of each document for ``query`` (0 for a document sharing no term with it)."""
        with translate_java_errors(SearchError, f"BM25 scoring in {self.index_dir} failed"):
            return [
                float(self._utils.computeQueryDocumentScoreWithSimilarity(self._reader, d, query, self._similarity))
                for d in doc_ids
            ]

    def close(self) -> None:
        self._reader.close()


def dense_topk(query_emb: np.ndarray, doc_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k rows ``(indices, scores)`` (descending), each (Q, min(k, N))."""
    scores = query_emb @ doc_emb.T
    k = min(k, doc_emb.shape[0])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


@dataclass
class Candidates:
    """Per query: candidate document ids and each teacher's score for each of them (aligned lists)."""

    docs: dict[str, list[str]]
    scores: dict[str, dict[str, list[float]]]  # teacher -> qid -> scores aligned with docs[qid]
    meta: dict[str, Any] = field(default_factory=dict)

    def teacher_matrix(self, qids: Sequence[str], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores (T, Q, C), mask (Q, C))`` padded to the longest list (or ``width``)."""
        width = width or max(len(self.docs[q]) for q in qids)
        out = torch.zeros((len(TEACHERS), len(qids), width))
        mask = torch.zeros((len(qids), width), dtype=torch.bool)
        for row, qid in enumerate(qids):
            n = min(width, len(self.docs[qid]))
            mask[row, :n] = True
            for t, teacher in enumerate(TEACHERS):
                out[t, row, :n] = torch.tensor(self.scores[teacher][qid][:n])
        return out, mask

    def save(self, path: str | os.PathLike[str]) -> Path:
        payload = {"format_version": FORMAT_VERSION, "meta": self.meta, "docs": self.docs, "scores": self.scores}
        return atomic_write_text(path, json.dumps(payload) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Candidates:
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: corrupt candidate cache ({err}); delete it to mine again.") from None
        if payload.get("format_version") != FORMAT_VERSION or set(payload.get("scores", {})) != set(TEACHERS):
            raise ValueError(f"{path}: candidate cache of another format; delete it to mine again.")
        return cls(docs=payload["docs"], scores=payload["scores"], meta=payload.get("meta", {}))


def mine_candidates(
    queries: Mapping[str, str],
    *,
    bm25_index: str | os.PathLike[str],
    doc_ids: Sequence[str],
    doc_embeddings: np.ndarray,
    query_embeddings: np.ndarray,
    k: int = 100,
    include: Mapping[str, Sequence[str]] | None = None,
    cache_path: str | os.PathLike[str] | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    threads: int = 1,
    show_progress: bool | None = None,
) -> Candidates:
    """Union of BM25 and dense top-``k`` per query (+ ``include``), scored by both teachers; cached at ``cache_path``.

    Args:
        queries: ``{qid: text}``.
        bm25_index: a BM25 index of the corpus (:func:`retrieval.index.build_bm25_index`).
        doc_ids: the corpus' document ids, in the row order of ``doc_embeddings``.
        doc_embeddings: the corpus' dense embeddings (N, d), L2-normalised, row i ↔ ``doc_ids[i]``.
        query_embeddings: (Q, d) L2-normalised, row order = ``queries`` order.
        k: depth of each retriever. Default 100 (regkit's ensemble-teacher protocol: the union of each top 100).
        include: extra documents per query (e.g. judged positives for training).
        cache_path: JSON cache; reused when its ``meta.fingerprint`` equals ``fingerprint`` (written atomically).
        fingerprint: what identifies the inputs (dataset, split, models, k); stored in the cache.
        threads: BM25 search threads (1: Lucene searched directly, :class:`retrieval.search.Bm25Searcher`).
        show_progress: progress bars (None = when the ``retrieval`` logger is at INFO or below).
    """
    meta = {"fingerprint": dict(fingerprint or {}), "k": k, "queries": len(queries)}
    if cache_path is not None and Path(cache_path).is_file():
        try:
            cached = Candidates.load(cache_path)
        except ValueError as err:
            logger.warning("%s", err)
        else:
            if cached.meta == meta:
                logger.info("candidates: reusing %s (%d queries)", cache_path, len(cached.docs))
                return cached
            change = cache_change(cached.meta.get("fingerprint"), meta["fingerprint"]) or "k or query count differ"
            logger.warning("candidates: %s was mined from other inputs (%s); mining again", cache_path, change)
    if query_embeddings.shape != (len(queries), doc_embeddings.shape[1]) or doc_embeddings.shape[0] != len(doc_ids):
        raise ValueError(
            f"embedding shapes do not match: queries {query_embeddings.shape} for {len(queries)} queries, "
            f"documents {doc_embeddings.shape} for {len(doc_ids)} ids."
        )
    qids = [str(q) for q in queries]
    with Bm25Searcher(bm25_index) as searcher:
        bm25_run = searcher.search(queries, k=k, threads=threads, show_progress=show_progress)
    rows, dense_scores = dense_topk(query_embeddings, doc_embeddings, k)
    row_of = {d: i for i, d in enumerate(doc_ids)}
    docs: dict[str, list[str]] = {}
    scores: dict[str, dict[str, list[float]]] = {t: {} for t in TEACHERS}
    scorer = Bm25Scorer(bm25_index)
    try:
        for position, qid in enumerate(tqdm(qids, desc="teacher scores", disable=not progress_enabled(show_progress))):
            lexical = bm25_run.get(qid, {})
            ranked = list(lexical) + [doc_ids[r] for r in rows[position]]
            ranked += [str(d) for d in (include or {}).get(qid, [])]
            union = list(dict.fromkeys(ranked))
            missing = [d for d in union if d not in lexical]
            computed = dict(zip(missing, scorer.score(queries[qid], missing), strict=True))
            docs[qid] = union
            scores["bm25"][qid] = [float(lexical[d]) if d in lexical else computed[d] for d in union]
            q = query_embeddings[position]
            scores["dense"][qid] = [float(doc_embeddings[row_of[d]] @ q) for d in union]
    finally:
        scorer.close()
    candidates = Candidates(docs=docs, scores=scores, meta=meta)
    if cache_path is not None:
        candidates.save(cache_path)
        logger.info("candidates: %d queries, %.1f candidates/query → %s",
                    len(docs), sum(map(len, docs.values())) / max(1, len(docs)), cache_path)
    return candidates


def cached_bm25_index(
    corpus: Mapping[str, Any], index_dir: str | os.PathLike[str], *, inputs: Mapping[str, Any], threads: int = 2
) -> Path:
    """The BM25 index of ``corpus`` at ``index_dir``, built again unless it was built from the same ``inputs``.

    ``inputs`` (the corpus file's :func:`common_regs.fingerprints.content_fingerprints`) are recorded beside the
    index in ``<index_dir>.inputs.json`` once it is published, and the record is removed before a rebuild: an index
    without a record (killed in between, or built by an older regkit) is rebuilt.
    """
    index_dir = Path(index_dir)
    record = index_dir.with_name(f"{index_dir.name}.inputs.json")
    try:
        change = cache_change(json.loads(record.read_text(encoding="utf-8")), {"inputs": inputs})
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        change = "no record of its inputs"
    if change is None and (index_dir / INDEX_METADATA_FILE).is_file():
        return index_dir
    if index_dir.exists():
        logger.warning("BM25 index cache %s was built from other inputs (%s); rebuilding it", index_dir, change)
    record.unlink(missing_ok=True)
    build_bm25_index(corpus, index_dir, threads=threads, overwrite=True, show_progress=False)
    atomic_write_text(record, json.dumps({"inputs": dict(inputs)}) + "\n")
    return index_dir


def ensemble_run(
    candidates: Candidates, weights: Sequence[float] | None = None, *, scale: float = 30.0
) -> dict[str, dict[str, float]]:
    """The min-max ensemble teacher as a retriever: each query's candidates ranked by the ensemble score."""
    qids = list(candidates.docs)
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(qids), 256):
        chunk = qids[start : start + 256]
        matrix, mask = candidates.teacher_matrix(chunk)
        ensemble = minmax_ensemble_scores(matrix, weights, scale=scale, mask=mask)
        for row, qid in enumerate(chunk):
            run[qid] = {d: float(ensemble[row, j]) for j, d in enumerate(candidates.docs[qid])}
    return run
