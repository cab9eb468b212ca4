"""FAISS indexes of item embeddings, and the exact top-k of a flat index with per-query exclusions.

Index types (all inner product, so ranking equals the training score ⟨u, i⟩ up to the model's positive scale):

* ``"flat"`` (default): ``faiss.IndexFlatIP``, exact;
* ``"ivf"``: ``faiss.IndexIVFFlat`` with ``nlist`` k-means cells, ``nprobe`` searched;
* ``"ivfpq"``: ``faiss.IndexIVFPQ``: ``nlist`` cells, each vector stored as ``pq_m`` codes of ``pq_nbits`` bits
  (``pq_m · pq_nbits / 8`` bytes instead of ``4 D``), ``nprobe`` searched; for catalogues too large for flat
  vectors in memory. ``refine_factor`` > 0 re-ranks the ``k · refine_factor`` IVF-PQ candidates by their exact
  inner product (``faiss.IndexRefineFlat``, index_factory suffix ``RFlat``), which keeps the full vectors too;
* ``"hnsw"``: ``faiss.IndexHNSWFlat`` with ``hnsw_m`` links per node, ``ef_construction`` and ``ef_search``.

Measured recall@10 / QPS trade-offs on a generated 1M-item catalogue: ``pipelines/bench/bench_faiss_scale.py``
(docs/scaling.md).

For a flat index, :func:`exact_top_k` ranks by one matrix product over the stored vectors with each query's
excluded items (a user's training items) set to −∞: FAISS's own search cannot leave out a different set per
query, so it would have to return ``k`` + the excluded count through its heap, several times slower for
full-catalogue evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["IndexConfig", "build_faiss_index", "exact_top_k", "flat_vectors"]


@dataclass(frozen=True)
class IndexConfig:
    """FAISS index options.

    Defaults: exact flat inner product; IVF ``nlist=100, nprobe=8`` and HNSW ``M=32, efSearch=128`` are common FAISS
    starting points (FAISS wiki "Guidelines to choose an index"); ``ef_construction=40`` is FAISS's own ``IndexHNSW``
    default; IVF-PQ ``pq_m=8`` sub-quantizers of ``pq_nbits=8`` bits follow the FAISS wiki tutorial ("Getting started",
    ``IndexIVFPQ(quantizer, d, nlist, 8, 8)``). ``pq_m`` must divide the embedding dimension (checked when the index is
    built). ``refine_factor=0`` (off, regkit convention) applies to ``ivfpq`` only.
    """

    kind: Literal["flat", "ivf", "ivfpq", "hnsw"] = "flat"
    nlist: int = 100
    nprobe: int = 8
    pq_m: int = 8
    pq_nbits: int = 8
    refine_factor: int = 0
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 128

    def __post_init__(self) -> None:
        if self.kind not in ("flat", "ivf", "ivfpq", "hnsw"):
            raise ValueError(f"`index.kind` must be 'flat', 'ivf', 'ivfpq' or 'hnsw', got {self.kind!r}.")
        for name in ("nlist", "nprobe", "pq_m", "hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise ValueError(f"`index.{name}` must be >= 1, got {getattr(self, name)}.")
        if not 1 <= self.pq_nbits <= 16:
            raise ValueError(f"`index.pq_nbits` must be in [1, 16], got {self.pq_nbits}.")
        if self.refine_factor < 0 or (self.refine_factor and self.kind != "ivfpq"):
            raise ValueError(
                f"`index.refine_factor` must be >= 0 and is only used with kind 'ivfpq'; got {self.refine_factor} "
                f"with kind {self.kind!r}."
            )


_SCORE_BLOCK = 1 << 17  # scores ranked at once by exact_top_k: 512 KB of float32, about an L2 cache


def flat_vectors(index: Any) -> np.ndarray | None:
    """The stored vectors of an exact inner-product index (a view, no copy); None for any other index."""
    import faiss

    if type(index) is not faiss.IndexFlatIP or index.ntotal == 0:
        return None
    return faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)


def build_faiss_index(vectors: np.ndarray, config: IndexConfig | None = None) -> Any:
    """An inner-product FAISS index over ``vectors`` ``(N, D)`` float32 (IVF is trained on them first)."""
    import faiss

    config = config or IndexConfig()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"`vectors` must be a non-empty (N, D) array, got shape {vectors.shape}.")
    dim = vectors.shape[1]
    if config.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif config.kind == "ivf":
        nlist = min(config.nlist, vectors.shape[0])
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(config.nprobe, nlist)
    elif config.kind == "ivfpq":
        if dim % config.pq_m:
            raise ValueError(f"`index.pq_m` must divide the embedding dimension {dim}, got {config.pq_m}.")
        nlist = min(config.nlist, vectors.shape[0])
        if vectors.shape[0] < 2**config.pq_nbits:
            raise ValueError(
                f"`index.pq_nbits`={config.pq_nbits} needs at least {2**config.pq_nbits} vectors to train the "
                f"product quantizer, got {vectors.shape[0]}; lower `index.pq_nbits` or use kind 'ivf'."
            )
        index = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(dim), dim, nlist, config.pq_m, config.pq_nbits, faiss.METRIC_INNER_PRODUCT
        )
        index.train(vectors)
        index.nprobe = min(config.nprobe, nlist)
        if config.refine_factor:
            index = faiss.IndexRefineFlat(index)
            index.k_factor = float(config.refine_factor)
    else:
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
    index.add(vectors)
    return index


def exact_top_k(
    queries: np.ndarray, vectors: np.ndarray, k: int, *, excluded: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item indices and scores ``(Q, k)`` of ``queries @ vectors.T`` (``-1`` / ``-inf`` pad short lists).

    ``excluded`` = ``(indptr, items)``: query ``q`` never gets ``items[indptr[q]:indptr[q + 1]]``. Ties are broken
    by the lower item index. Scores are computed ``_SCORE_BLOCK`` at a time.
    """
    out_items = np.full((queries.shape[0], k), -1, dtype=np.int64)
    out_scores = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    depth = min(k, vectors.shape[0])
    block = max(1, _SCORE_BLOCK // vectors.shape[0])
    for start in range(0, queries.shape[0], block):
        stop = min(start + block, queries.shape[0])
        scores = queries[start:stop] @ vectors.T
        if excluded is not None:
            indptr, items = excluded
            counts = np.diff(indptr[start : stop + 1])
            scores[np.repeat(np.arange(stop - start), counts), items[indptr[start] : indptr[stop]]] = -np.inf
        np.negative(scores, out=scores)  # ascending partial sort of the negated scores, without a copy
        top = np.sort(np.argpartition(scores, depth - 1, axis=1)[:, :depth], axis=1)
        negated = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(negated, axis=1, kind="stable")
        top, top_scores = np.take_along_axis(top, order, 1), -np.take_along_axis(negated, order, 1)
        found = np.isfinite(top_scores)
        out_items[start:stop, :depth] = np.where(found, top, -1)
        out_scores[start:stop, :depth] = np.where(found, top_scores, -np.inf)
    return out_items, out_scores
