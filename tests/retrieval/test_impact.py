"""Impact index from {docid: {token: weight}} and impact search with caller-supplied query weights.

Expectations are integer dot products computed here from the quantization rule round_half_up(scale * w),
independently of the code (which goes through Lucene).
"""

from __future__ import annotations

import math
import random

import pytest

from retrieval.impact import MAX_DOC_IMPACT, ImpactQuantization, ImpactSearcher, build_impact_index, quantize_weights
from retrieval.index import read_index_metadata
from retrieval.search import Bm25Searcher, IndexNotFoundError

pytestmark = pytest.mark.java

DOCS = {
    "d1": {"apple": 0.03, "banana": 0.05, "the": 0.01},
    "d2": {"apple": 0.07, "the": 0.02, "##ing": 0.04},
    "d3": {"cherry": 2.5, "the": 0.01, "Apple": 0.02},  # tokens are case-sensitive, kept verbatim
    "d4": {"x": 0.004},  # rounds to 0 at scale 100: not indexable
}


def _q(w: float, scale: float = 100.0) -> int:
    return math.floor(w * scale + 0.5)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    return build_impact_index(DOCS, tmp_path_factory.mktemp("impact") / "idx", threads=2, show_progress=False)


def test_metadata_records_quantization_and_skips(small_index):
    meta = read_index_metadata(small_index)
    assert meta["kind"] == "impact" and meta["documents"] == 3 and meta["skipped_empty"] == 1
    assert meta["quantization"] == {"doc_scale": 100.0, "query_scale": 100.0}


def test_scores_are_dequantized_integer_dot_products(small_index):
    query = {"apple": 0.5, "##ing": 0.25, "Apple": 1.0, "not-in-index": 3.0}
    with ImpactSearcher(small_index) as searcher:
        assert searcher.num_docs == 3
        run = searcher.search({"q": query}, k=10, show_progress=False)["q"]
    expected = {}
    for doc, vector in DOCS.items():
        s = sum(_q(w) * _q(vector[t]) for t, w in query.items() if t in vector and _q(vector[t]) > 0)
        if s:
            expected[doc] = s / (100.0 * 100.0)
    assert run.keys() == expected.keys() == {"d1", "d2", "d3"}
    for doc, value in expected.items():
        assert run[doc] == pytest.approx(value, rel=1e-6)


def test_token_in_every_document_is_not_dropped(small_index):
    # "the" occurs in all 3 indexed documents: idf = ln(3/3) = 0, which Pyserini's default min_idf=0 would drop.
    with ImpactSearcher(small_index) as searcher:
        run = searcher.search({"q": {"the": 1.0}}, k=10, show_progress=False)["q"]
    assert run == pytest.approx({"d1": 1 * 100 / 1e4, "d2": 2 * 100 / 1e4, "d3": 1 * 100 / 1e4})


def test_empty_queries_and_unknown_tokens(small_index):
    with ImpactSearcher(small_index) as searcher:
        run = searcher.search(
            {"empty": {}, "zero": {"apple": 0.001}, "unknown": {"zzz": 1.0}, "ok": {"cherry": 1.0}},
            k=10, show_progress=False,
        )
    assert run == {"empty": {}, "zero": {}, "unknown": {}, "ok": {"d3": pytest.approx(2.5)}}


def test_query_scale_override_changes_rounding_only(small_index):
    # 0.26 * 10 rounds to 3, so the de-quantized score is 3 * 5 / (10 * 100) = 0.015 (0.013 at the default 100).
    with ImpactSearcher(small_index, query_scale=10.0) as searcher:
        coarse = searcher.search({"q": {"banana": 0.26}}, k=10, show_progress=False)["q"]
    with ImpactSearcher(small_index) as searcher:
        fine = searcher.search({"q": {"banana": 0.26}}, k=10, show_progress=False)["q"]
    assert coarse == {"d1": pytest.approx(0.015)}
    assert fine == {"d1": pytest.approx(0.013)}


def test_random_collection_matches_brute_force(tmp_path):
    rng = random.Random(7)
    vocab = [f"t{i}" for i in range(40)]
    docs = {
        f"doc{i}": {t: round(rng.uniform(0.0, 3.0), 3) for t in rng.sample(vocab, rng.randint(1, 12))}
        for i in range(150)
    }
    queries = {f"q{j}": {t: round(rng.uniform(0.0, 2.0), 3) for t in rng.sample(vocab, 4)} for j in range(12)}
    quant = ImpactQuantization(doc_scale=50.0, query_scale=20.0)
    index = build_impact_index(docs, tmp_path / "rand", quantization=quant, threads=2, show_progress=False)
    with ImpactSearcher(index) as searcher:
        run = searcher.search(queries, k=5, show_progress=False, batch_size=5)
    for qid, query in queries.items():
        scores = {
            doc: sum(_q(w, 20) * _q(vec[t], 50) for t, w in query.items() if t in vec) for doc, vec in docs.items()
        }
        positive = {d: s for d, s in scores.items() if s > 0}
        top = sorted(positive.items(), key=lambda kv: -kv[1])[:5]
        assert len(run[qid]) == len(top)
        # same scores at every rank (document order may differ only inside exact ties)
        assert sorted(run[qid].values(), reverse=True) == pytest.approx([s / 1000.0 for _, s in top], rel=1e-6)
        for doc, score in run[qid].items():
            assert score == pytest.approx(scores[doc] / 1000.0, rel=1e-6)


def test_quantize_weights_rules():
    assert quantize_weights({"a": 0.005, "b": 0.0049, "c": 0.015, "d": 0.0}, 100, where="x", limit=10) == {
        "a": 1, "c": 2,
    }
    with pytest.raises(ValueError, match="document 'd9': token 'two words' must be a non-empty string"):
        build_impact_index({"d9": {"two words": 1.0}}, "/nonexistent/never")
    for token in ("", " a", "a\t", "a\u00a0b", "a\u2003"):  # empty; ASCII and Unicode whitespace anywhere
        with pytest.raises(ValueError, match="must be a non-empty string without whitespace"):
            quantize_weights({token: 1.0}, 100, where="q", limit=10)
    with pytest.raises(ValueError, match="weight of token 'a' must be finite and >= 0, got -1.0"):
        quantize_weights({"a": -1.0}, 100, where="q", limit=10)
    with pytest.raises(ValueError, match="must be finite"):
        quantize_weights({"a": float("nan")}, 100, where="q", limit=10)
    with pytest.raises(TypeError, match="must be a number, got str"):
        quantize_weights({"a": "1"}, 100, where="q", limit=10)
    with pytest.raises(ValueError, match=f"quantizes to 20000 > {MAX_DOC_IMPACT}"):
        build_impact_index({"d": {"a": 200.0}}, "/nonexistent/never")
    with pytest.raises(ValueError, match="`doc_scale` must be a finite number > 0, got 0"):
        ImpactQuantization(doc_scale=0)
    with pytest.raises(ValueError, match="every document quantizes to an empty vector"):
        build_impact_index({"d": {"a": 0.001}}, "/nonexistent/never")


def test_kind_checks(small_index, tmp_path):
    with pytest.raises(IndexNotFoundError, match="index kind 'impact'"):
        Bm25Searcher(small_index)
    with pytest.raises(IndexNotFoundError, match="index folder not found"):
        ImpactSearcher(tmp_path / "missing")
