"""The built-in retrievers behind ``--retriever``: ``bm25``, ``dense`` and ``sparse`` (:mod:`retrieval.retriever`).

Each one wraps regkit's existing code for that model unchanged, so its runs and metrics are the ones that code
gives: :mod:`retrieval.index` + :mod:`retrieval.search` (BM25), :mod:`retrieval.dense` (bi-encoder + FAISS) and
:mod:`retrieval.sparse_index` (inference-free learned sparse model + Lucene impact index). Heavy libraries
(sentence-transformers, Pyserini) are imported at first use, so listing the retrievers stays cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from retrieval.dense import DEFAULT_BATCH_SIZE
from retrieval.index import read_index_metadata
from retrieval.retriever import register_retriever
from retrieval.search import DEFAULT_B, DEFAULT_K1, Run

if TYPE_CHECKING:
    from retrieval.beir import Document
    from retrieval.dense import DenseRetriever

logger = logging.getLogger(__name__)

__all__ = ["Bm25Retriever", "DenseFlatRetriever", "SparseImpactRetriever"]


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")


def _documents(index_dir: Path) -> int:
    return int((read_index_metadata(index_dir) or {}).get("documents", 0))


@register_retriever("bm25")
class Bm25Retriever:
    """BM25 over a Lucene "flat" index (title + text in one field), Pyserini's BEIR regression settings.

    Args:
        k1: term-frequency saturation. Default 0.9 (source: Pyserini BEIR ``flat`` regressions).
        b: length normalisation. Default 0.4 (source: same).
        threads: indexing threads. Default 2.
        search_threads: threads of each search call. Default 1: Lucene searched directly, the fastest way on
            2 cores at every k (docs/speed.md); more go through Pyserini's batch executor (parallel Java threads, for
            large collections on many cores).
    """

    index_folder: ClassVar[str] = "index"

    def __init__(
        self, *, k1: float = DEFAULT_K1, b: float = DEFAULT_B, threads: int = 2, search_threads: int = 1
    ) -> None:
        _positive_int("threads", threads)
        _positive_int("search_threads", search_threads)
        self.k1, self.b, self.threads, self.search_threads = k1, b, threads, search_threads

    def index(self, corpus: Mapping[str, Document], index_dir: Path, *, overwrite: bool = False) -> dict[str, Any]:
        """:func:`retrieval.index.build_bm25_index`; returns the indexed document count."""
        from retrieval.index import build_bm25_index

        build_bm25_index(corpus, index_dir, threads=self.threads, overwrite=overwrite)
        return {"documents": _documents(index_dir)}

    def search(self, index_dir: Path, queries: Mapping[str, str], k: int) -> Run:
        """:class:`retrieval.search.Bm25Searcher` with ``k1``, ``b``."""
        from retrieval.search import Bm25Searcher

        with Bm25Searcher(index_dir, k1=self.k1, b=self.b) as searcher:
            return searcher.search(queries, k=k, threads=self.search_threads)


@register_retriever("dense")
class DenseFlatRetriever:
    """A sentence-transformers bi-encoder and an exact FAISS inner-product index (:mod:`retrieval.dense`).

    Args:
        model: sentence-transformers model name or folder. Default: the bundled all-MiniLM-L6-v2.
        batch_size: encoding batch size. Default 64 (throughput choice).
        device: torch device; None lets sentence-transformers choose.
    """

    index_folder: ClassVar[str] = "dense-index"

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | None = None,
    ) -> None:
        _positive_int("batch_size", batch_size)
        self.model, self.batch_size, self.device = model, batch_size, device
        self._encoder: DenseRetriever | None = None

    def _dense(self) -> DenseRetriever:
        if self._encoder is None:
            from retrieval.dense import DenseRetriever

            self._encoder = DenseRetriever(self.model, batch_size=self.batch_size, device=self.device)
        return self._encoder

    def index(self, corpus: Mapping[str, Document], index_dir: Path, *, overwrite: bool = False) -> dict[str, Any]:
        """Encode every document and save the FAISS index (with the model's name) at ``index_dir``."""
        encoder = self._dense()
        built = encoder.build_index(corpus)
        built.save(index_dir, metadata={"model": encoder.model_name}, overwrite=overwrite)
        return {"documents": len(built), "dim": built.dim}

    def search(self, index_dir: Path, queries: Mapping[str, str], k: int) -> Run:
        """Encode the queries and search the saved index; refuses an index built with another model.

        Raises:
            ValueError: the index's ``regkit-index.json`` names another model than this retriever's.
        """
        from retrieval.dense import DenseIndex

        encoder = self._dense()
        recorded = (read_index_metadata(index_dir) or {}).get("model")
        if recorded is not None and recorded != encoder.model_name:
            raise ValueError(f"{index_dir}: dense index of model {recorded!r}, searched with {encoder.model_name!r} "
                             f"(their vectors are not comparable); pass --model {recorded}.")
        return encoder.search(queries, DenseIndex.load(index_dir), k=k)


@register_retriever("sparse")
class SparseImpactRetriever:
    """An inference-free learned sparse model (:mod:`retrieval.sparse_index`).

    Documents are encoded into a Lucene impact index; queries are the IDF weights of their wordpieces.

    Args:
        model: folder written by ``regkit retrieval train`` (required).
        idf: query weights: ``model`` (the IDF stored in the model) or ``corpus`` (BM25 IDF recomputed over the
            indexed corpus, e.g. zero-shot on a new collection; searches only the index this object built).
            Default "model".
        threads: indexing threads. Default 2.
        search_threads: threads of each search call, as for ``bm25``. Default 1.
        shard_size: None encodes the corpus in memory; a number encodes it in resumable shards of that many
            documents beside the index (:mod:`retrieval.resumable_encoding`), so a killed build continues (not for a
            model with a document mixture, whose vectors depend on the whole corpus: indexed in one go, with a
            warning).
            Default None.
        corpus_file: the file the corpus was read from; with ``shard_size``, a change to it (or to ``model``)
            refuses to resume the shards on disk unless ``overwrite``. Default None.
        states_dir: for a model with a document mixture (``regkit retrieval adapt``,
            :mod:`retrieval.document_mixture`), where the corpus' backbone states are kept for the next index of
            the same texts. Default None (a scratch folder, removed after indexing).
        opensearch_bulk: also write the document vectors as OpenSearch ``_bulk`` NDJSON here (index name: the
            corpus folder's name in lower case, else the index folder's). Default None.
    """

    index_folder: ClassVar[str] = "impact-index"

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        idf: Literal["model", "corpus"] = "model",
        threads: int = 2,
        search_threads: int = 1,
        shard_size: int | None = None,
        corpus_file: str | os.PathLike[str] | None = None,
        opensearch_bulk: str | os.PathLike[str] | None = None,
        states_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not model:
            raise ValueError("`model` is required with retriever 'sparse' (a folder from `regkit retrieval train`).")
        if idf not in ("model", "corpus"):
            raise ValueError(f"`idf` must be 'model' or 'corpus', got {idf!r}.")
        _positive_int("threads", threads)
        _positive_int("search_threads", search_threads)
        if shard_size is not None:
            _positive_int("shard_size", shard_size)
        self.model, self.idf, self.threads, self.shard_size = Path(model), idf, threads, shard_size
        self.search_threads = search_threads
        self.corpus_file = Path(corpus_file) if corpus_file is not None else None
        self.opensearch_bulk = Path(opensearch_bulk) if opensearch_bulk is not None else None
        self.states_dir = Path(states_dir) if states_dir is not None else None
        self._encoder: Any = None
        self._corpus_idf = False

    def _sparse(self) -> Any:
        if self._encoder is None:
            from retrieval.encoder import load_sparse_encoder

            self._encoder = load_sparse_encoder(self.model)
        return self._encoder

    def index(self, corpus: Mapping[str, Document], index_dir: Path, *, overwrite: bool = False) -> dict[str, Any]:
        """Encode ``corpus`` (after recomputing the IDF when ``idf="corpus"``) and build the impact index."""
        from retrieval.document_mixture import DocumentMixture
        from retrieval.encoder import corpus_idf, mlm_parts, set_idf
        from retrieval.resumable_encoding import encoding_work_dir
        from retrieval.sparse_index import index_with_mixture, index_with_model, write_opensearch_bulk

        model = self._sparse()
        if self.idf == "corpus":
            set_idf(model, corpus_idf((doc.contents for doc in corpus.values()), mlm_parts(model)[0].tokenizer))
            self._corpus_idf = True
        documents = {doc_id: doc.contents for doc_id, doc in corpus.items()}
        inputs = [path for path in (self.corpus_file, self.model) if path is not None]
        mixture = DocumentMixture.load(self.model)
        if mixture is not None:
            if self.shard_size:
                logger.warning("%s has a document mixture: its vectors depend on the whole corpus, so it is indexed "
                               "in one go, not in resumable shards of %d", self.model, self.shard_size)
            vectors, stats, info = index_with_mixture(model, documents, mixture, index_dir, threads=self.threads,
                                                      overwrite=overwrite, states_dir=self.states_dir)
        else:
            # resumable shards only when asked for; otherwise the corpus is encoded in memory
            shards = {"work_dir": encoding_work_dir(index_dir), "shard_size": self.shard_size} if (
                self.shard_size) else {}
            vectors, stats, info = index_with_model(
                model, documents, index_dir, threads=self.threads, overwrite=overwrite, inputs=inputs, **shards
            )
        logger.info("sparse: %s; %s", stats.as_dict(), info)
        if self.opensearch_bulk is not None:
            name = (self.corpus_file.parent if self.corpus_file is not None else Path(index_dir)).name.lower()
            write_opensearch_bulk(vectors, self.opensearch_bulk, index_name=name)
        return {"documents": _documents(index_dir), "avg_active_terms_indexed": info["avg_active_terms_indexed"],
                "truncated_documents": stats.truncated, "empty_documents": stats.empty}

    def search(self, index_dir: Path, queries: Mapping[str, str], k: int) -> Run:
        """IDF weights of each query's wordpieces against the impact index (no neural model at query time).

        Raises:
            ValueError: ``idf="corpus"`` without a corpus indexed by this object (the IDF is computed from it).
        """
        from retrieval.sparse_index import search_with_model

        if self.idf == "corpus" and not self._corpus_idf:
            raise ValueError("`idf='corpus'` recomputes the IDF over the corpus while indexing: index and search with "
                             "the same retriever (as `regkit beir eval --idf corpus` does), or use idf='model'.")
        return search_with_model(self._sparse(), index_dir, queries, k=k, threads=self.search_threads)
