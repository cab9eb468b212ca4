r"""Impact indexes for learned sparse vectors, and impact search with caller-supplied query weights.

Lucene impact scoring (Anserini ``ImpactSimilarity``) ranks by an integer dot product over shared tokens:

.. math::  s_{int}(q, d) = \sum_{t \in q \cap d} \tilde w_{q,t} \, \tilde w_{d,t}, \qquad
           \tilde w_{d,t} = \lfloor s_d \, w_{d,t} + 1/2 \rfloor, \qquad
           \tilde w_{q,t} = \lfloor s_q \, w_{q,t} + 1/2 \rfloor

with ``s_d`` = ``ImpactQuantization.doc_scale`` and ``s_q`` = ``ImpactQuantization.query_scale`` (round half up;
weights that round to 0 are dropped). regkit quantizes itself, so Anserini never truncates a float weight (it
would cast 2.7 to 2), and reports the de-quantized score :math:`s_{int}/(s_q s_d)`, which approximates the float
dot product :math:`\sum_t w_{q,t} w_{d,t}` to within the rounding error.

Impact scoring as a dot product of learned term weights follows Lin & Ma, "A Few Brief Notes on DeepImpact, COIL,
and a Conceptual Framework for Information Retrieval Techniques", arXiv:2106.14807 (2021). Default scales 100/100:
the SPLADE reference export to Anserini (Formal et al., "SPLADE v2", arXiv:2109.10086; naver/splade
``create_anserini``, ``quantization_factor_document=100``, ``quantization_factor_query=100``). Tokens are indexed
verbatim (``JsonVectorCollection -impact -pretokenized``: whitespace tokenizer, no lowercasing, no stemming), so
they must be non-empty and contain no whitespace. Search over several threads goes through Pyserini's
``LuceneImpactSearcher`` with ``min_idf=-1``: its default ``min_idf=0`` silently drops query tokens that occur in every
document (idf = ln(N/df) = 0); one thread searches Lucene directly with every token (:mod:`retrieval.lucene_topk`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common_regs.io import atomic_dir
from retrieval.index import (
    INDEX_MARKERS,
    collection_folder,
    finish_index,
    read_index_metadata,
    run_index_collection,
    write_collection_shards,
)
from retrieval.jvm import autoclass, ensure_jvm, translate_java_errors
from retrieval.lucene_topk import LuceneTopK
from retrieval.search import (
    IndexNotFoundError,
    Run,
    SearchError,
    check_index_dir,
    check_search_args,
    pyserini_run,
    run_batches,
)

logger = logging.getLogger(__name__)

__all__ = ["MAX_DOC_IMPACT", "ImpactQuantization", "ImpactSearcher", "build_impact_index", "quantize_weights"]

MAX_DOC_IMPACT = 10_000
"""Largest quantized document weight accepted. Anserini materialises an impact of n as n repeated tokens, so
larger values make indexing slow and memory-hungry (regkit limit, not a Lucene one); lower ``doc_scale`` instead."""
_MAX_QUERY_IMPACT = 2**31 - 1  # query weights travel as java.lang.Integer


@dataclass(frozen=True)
class ImpactQuantization:
    """Fixed-scale integer quantization of sparse weights (stored in the index's ``regkit-index.json``).

    Args:
        doc_scale: document weights are stored as ``round(doc_scale * w)``. Default 100 (source: naver/splade
            ``create_anserini``, ``quantization_factor_document=100``).
        query_scale: query weights are sent as ``round(query_scale * w)``. Default 100 (source: same,
            ``quantization_factor_query=100``).
    """

    doc_scale: float = 100.0
    query_scale: float = 100.0

    def __post_init__(self) -> None:
        for name in ("doc_scale", "query_scale"):
            value = getattr(self, name)
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not is_number or not (math.isfinite(value) and value > 0):
                raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")


def quantize_weights(weights: Mapping[str, float], scale: float, *, where: str, limit: int) -> dict[str, int]:
    """``{token: round_half_up(scale * w)}`` without the zeros; validates tokens and weights, naming ``where``."""
    if not isinstance(weights, Mapping):
        raise TypeError(f"{where}: weights must be a mapping {{token: weight}}, got {type(weights).__name__}.")
    quantized: dict[str, int] = {}
    for token, weight in weights.items():
        if not isinstance(token, str) or token.split() != [token]:  # empty, or whitespace inside
            raise ValueError(f"{where}: token {token!r} must be a non-empty string without whitespace.")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) and not hasattr(weight, "__float__"):
            raise TypeError(f"{where}: weight of token {token!r} must be a number, got {type(weight).__name__}.")
        value = float(weight)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{where}: weight of token {token!r} must be finite and >= 0, got {value}.")
        level = math.floor(scale * value + 0.5)
        if level > limit:
            raise ValueError(
                f"{where}: token {token!r} weight {value} quantizes to {level} > {limit}; use a smaller scale."
            )
        if level > 0:
            quantized[token] = level
    return quantized


def build_impact_index(
    doc_vectors: Mapping[str, Mapping[str, float]],
    index_dir: str | os.PathLike[str],
    *,
    quantization: ImpactQuantization | None = None,
    threads: int = 2,
    overwrite: bool = False,
    show_progress: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Quantize ``{docid: {token: weight}}`` and index it as a Lucene impact index.

    ``metadata`` (JSON values) is added to the index's ``regkit-index.json`` and ``_SUCCESS.json``;
    ``extra_files`` (``{file name: text}``) are written into the index folder, published with it.

    Documents whose every weight rounds to 0 cannot be retrieved; they are not indexed and are counted in the
    metadata (``skipped_empty``) with a warning.

    Raises:
        ValueError / TypeError: empty input, bad tokens (empty, whitespace), negative / non-finite weights, or a
            quantized weight above :data:`MAX_DOC_IMPACT`; the message names the document and token.
        FileExistsError: ``index_dir`` exists and ``overwrite`` is false.
        retrieval.index.IndexBuildError: Anserini failed.
    """
    if not doc_vectors:
        raise ValueError("`doc_vectors` is empty: nothing to index.")
    if threads < 1:
        raise ValueError(f"`threads` must be >= 1, got {threads}.")
    quantization = quantization or ImpactQuantization()
    index_dir = Path(index_dir)
    quantized = {
        str(doc_id): quantize_weights(
            vector, quantization.doc_scale, where=f"document {doc_id!r}", limit=MAX_DOC_IMPACT
        )
        for doc_id, vector in doc_vectors.items()
    }
    empty = [doc_id for doc_id, vector in quantized.items() if not vector]
    if empty:
        logger.warning("%d of %d documents have no weight left after quantization and are not indexed (first: %r)",
                       len(empty), len(quantized), empty[0])

    def records() -> Iterator[dict[str, Any]]:
        for doc_id, vector in quantized.items():
            if vector:
                yield {"id": doc_id, "contents": "", "vector": vector}

    kept = len(quantized) - len(empty)
    if kept == 0:
        raise ValueError("`doc_vectors`: every document quantizes to an empty vector; raise `doc_scale`.")
    with collection_folder(index_dir) as collection, atomic_dir(
        index_dir, overwrite=overwrite, markers=INDEX_MARKERS
    ) as tmp_index:
        shards = max(1, min(threads, kept))
        write_collection_shards(records(), collection, shards=shards, total=kept, show_progress=show_progress)
        run_index_collection(
            [
                "-collection", "JsonVectorCollection",
                "-input", str(collection),
                "-index", str(tmp_index),
                "-generator", "DefaultLuceneDocumentGenerator",
                "-threads", str(threads),
                "-impact", "-pretokenized",
                "-quiet",
            ],
            context=f"impact index {index_dir}",
        )
        for name, text in (extra_files or {}).items():
            (Path(tmp_index) / name).write_text(text, encoding="utf-8")
        finish_index(
            tmp_index, index_dir, expected=kept,
            metadata={"kind": "impact", "quantization": asdict(quantization), "skipped_empty": len(empty),
                      **(metadata or {})},
        )
    logger.info("impact index of %d documents at %s (doc_scale=%s)", kept, index_dir, quantization.doc_scale)
    return index_dir


class ImpactSearcher:
    """Search an impact index with query weights the caller computed (e.g. IDF weights, a SPLADE query encoder).

    One thread searches through Lucene directly (:class:`retrieval.lucene_topk.LuceneTopK`, Anserini's
    ``ImpactSimilarity``); more threads go through Pyserini's ``LuceneImpactSearcher.batch_search``; both give the
    same run.

    Args:
        index_dir: a folder written by :func:`build_impact_index` (or any Anserini impact index).
        query_scale: query weights are sent as ``round(query_scale * w)``. Default: the ``query_scale`` recorded in
            the index's ``regkit-index.json`` (100 for an index without regkit metadata; source: naver/splade).

    The document scale always comes from the index metadata (1 for a foreign index, whose weights are taken as
    already integer), so returned scores are de-quantized consistently with how the index was built.
    """

    def __init__(self, index_dir: str | os.PathLike[str], *, query_scale: float | None = None) -> None:
        self.index_dir = check_index_dir(index_dir, kind="impact")
        recorded = (read_index_metadata(self.index_dir) or {}).get("quantization")
        defaults = ImpactQuantization(**recorded) if recorded else ImpactQuantization(doc_scale=1.0)
        self.quantization = ImpactQuantization(
            doc_scale=defaults.doc_scale, query_scale=defaults.query_scale if query_scale is None else query_scale
        )
        logger.info("ImpactSearcher: %s, %s (%s)", self.index_dir, self.quantization,
                    "index metadata" if recorded else "no regkit metadata: doc_scale=1")
        ensure_jvm()
        with translate_java_errors(IndexNotFoundError, f"{self.index_dir}: cannot open impact index"):
            self._lucene = LuceneTopK(self.index_dir, autoclass("io.anserini.search.similarity.ImpactSimilarity")())
        self._batch_searcher: Any = None

    @property
    def num_docs(self) -> int:
        return self._lucene.num_docs

    def search(
        self,
        query_weights: Mapping[str, Mapping[str, float]],
        *,
        k: int = 1000,
        threads: int = 1,
        batch_size: int = 256,
        show_progress: bool | None = None,
    ) -> Run:
        """Top-``k`` documents per query for ``{qid: {token: weight}}``; scores are de-quantized (see module doc).

        ``threads`` as in :meth:`retrieval.search.Bm25Searcher.search`. A query with no weight left after
        quantization, or with only tokens absent from the index, gets ``{}``.
        """
        check_search_args(k, threads)
        scale = self.quantization.query_scale
        quantized = {
            str(qid): quantize_weights(weights, scale, where=f"query {qid!r}", limit=_MAX_QUERY_IMPACT)
            for qid, weights in query_weights.items()
        }
        items = [(qid, weights) for qid, weights in quantized.items() if weights]

        def search_batch(chunk: list[tuple[str, dict[str, int]]]) -> Run:
            with translate_java_errors(SearchError, f"impact search in {self.index_dir} failed"):
                if threads == 1:
                    return {qid: self._lucene.top_k(self._lucene.weighted_query(weights), k) for qid, weights in chunk}
                searcher, encoder = self._batch()
                encoder.embedding = dict(chunk)
                return pyserini_run(searcher.batch_search([q for q, _ in chunk], [q for q, _ in chunk], k=k,
                                                          threads=threads))

        found = run_batches(
            items, search_batch, batch_size=batch_size, desc="impact search", show_progress=show_progress
        )
        denominator = self.quantization.query_scale * self.quantization.doc_scale
        return {qid: {d: s / denominator for d, s in found.get(qid, {}).items()} for qid in quantized}

    def _batch(self) -> tuple[Any, Any]:
        """Pyserini's ``LuceneImpactSearcher`` and its query encoder (opened on the first search over several threads).

        Queries go through Pyserini's pre-encoded path: ``encode(key)`` returns ``embedding[key]``, keyed by query id.
        """
        if self._batch_searcher is None:
            from pyserini.encode import QueryEncoder
            from pyserini.search.lucene import LuceneImpactSearcher

            encoder = QueryEncoder()
            encoder.embedding = {}
            with translate_java_errors(IndexNotFoundError, f"{self.index_dir}: cannot open impact index"):
                self._batch_searcher = (LuceneImpactSearcher(str(self.index_dir), encoder, min_idf=-1), encoder)
        return self._batch_searcher

    def close(self) -> None:
        """Release the Lucene readers."""
        self._lucene.close()
        if self._batch_searcher is not None:
            self._batch_searcher[0].close()

    def __enter__(self) -> ImpactSearcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
