"""Top-k search through Lucene's ``IndexSearcher`` itself: one round trip per query, no stored document loaded.

Pyserini's searchers (Anserini's ``SimpleSearcher`` / ``SimpleImpactSearcher``) load every hit's stored document
and wrap it in a result object before Python reads its docid and score; at k = 1000 that costs two to three times
the search itself. :class:`LuceneTopK` runs the same search on the calling thread and reads only what a run needs:

* the same query: Anserini's ``BagOfWordsQueryGenerator`` (analyzed text for BM25; ``{token: weight}`` boosts for
  impact indexes) under the similarity the caller gives (Lucene's ``BM25Similarity``, Anserini's
  ``ImpactSimilarity``);
* the same order: score, then collection docid ascending (Anserini's ``BREAK_SCORE_TIES_BY_DOCID`` sort). For
  k < 1000 Lucene first collects the top ``k + 1`` by score alone, free to skip documents that cannot enter them
  (a sorted search counts 1,000 hits before it skips any, so k = 10 cost nearly as much as k = 1000); unless the
  (k + 1)-th score ties the k-th, those k hits are the top k, and their ties are ordered by docid here. Otherwise,
  and for k ≥ 1000, Lucene sorts by score and docid itself, as Anserini searches;
* the same scores: Anserini's ``ScoreTiesAdjusterReranker``, with Java's arithmetic: each score rounded to 1e-4,
  and the n-th document of a run of tied scores lowered by n·1e-6, so any evaluation tool keeps this order;
* each hit's collection docid read once from its stored ``id`` field, then cached;
* a weighted query crosses into Java as one JSON object that Jackson (bundled in Anserini's jar) reads into a
  ``HashMap<String, Float>``, instead of two JNI calls per term (0.06 instead of 0.3 ms for a 29-term query), and
  the hits come back as one JSON string that Jackson writes, instead of a Python proxy and two JNI calls per hit
  (at k = 1000 on SciFact: 2.0 instead of 7.5 ms per BM25 query, of which 1.2 ms is Lucene's search).

``tests/retrieval/test_lucene_topk.py`` checks runs equal to Pyserini's, ties included. Searches over several
threads stay with Anserini's batch executor, which runs queries in parallel Java threads.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from retrieval.jvm import autoclass

__all__ = ["LuceneTopK", "adjust_score_ties"]

_ID_FIELD = "id"  # Anserini's Constants.ID
_CONTENTS_FIELD = "contents"  # Anserini's Constants.CONTENTS
_SORTED_SEARCH_HITS = 1000  # Lucene's IndexSearcher.TOTAL_HITS_THRESHOLD: from here a sorted search skips as well


def adjust_score_ties(scores: np.ndarray) -> np.ndarray:
    """Anserini's ``ScoreTiesAdjusterReranker`` on scores in rank order (module docstring).

    As Anserini 1.7's bytecode does it: ``(float) (Math.round((double) s * 1e4) / 1e4)``, then float32 arithmetic for
    the tie test (``previous - s > 1e-4f``) and the decrement (``s -= 1e-6f * n``).
    """
    adjusted = (np.floor(scores.astype(np.float64) * 1e4 + 0.5) / 1e4).astype(np.float32)
    duplicates = 0
    for i in range(1, adjusted.size):
        if adjusted[i - 1] - adjusted[i] > np.float32(1e-4):
            duplicates = 0
        else:
            duplicates += 1
            adjusted[i] -= np.float32(1e-6) * np.float32(duplicates)
    return adjusted


@functools.cache
def _jackson() -> tuple[Any, Any]:
    """Jackson's ``(ObjectReader, ObjectWriter)`` used here, made once per process.

    * the reader turns a JSON object into a ``HashMap<String, Float>`` (a weighted query);
    * the writer turns a ``TopDocs`` into ``{"totalHits": ..., "scoreDocs": [{"score", "doc", "shardIndex"}, ...]}``,
      statically typed so that the ``FieldDoc`` hits of a sorted search leave out their sort values.

    The three Jackson classes are declared with the one method signature used each, because pyjnius cannot choose
    among Jackson's overloads (``readerFor(Class | JavaType | TypeReference)``, ``readValue`` of a string, bytes, a
    file, ...). They are registered under other class parameters than ``autoclass`` uses, so an ``autoclass`` of the
    same Java class elsewhere (Pyserini's indexer) still gets every method.
    """
    from jnius import JavaClass, JavaMethod, MetaJavaClass, cast

    class ObjectReader(JavaClass, metaclass=MetaJavaClass, classparams=(False, False)):
        __javaclass__ = "com/fasterxml/jackson/databind/ObjectReader"
        readValue = JavaMethod("(Ljava/lang/String;)Ljava/lang/Object;")

    class ObjectWriter(JavaClass, metaclass=MetaJavaClass, classparams=(False, False)):
        __javaclass__ = "com/fasterxml/jackson/databind/ObjectWriter"
        writeValueAsString = JavaMethod("(Ljava/lang/Object;)Ljava/lang/String;")

    class ObjectMapper(JavaClass, metaclass=MetaJavaClass, classparams=(False, False)):
        __javaclass__ = "com/fasterxml/jackson/databind/ObjectMapper"
        getTypeFactory = JavaMethod("()Lcom/fasterxml/jackson/databind/type/TypeFactory;")
        readerFor = JavaMethod(
            "(Lcom/fasterxml/jackson/databind/JavaType;)Lcom/fasterxml/jackson/databind/ObjectReader;")
        writerFor = JavaMethod("(Ljava/lang/Class;)Lcom/fasterxml/jackson/databind/ObjectWriter;")
        configure = JavaMethod(
            "(Lcom/fasterxml/jackson/databind/MapperFeature;Z)Lcom/fasterxml/jackson/databind/ObjectMapper;")

    java_class = autoclass("java.lang.Class")
    mapper = ObjectMapper()
    map_type = mapper.getTypeFactory().constructMapType(
        java_class.forName("java.util.HashMap"), java_class.forName("java.lang.String"),
        java_class.forName("java.lang.Float"))
    reader = cast(ObjectReader, mapper.readerFor(cast("com.fasterxml.jackson.databind.JavaType", map_type)))
    mapper.configure(autoclass("com.fasterxml.jackson.databind.MapperFeature").USE_STATIC_TYPING, True)
    writer = cast(ObjectWriter, mapper.writerFor(java_class.forName("org.apache.lucene.search.TopDocs")))
    return reader, writer


class LuceneTopK:
    """An open Lucene index searched one query at a time (module docstring).

    Args:
        index_dir: a Lucene index folder (already checked by the caller).
        similarity: a Java ``Similarity``, e.g. ``BM25Similarity(k1, b)``.

    Java exceptions pass through; callers name the index (:func:`retrieval.jvm.translate_java_errors`).
    """

    def __init__(self, index_dir: str | os.PathLike[str], similarity: Any) -> None:
        from jnius import cast

        directory = autoclass("org.apache.lucene.store.FSDirectory").open(autoclass("java.nio.file.Paths").get(
            str(index_dir)))
        self._reader = autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
        self._searcher = autoclass("org.apache.lucene.search.IndexSearcher")(
            cast("org.apache.lucene.index.IndexReader", self._reader))
        self._searcher.setSimilarity(similarity)
        self._collector = autoclass("org.apache.lucene.search.TopScoreDocCollector")
        sort_field = autoclass("org.apache.lucene.search.SortField")
        by_docid = sort_field(_ID_FIELD, autoclass("org.apache.lucene.search.SortField$Type").STRING_VAL)
        self._sort = autoclass("org.apache.lucene.search.Sort")(sort_field.FIELD_SCORE, by_docid)
        self._generator = autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        self._stored = self._reader.storedFields()
        self._id_only = autoclass("java.util.Set").of(_ID_FIELD)
        self._weights_reader, self._hits_writer = _jackson()
        self._docids: dict[int, str] = {}  # Lucene doc number -> collection docid, valid for this reader

    @property
    def num_docs(self) -> int:
        return int(self._reader.numDocs())

    def text_query(self, analyzer: Any, text: str) -> Any:
        """The bag-of-words query of ``text`` after ``analyzer`` (a Java ``Analyzer``)."""
        return self._generator.buildQuery(_CONTENTS_FIELD, analyzer, text)

    def weighted_query(self, weights: Mapping[str, int | float]) -> Any:
        """The query ``Σ_t weight_t · [t in d]`` scored by the index similarity (tokens taken verbatim)."""
        from jnius import cast

        java_weights = cast("java.util.Map", self._weights_reader.readValue(json.dumps(weights)))
        return self._generator.buildQuery(_CONTENTS_FIELD, java_weights)

    def top_k(self, query: Any, k: int) -> dict[str, float]:
        """``{docid: score}`` of the top ``k`` documents, in rank order (module docstring)."""
        from jnius import cast

        hits: list[tuple[float, str]] | None = None
        if k < _SORTED_SEARCH_HITS:
            collector = self._collector.create(k + 1, k + 1)  # skipping allowed once k + 1 hits are in
            self._searcher.search(query, cast("org.apache.lucene.search.Collector", collector))
            found = self._hits(collector.topDocs())
            if len(found) <= k or found[k - 1][0] > found[k][0]:  # no tie across the cut-off
                hits = sorted(((score, self._docid(doc)) for score, doc in found[:k]), key=lambda h: (-h[0], h[1]))
        if hits is None:
            ranked = self._hits(self._searcher.search(query, k, self._sort, True))
            hits = [(score, self._docid(doc)) for score, doc in ranked]
        scores = adjust_score_ties(np.array([score for score, _ in hits], dtype=np.float32))
        return dict(zip([docid for _, docid in hits], scores.tolist(), strict=True))

    def _hits(self, top_docs: Any) -> list[tuple[float, int]]:
        """``(score, Lucene doc number)`` of a Java ``TopDocs`` in its order, read as one JSON string.

        Java writes each float score as its shortest round-trip decimal, so the parsed score turns back into the same
        float32 (``adjust_score_ties``) and orders and ties as the float does.
        """
        hits = json.loads(self._hits_writer.writeValueAsString(top_docs))["scoreDocs"]
        return [(hit["score"], hit["doc"]) for hit in hits]

    def _docid(self, doc: int) -> str:
        docid = self._docids.get(doc)
        if docid is None:
            docid = self._docids[doc] = self._stored.document(doc, self._id_only).get(_ID_FIELD)
        return docid

    def close(self) -> None:
        """Release the Lucene reader."""
        self._reader.close()
