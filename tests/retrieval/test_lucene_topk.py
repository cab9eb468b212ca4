"""One-thread search through Lucene directly equals Pyserini's batch search, ties and score adjustment included."""

from __future__ import annotations

import random

import numpy as np
import pytest

from retrieval.beir import Document
from retrieval.impact import ImpactQuantization, ImpactSearcher, build_impact_index
from retrieval.index import build_bm25_index
from retrieval.jvm import autoclass
from retrieval.lucene_topk import adjust_score_ties
from retrieval.search import Bm25Searcher

pytestmark = pytest.mark.java


def test_adjust_score_ties_as_anserini_documents_it():
    # the example of Anserini's ScoreTiesAdjusterReranker: round to 1e-4, the 2nd of a tie lowered by 1e-6
    scores = np.array([23.439316, 22.087432, 22.087432, 21.602508, 21.602508, 21.602508], dtype=np.float32)
    f32, step = np.float32, np.float32(1e-6)  # Java float arithmetic
    expected = [f32(23.4393), f32(22.0874), f32(22.0874) - step, f32(21.6025), f32(21.6025) - step,
                f32(21.6025) - step * f32(2)]
    assert adjust_score_ties(scores).tolist() == [float(x) for x in expected]
    assert adjust_score_ties(np.array([], dtype=np.float32)).size == 0


def _assert_same_run(one: dict, other: dict) -> None:
    """Equal runs: same queries, same documents in the same rank order, equal scores."""
    assert one.keys() == other.keys()
    for qid in one:
        assert list(one[qid].items()) == list(other[qid].items()), qid


def test_bm25_one_thread_equals_pyserini_batch(tmp_path):
    # duplicated texts under other ids give exactly tied scores: the order must follow the docid, as Anserini's
    texts = ["the lazy dog sleeps", "a quick brown fox and a dog", "stock markets fell", "cats and dogs and cats",
             "dogs chase cats", "markets of the lazy fox"]
    corpus = {f"d{i:02d}": Document(title="", text=texts[i % len(texts)]) for i in range(30)}
    index = build_bm25_index(corpus, tmp_path / "bm25", threads=2, show_progress=False)
    queries = {"q1": "lazy dog", "q2": "cats", "q3": "markets fox", "q4": "the of", "q5": "zyzzyva"}
    with Bm25Searcher(index) as searcher:
        direct = searcher.search(queries, k=7, threads=1, show_progress=False)
        batched = searcher.search(queries, k=7, threads=2, show_progress=False)
    _assert_same_run(direct, batched)
    assert direct["q4"] == direct["q5"] == {}
    top = list(direct["q2"].items())[:5]
    assert [doc for doc, _ in top] == ["d03", "d09", "d15", "d21", "d27"]  # one tie ("cats and dogs and cats")
    assert all(0 < a - b < 1e-5 for (_, a), (_, b) in zip(top, top[1:], strict=False))  # apart by 1e-6 steps


def test_impact_one_thread_equals_pyserini_batch(tmp_path):
    rng = random.Random(3)
    vocab = [f"t{i}" for i in range(20)] + ["é", 'q"x', "b\\s", "##ing", "bm25:stem"]  # as JSON: escapes
    # weights up to 23.1 × 4.71 per term: quantized scores past 2^24 / 1e4, where float32 rounding would go wrong
    vectors = [{t: rng.choice([0.5, 1.0, 2.0, 7.37, 23.1]) for t in rng.sample(vocab, rng.randint(1, 6))}
               for _ in range(40)]
    docs = {f"doc{i:03d}": vectors[i % 40] for i in range(120)}  # each vector three times: tied scores
    queries = {f"q{j}": {t: rng.choice([0.3, 1.0, 4.71]) for t in rng.sample(vocab, 3)} for j in range(15)}
    queries["unknown"] = {"absent": 1.0}
    index = build_impact_index(docs, tmp_path / "impact", quantization=ImpactQuantization(), threads=2,
                               show_progress=False)
    with ImpactSearcher(index) as searcher:
        for k in (1, 10, 200):
            direct = searcher.search(queries, k=k, threads=1, show_progress=False)
            batched = searcher.search(queries, k=k, threads=2, show_progress=False)
            _assert_same_run(direct, batched)
    assert direct["unknown"] == {}
    assert {token for run in queries.values() for token in run} & {"é", 'q"x', "b\\s"}  # the escapes were used
    # the query reader's Jackson declarations leave autoclass's full classes alone (Pyserini's indexer uses them)
    assert len(autoclass("com.fasterxml.jackson.databind.ObjectReader").readValue.signatures()) > 1
    assert max(len(run) for run in direct.values()) > 10  # k = 200 reached past the ties at the cut-offs 1 and 10
