"""The speed benchmark's peers compute what regkit computes, so their timings are comparable.

* the numpy full ranking gives regkit's R@K / nDCG@K to the last bit on the same embeddings;
* a raw Pyserini index (JSONL + IndexCollection) and ``LuceneSearcher.batch_search`` give regkit's BM25 run;
* the plain torch loop's BPR negatives avoid training pairs like regkit's sampler.
"""

from __future__ import annotations

import numpy as np
import planted_log
import pytest
import torch

from pipelines.bench._speed_baselines import _negatives, numpy_full_ranking


def test_numpy_full_ranking_equals_regkit_evaluation(tmp_path):
    import polars as pl

    from pipelines.evaluation.recsys import encode_test, evaluate_encoded
    from recsys.data import Vocabulary, encode_interactions
    from recsys.features import FeatureSpec, FeatureTable
    from recsys.models import MatrixFactorization
    from recsys.serving import Recommender

    planted = planted_log.make_planted_log(tmp_path)
    users = Vocabulary.from_values("user_id", planted.train["user_id"])
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    train = encode_interactions(planted.train, users, items)
    torch.manual_seed(0)
    model = MatrixFactorization(train.num_users, train.num_items, embedding_dim=8)
    tables = (FeatureTable.build(users, [FeatureSpec("user_id", "id")]),
              FeatureTable.build(items, [FeatureSpec("item_id", "id")]))
    service = Recommender(model, users, items, *tables, train)
    test = planted.test.filter(pl.col("user_id").is_in(users.ids) & pl.col("item_id").is_in(items.ids))
    encoded = encode_test(service, test)
    regkit = evaluate_encoded(service, encoded, ks=(5, 10))
    with torch.no_grad():
        user_vectors = model.user_embeddings(torch.from_numpy(encoded.user_index)).numpy()
        item_vectors = model.item_embeddings().numpy()
    row_of = {int(user): row for row, user in enumerate(encoded.user_index)}
    seen_rows = np.array([row_of.get(int(user), -1) for user in train.users])
    seen = (seen_rows[seen_rows >= 0], train.items[seen_rows >= 0])
    numpy_metrics = numpy_full_ranking(user_vectors, item_vectors, seen, (encoded.rows, encoded.pair_items), (5, 10))
    assert {name: regkit[name] for name in numpy_metrics} == numpy_metrics


def test_plain_loop_negatives_avoid_training_pairs():
    rng = np.random.default_rng(0)
    seen = np.zeros((50, 40), dtype=bool)
    seen[:, :30] = True  # each user has seen 3/4 of the items: a uniform draw collides often
    users = np.repeat(np.arange(50), 20)
    negatives = _negatives(rng, seen, users, 40)
    assert negatives.min() >= 0 and negatives.max() < 40
    assert seen[users, negatives].mean() < 0.75**6 * 2  # 5 re-draw rounds: P(still seen) = 0.75^6


@pytest.mark.java
def test_raw_pyserini_index_and_search_equal_regkit_bm25(tmp_path):
    from pipelines.bench._speed_baselines import pyserini_index, pyserini_search
    from retrieval.beir import Document
    from retrieval.index import build_bm25_index
    from retrieval.jvm import ensure_jvm
    from retrieval.search import Bm25Searcher

    corpus = {f"d{i}": Document(title="", text=text) for i, text in enumerate([
        "the lazy dog sleeps all day", "a quick brown fox jumps over the dog", "stock markets fell sharply",
        "cats and dogs and more cats", "quantum chromodynamics of the strong force", "the dog and the fox"])}
    queries = {"q1": "lazy dog", "q2": "fox jumps", "q3": "markets"}
    ensure_jvm()  # before Pyserini's import, which would start a JVM of its own choosing
    from pyserini.search.lucene import LuceneSearcher

    build_bm25_index(corpus, tmp_path / "regkit", threads=2, show_progress=False)
    pyserini_index({k: d.contents for k, d in corpus.items()}, tmp_path / "collection", tmp_path / "raw", 2)
    with Bm25Searcher(tmp_path / "regkit") as searcher:
        regkit_run = searcher.search(queries, k=10, threads=1)
        raw = LuceneSearcher(str(tmp_path / "raw"))
        raw.set_bm25(searcher.k1, searcher.b)
        raw_run = pyserini_search(raw, queries, 10, threads=1)
        raw.close()
    assert regkit_run.keys() == raw_run.keys()
    for qid in queries:
        assert regkit_run[qid].keys() == raw_run[qid].keys() and len(raw_run[qid]) > 0
        for doc_id, score in raw_run[qid].items():
            assert regkit_run[qid][doc_id] == pytest.approx(score, rel=1e-6)
