"""BM25 index + batch search on a small corpus: sharded indexing, query edge cases, bad index folders."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from retrieval.beir import Document
from retrieval.index import INDEX_METADATA_FILE, IndexBuildError, build_bm25_index, read_index_metadata
from retrieval.search import Bm25Searcher, IndexNotFoundError

pytestmark = pytest.mark.java

CORPUS = {
    "d1": Document(title="Lazy dogs", text="the lazy dog sleeps all day"),
    "d2": Document(title="", text="a quick brown fox jumps over the dog"),
    "d3": Document(title="Markets", text="stock markets fell sharply today as traders sold"),
    "d4": Document(title="", text="   "),  # blank: Anserini cannot index it
    "d5": Document(title="Cats", text="cats and dogs and more cats"),
    "d6": Document(title="", text="quantum chromodynamics of the strong force"),
}


@pytest.fixture(scope="module")
def index_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bm25")
    one = build_bm25_index(CORPUS, root / "one", threads=1, show_progress=False)
    three = build_bm25_index(CORPUS, root / "three", threads=3, show_progress=False)
    return one, three


def test_blank_document_skipped_and_metadata_written(index_dirs):
    one, three = index_dirs
    assert sorted(p.name for p in three.iterdir() if p.name.startswith("segments_"))
    for folder in (one, three):
        meta = read_index_metadata(folder)
        assert meta["kind"] == "bm25" and meta["documents"] == 5 and meta["skipped_blank"] == 1
    with Bm25Searcher(one) as searcher:
        assert searcher.num_docs == 5


def test_sharded_index_searches_like_single_file(index_dirs):
    one, three = index_dirs
    queries = {"q1": "lazy dog", "q2": "stock markets", "q3": "cats dogs"}
    with Bm25Searcher(one) as a, Bm25Searcher(three) as b:
        run_a = a.search(queries, k=10, show_progress=False)
        run_b = b.search(queries, k=10, show_progress=False)
    assert run_a.keys() == run_b.keys() == queries.keys()
    for qid in queries:
        assert run_a[qid].keys() == run_b[qid].keys()
        for doc, score in run_a[qid].items():
            assert run_b[qid][doc] == pytest.approx(score, abs=1e-4)
    # the title is indexed with the text ("flat"): only d1 has "lazy"; d1, d2, d5 mention dog(s)
    assert set(run_a["q1"]) == {"d1", "d2", "d5"} and max(run_a["q1"], key=run_a["q1"].get) == "d1"


def test_two_term_score_by_hand(index_dirs):
    one, _ = index_dirs
    # Lucene BM25 with k1=0.9, b=0.4 over analyzed lengths (English stopwords dropped, Porter stems):
    # d1 "lazi dog lazi dog sleep all dai" = 7, d2 "quick brown fox jump over dog" = 6,
    # d3 "market stock market fell sharpli todai trader sold" = 8, d5 "cat cat dog more cat" = 5,
    # d6 "quantum chromodynam strong forc" = 4.
    lengths = {"d1": 7, "d2": 6, "d3": 8, "d5": 5, "d6": 4}
    avgdl = sum(lengths.values()) / 5
    k1, b = 0.9, 0.4

    def term(tf: int, df: int, dl: int) -> float:
        idf = math.log(1 + (5 - df + 0.5) / (df + 0.5))
        return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))

    with Bm25Searcher(one, k1=k1, b=b) as searcher:
        run = searcher.search({"q": "markets cats"}, k=10, show_progress=False)["q"]
    assert run["d3"] == pytest.approx(term(2, 1, 8), abs=2e-4)  # "Markets" title + "markets" text
    assert run["d5"] == pytest.approx(term(3, 1, 5), abs=2e-4)  # "Cats" title + "cats" twice


def test_empty_and_stopword_queries_return_empty(index_dirs):
    one, _ = index_dirs
    with Bm25Searcher(one) as searcher:
        run = searcher.search({"e": "", "w": "   \t", "s": "the of and a", "n": "zyzzyva", "ok": "fox"},
                              k=5, show_progress=False)
    assert run == {"e": {}, "w": {}, "s": {}, "n": {}, "ok": {"d2": pytest.approx(run["ok"]["d2"])}}
    with Bm25Searcher(one) as searcher:
        with pytest.raises(TypeError, match="query 'x': text must be a string"):
            searcher.search({"x": None}, show_progress=False)
        with pytest.raises(ValueError, match="`k` must be an integer >= 1, got 0"):
            searcher.search({"x": "fox"}, k=0)


def _has_java_trace(message: str) -> bool:
    return "\tat " in message or "at org.apache" in message or "\n" in message


def test_corrupt_index_is_one_clear_line(index_dirs, tmp_path):
    one, _ = index_dirs
    broken = tmp_path / "broken"
    shutil.copytree(one, broken)
    for segment in broken.glob("segments_*"):
        segment.write_bytes(b"not a lucene commit")
    with pytest.raises(IndexNotFoundError) as info:
        Bm25Searcher(broken)
    assert str(broken) in str(info.value) and "cannot open Lucene index" in str(info.value)
    assert not _has_java_trace(str(info.value))

    truncated = tmp_path / "truncated"
    shutil.copytree(one, truncated)
    for part in truncated.iterdir():
        if part.suffix in {".cfs", ".si"}:
            part.write_bytes(part.read_bytes()[:10])
    with pytest.raises(IndexNotFoundError) as info:
        Bm25Searcher(truncated)
    assert not _has_java_trace(str(info.value))


def test_wrong_kind_and_bad_params(index_dirs, tmp_path):
    one, _ = index_dirs
    relabeled = tmp_path / "relabeled"
    shutil.copytree(one, relabeled)
    meta = json.loads((relabeled / INDEX_METADATA_FILE).read_text())
    (relabeled / INDEX_METADATA_FILE).write_text(json.dumps({**meta, "kind": "impact"}))
    with pytest.raises(IndexNotFoundError, match="index kind 'impact' .* but a 'bm25' index is needed"):
        Bm25Searcher(relabeled)
    (relabeled / INDEX_METADATA_FILE).write_text("{not json")
    with pytest.raises(IndexBuildError, match="corrupt index metadata"):
        Bm25Searcher(relabeled)
    with pytest.raises(ValueError, match="`b` must be in \\[0, 1\\], got 1.5"):
        Bm25Searcher(one, b=1.5)
    with pytest.raises(FileExistsError, match="already exists"):
        build_bm25_index(CORPUS, one, show_progress=False)
    with pytest.raises(ValueError, match="`corpus` is empty"):
        build_bm25_index({}, tmp_path / "none")
