r"""Learned sparse vectors → Lucene impact index, OpenSearch ``rank_features`` bulk export, and sparsity statistics.

* :func:`index_with_model`: encode a corpus with an inference-free sparse encoder (progress bar), quantize
  (:class:`retrieval.impact.ImpactQuantization`, round half up, default scale 100) and build the impact index.
  With ``work_dir`` the encoding is resumable (:mod:`retrieval.resumable_encoding`): a killed run, rerun, reuses
  the shards already encoded, and the work folder is removed once the index is published.
* :func:`search_with_model`: queries → IDF weights of their wordpieces (no neural model at query time) →
  :class:`retrieval.impact.ImpactSearcher` (``min_idf=-1``: a token present in every document is kept).
* :func:`write_opensearch_bulk`: NDJSON for OpenSearch's ``_bulk`` API, one ``index`` action + one document
  ``{field: {token: weight}}`` per vector, and the index mapping (``"type": "rank_features"``). rank_features
  values must be strictly positive (zeros are left out) and keep 9 significant bits (OpenSearch/Lucene
  ``FeatureField``); weights are written as floats, not quantized.
* :func:`flops`: the FLOPS retrieval cost of Paria et al. (ICLR 2020, arXiv:2004.05665) as reported by SPLADE:
  :math:`\sum_t \bar p_q(t)\, \bar p_d(t)`, the expected number of shared active terms of a (query, document)
  pair, with :math:`\bar p(t)` the fraction of queries / documents where t is active.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common_regs.io import atomic_path, atomic_write_text
from common_regs.output_folders import check_regkit_folder
from common_regs.run_dir import read_success_marker, scratch_folder
from retrieval.document_mixture import (
    LEXICAL_IDF_FILE,
    DocumentMixture,
    corpus_vectors,
    lexical_query_weights,
    lucene_analyzer,
)
from retrieval.encoder import DocumentEncodingStats, encode_documents, query_weights
from retrieval.impact import MAX_DOC_IMPACT, ImpactQuantization, ImpactSearcher, build_impact_index, quantize_weights
from retrieval.index import INDEX_MARKERS
from retrieval.resumable_encoding import DEFAULT_SHARD_SIZE, encode_documents_resumable

logger = logging.getLogger(__name__)

__all__ = [
    "InferenceFreeSearcher", "flops", "index_vectors", "index_with_model", "search_with_model",
    "write_opensearch_bulk",
]


def flops(query_vectors: Mapping[str, Mapping[str, float]], doc_vectors: Mapping[str, Mapping[str, float]]) -> float:
    """``Σ_t p_q(t) p_d(t)`` over the active (non-zero) terms (module docstring)."""
    if not query_vectors or not doc_vectors:
        raise ValueError("`query_vectors` and `doc_vectors` must be non-empty.")
    in_queries = Counter(t for v in query_vectors.values() for t, w in v.items() if w)
    in_docs = Counter(t for v in doc_vectors.values() for t, w in v.items() if w)
    nq, nd = len(query_vectors), len(doc_vectors)
    return sum((c / nq) * (in_docs[t] / nd) for t, c in in_queries.items() if t in in_docs)


def index_vectors(
    doc_vectors: Mapping[str, Mapping[str, float]],
    index_dir: str | os.PathLike[str],
    *,
    quantization: ImpactQuantization | None = None,
    threads: int = 2,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build the impact index; return quantized-vector statistics (average active terms after quantization)."""
    quantization = quantization or ImpactQuantization()
    build_impact_index(doc_vectors, index_dir, quantization=quantization, threads=threads, overwrite=overwrite,
                       metadata=metadata, extra_files=extra_files)
    return _vector_info(doc_vectors, quantization)


def _vector_info(doc_vectors: Mapping[str, Mapping[str, float]], quantization: ImpactQuantization) -> dict[str, Any]:
    quantized = [quantize_weights(v, quantization.doc_scale, where=f"document {d!r}", limit=MAX_DOC_IMPACT)
                 for d, v in doc_vectors.items()]
    return {"avg_active_terms_float": sum(map(len, doc_vectors.values())) / len(doc_vectors),
            "avg_active_terms_indexed": sum(map(len, quantized)) / len(quantized),
            "quantization": {"doc_scale": quantization.doc_scale, "query_scale": quantization.query_scale}}


def index_with_model(
    model: Any,
    documents: Mapping[str, str | bytes],
    index_dir: str | os.PathLike[str],
    *,
    quantization: ImpactQuantization | None = None,
    threads: int = 2,
    batch_size: int = 16,
    overwrite: bool = False,
    show_progress: bool | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> tuple[dict[str, dict[str, float]], DocumentEncodingStats, dict[str, Any]]:
    """Encode ``documents`` with ``model``'s document route and build the impact index at ``index_dir``.

    With ``work_dir``, encode in resumable shards of ``shard_size`` documents there
    (:func:`retrieval.resumable_encoding.encode_documents_resumable`); the index records the encoding fingerprint,
    and the work folder is removed after the index is published. A rerun that finds the index already published
    with the same fingerprint (killed just before the clean-up) only removes the work folder. ``inputs`` (the corpus
    file and model folder) identify the shards too: a changed one refuses the resume unless ``overwrite``.

    A folder at ``index_dir`` that is not a regkit index is refused before any encoding, even with ``overwrite``
    (:class:`common_regs.output_folders.ForeignFolderError`).
    """
    check_regkit_folder(index_dir, INDEX_MARKERS)
    quantization = quantization or ImpactQuantization()
    if work_dir is None:
        vectors, stats = encode_documents(model, documents, batch_size=batch_size, show_progress=show_progress)
        info = index_vectors(vectors, index_dir, quantization=quantization, threads=threads, overwrite=overwrite)
        return vectors, stats, info
    if not overwrite and Path(index_dir).exists() and not Path(work_dir).exists():  # finished: fail before encoding
        raise FileExistsError(f"output directory {index_dir} already exists; pass overwrite=True to replace it.")
    vectors, stats, fingerprint = encode_documents_resumable(
        model, documents, work_dir, shard_size=shard_size, batch_size=batch_size, show_progress=show_progress,
        inputs=inputs, overwrite=overwrite,
    )
    published = read_success_marker(index_dir)
    if not overwrite and published is not None and published.get("encoding_fingerprint") == fingerprint:
        logger.info("%s was already published by the interrupted run; removing its work folder", index_dir)
        info = _vector_info(vectors, quantization)
    else:
        info = index_vectors(vectors, index_dir, quantization=quantization, threads=threads, overwrite=overwrite,
                             metadata={"encoding_fingerprint": fingerprint})
    shutil.rmtree(work_dir, ignore_errors=True)
    return vectors, stats, info


def index_with_mixture(
    model: Any,
    documents: Mapping[str, str],
    mixture: DocumentMixture,
    index_dir: str | os.PathLike[str],
    *,
    states_dir: str | os.PathLike[str] | None = None,
    quantization: ImpactQuantization | None = None,
    threads: int = 2,
    overwrite: bool = False,
    show_progress: bool | None = None,
) -> tuple[dict[str, dict[str, float]], DocumentEncodingStats, dict[str, Any]]:
    """As :func:`index_with_model` for a model with a :class:`retrieval.document_mixture.DocumentMixture`.

    The vectors depend on the whole corpus (its average length, each document's neighbours), so they are computed
    in one go, not in resumable shards. ``states_dir`` keeps the corpus' backbone states for the next index of the
    same texts; None = a scratch folder beside ``index_dir``, removed afterwards.
    """
    check_regkit_folder(index_dir, INDEX_MARKERS)
    if not overwrite and Path(index_dir).exists():  # fail before the backbone pass
        raise FileExistsError(f"output directory {index_dir} already exists; pass overwrite=True to replace it.")
    Path(index_dir).parent.mkdir(parents=True, exist_ok=True)
    with scratch_folder("backbone-states", Path(index_dir).parent) as scratch:
        vectors, stats, idf = corpus_vectors(model, documents, mixture, states_dir or Path(scratch) / "states",
                                             show_progress=show_progress)
    info = index_vectors(vectors, index_dir, quantization=quantization or ImpactQuantization(), threads=threads,
                         overwrite=overwrite, metadata={"document_mixture": asdict(mixture)},
                         extra_files={LEXICAL_IDF_FILE: json.dumps(idf)})
    return vectors, stats, info


class InferenceFreeSearcher:
    """Inference-free search of one impact index, kept open: IDF weights of each query's wordpieces.

    An index built with a document mixture (:func:`index_with_mixture`) also gets each query's analyzed terms
    weighted by count × the IDF stored in the index (:func:`retrieval.document_mixture.lexical_query_weights`).
    The index, its IDF table and the analyzer are opened once, so a query per call costs only its own search.
    """

    def __init__(self, model: Any, index_dir: str | os.PathLike[str]) -> None:
        self.model = model
        self._idf: dict[str, float] | None = None
        idf_file = Path(index_dir) / LEXICAL_IDF_FILE
        if idf_file.is_file():
            try:
                self._idf = json.loads(idf_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{idf_file}: corrupt lexical IDF table ({err}); rebuild the index.") from None
            self._analyzer = lucene_analyzer()
        self._searcher = ImpactSearcher(index_dir)

    def search(self, queries: Mapping[str, str], *, k: int = 1000, threads: int = 1) -> dict[str, dict[str, float]]:
        """Top-``k`` ``{qid: {doc_id: score}}`` of every query (``threads`` as in :meth:`ImpactSearcher.search`)."""
        weights = query_weights(self.model, queries)
        if self._idf is not None:
            lexical = lexical_query_weights(queries, self._analyzer, self._idf)
            weights = {qid: {**weights[qid], **lexical[qid]} for qid in weights}
        return self._searcher.search(weights, k=k, threads=threads)

    def close(self) -> None:
        """Release the Lucene readers."""
        self._searcher.close()

    def __enter__(self) -> InferenceFreeSearcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def search_with_model(
    model: Any, index_dir: str | os.PathLike[str], queries: Mapping[str, str], *, k: int = 1000, threads: int = 1
) -> dict[str, dict[str, float]]:
    """One :meth:`InferenceFreeSearcher.search` of ``queries`` (opens and closes the index)."""
    with InferenceFreeSearcher(model, index_dir) as searcher:
        return searcher.search(queries, k=k, threads=threads)


def write_opensearch_bulk(
    doc_vectors: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike[str],
    *,
    index_name: str,
    field: str = "sparse_embedding",
) -> tuple[Path, Path]:
    """Write ``path`` (bulk NDJSON) and ``path.mapping.json`` (the ``rank_features`` mapping); return both paths.

    A document whose vector is empty is written as ``{}`` (no feature field), so the bulk request stays valid and
    the document is still created.
    """
    if not index_name or any(c in index_name for c in ' "*\\<|,>/?') or index_name != index_name.lower():
        raise ValueError(f"`index_name` must be a lower-case OpenSearch index name, no spaces; got {index_name!r}.")
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for doc_id, vector in doc_vectors.items():
            features = {t: float(w) for t, w in vector.items() if w > 0}
            out.write(json.dumps({"index": {"_index": index_name, "_id": str(doc_id)}}, ensure_ascii=False) + "\n")
            out.write(json.dumps({field: features} if features else {}, ensure_ascii=False) + "\n")
    mapping = {"mappings": {"properties": {field: {"type": "rank_features"}}}}
    mapping_path = atomic_write_text(path.with_name(path.name + ".mapping.json"), json.dumps(mapping, indent=2) + "\n")
    logger.info("OpenSearch bulk file for %d documents at %s (mapping: %s)", len(doc_vectors), path, mapping_path)
    return path, mapping_path
