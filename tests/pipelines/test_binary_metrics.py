"""One-pass binary R@K / nDCG@K (and the head / tail slices) against trec_eval on qrels and runs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from pipelines.evaluation.binary_metrics import binary_topk_metrics, mean_over_users
from pipelines.evaluation.metrics import evaluate
from pipelines.evaluation.recsys import evaluate_recommendations, head_items, qrels_from_log, rank_users
from recsys.data import Vocabulary, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.models import MatrixFactorization
from recsys.serving import Recommender

KS = (1, 5, 10)
NAMES = [f"{m}@{k}" for m in ("R", "nDCG") for k in KS]


def test_binary_metrics_equal_trec_eval_on_random_lists():
    rng = np.random.default_rng(0)
    users, depth = 40, 10
    relevant_sets = [set(rng.choice(30, size=rng.integers(1, 12), replace=False).tolist()) for _ in range(users)]
    lists = [rng.choice(30, size=rng.integers(0, depth + 1), replace=False).tolist() for _ in range(users)]
    qrels = {f"q{u}": {f"d{d}": 1 for d in rel} for u, rel in enumerate(relevant_sets)}
    run = {f"q{u}": {f"d{d}": float(depth - r) for r, d in enumerate(ranked)} for u, ranked in enumerate(lists)}
    hits = np.zeros((users, depth), dtype=bool)
    for u, ranked in enumerate(lists):
        hits[u, : len(ranked)] = [d in relevant_sets[u] for d in ranked]
    ours = binary_topk_metrics(hits, np.array([len(rel) for rel in relevant_sets]), KS)
    reference = evaluate(qrels, run, NAMES)
    for name in NAMES:
        per_user = [reference.per_query[f"q{u}"][name] for u in range(users)]
        np.testing.assert_allclose(ours[name], per_user, rtol=1e-12, atol=0)
        assert mean_over_users(ours[name]) == pytest.approx(reference.aggregate[name], rel=1e-12)


def test_binary_metrics_refuses_users_without_relevant_items():
    with pytest.raises(ValueError, match="at least one relevant"):
        binary_topk_metrics(np.zeros((2, 3), dtype=bool), np.array([1, 0]), (3,))


def _service(rng: np.random.Generator, num_users: int, num_items: int) -> tuple[Recommender, pl.DataFrame]:
    users = Vocabulary.from_values("user_id", list(range(num_users)))
    items = Vocabulary.from_values("item_id", list(range(num_items)))
    train = pl.DataFrame({"user_id": rng.integers(0, num_users, 300), "item_id": rng.integers(0, num_items, 300)})
    seen = encode_interactions(train.unique(maintain_order=True), users, items)
    torch.manual_seed(0)
    model = MatrixFactorization(num_users, num_items, embedding_dim=4)
    tables = (FeatureTable.build(users, [FeatureSpec("user_id", "id")]),
              FeatureTable.build(items, [FeatureSpec("item_id", "id")]))
    test = pl.DataFrame({"user_id": rng.integers(0, num_users + 3, 200),  # some unknown (cold) users
                         "item_id": rng.integers(0, num_items + 5, 200)})  # some items outside the catalogue
    return Recommender(model, users, items, *tables, seen), test


def test_one_pass_slices_equal_three_trec_eval_passes():
    service, test = _service(np.random.default_rng(1), num_users=25, num_items=40)
    metrics = evaluate_recommendations(service, test, ks=KS, per_user=True)
    # the former path: qrels and run dictionaries, trec_eval once overall and once per slice
    qrels = qrels_from_log(test)
    _, run = rank_users(service, test["user_id"].unique(maintain_order=True).to_numpy(), max(KS))
    overall = evaluate(qrels, run, NAMES)
    for name in NAMES:
        assert metrics[name] == pytest.approx(overall.aggregate[name], rel=1e-12)
        assert all(metrics["per_user"][user][name] == pytest.approx(value[name], rel=1e-12)
                   for user, value in overall.per_query.items())
    head = head_items(service.popularity)
    for slice_name, mask in (("head", head), ("tail", ~head)):
        slice_ids = {f"i:{raw}" for raw in service.items.decode(np.flatnonzero(mask)).tolist()}
        sliced = {user: {i: r for i, r in rels.items() if i in slice_ids} for user, rels in qrels.items()}
        sliced = {user: rels for user, rels in sliced.items() if rels}
        assert metrics[f"{slice_name}/users"] == len(sliced) > 0
        reference = evaluate(sliced, run, NAMES).aggregate
        for name in NAMES:
            assert metrics[f"{slice_name}/{name}"] == pytest.approx(reference[name], rel=1e-12)


def test_search_fetches_each_users_own_seen_count():
    """A light user's list comes from a search of k + its own seen count, not the heaviest user's."""
    service, test = _service(np.random.default_rng(2), num_users=25, num_items=40)
    sizes = []
    search = service.index.search

    class Spy:
        ntotal = service.index.ntotal

        def search(self, queries, size):
            sizes.append(size)
            return search(queries, size)

    service.index = Spy()
    items, _ = service.recommend_indices(np.arange(25), 3)
    counts = np.diff(service.seen_indptr)
    assert max(sizes) <= 2 * (3 + counts.max()) and min(sizes) < 3 + counts.max()
    for user in range(25):  # the first 3 unseen items of a full ranking
        scores = service.model.user_embeddings(torch.tensor([user])) @ service.model.item_embeddings().T
        ranked = [i for i in torch.argsort(scores[0], descending=True).tolist() if i not in service.seen_of(user)]
        assert items[user].tolist() == ranked[:3]
