"""recsys.serving: FAISS top-k equals brute force with seen items excluded; IVF/HNSW; cold start; save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data import Vocabulary, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.models import build_model
from recsys.serving import IndexConfig, Recommender


def _service(planted, name="mf", index=None, options=None):
    users = Vocabulary.from_values("user_id", np.arange(1, planted.users.height + 3))  # 2 users without history
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    user_table = FeatureTable.build(users, [FeatureSpec("user_id", "id")])
    item_table = FeatureTable.build(items, [FeatureSpec("item_id", "id")])
    train = encode_interactions(planted.train, users, items)
    torch.manual_seed(0)
    model = build_model(name, options or {"embedding_dim": 8}, users=user_table, items=item_table, interactions=train)
    return Recommender(model, users, items, user_table, item_table, train, index), train


def _brute_force(service, train, users, k):
    with torch.no_grad():
        scores = service.model.user_embeddings(torch.from_numpy(users)) @ service.model.item_embeddings().T
    seen = torch.zeros(train.num_users, train.num_items, dtype=torch.bool)
    seen[torch.from_numpy(train.users), torch.from_numpy(train.items)] = True
    scores[seen[torch.from_numpy(users)]] = -torch.inf
    return scores.topk(k, dim=1).indices.numpy()


@pytest.mark.parametrize("name", ["mf", "lightgcn"])
def test_flat_index_equals_brute_force_excluding_seen(planted, name):
    service, train = _service(planted, name)
    users = np.arange(40)
    items, scores = service.recommend_indices(users, 10)
    np.testing.assert_array_equal(items, _brute_force(service, train, users, 10))
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    for user, row in zip(users, items, strict=True):
        assert not set(row.tolist()) & set(service.seen_of(int(user)).tolist())
    with_seen, _ = service.recommend_indices(users[:5], 10, exclude_seen=False)
    assert any(
        set(row.tolist()) & set(service.seen_of(int(u)).tolist()) for u, row in zip(users[:5], with_seen, strict=True)
    )


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_recover_most_of_the_exact_lists(planted, kind):
    exact, train = _service(planted)
    approximate, _ = _service(planted, index=IndexConfig(kind=kind, nlist=4, nprobe=2, hnsw_m=8, ef_search=64))
    users = np.arange(60)
    a, _ = exact.recommend_indices(users, 10)
    b, _ = approximate.recommend_indices(users, 10)
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a.tolist(), b.tolist(), strict=True)])
    assert overlap > 0.7


def test_cold_users_get_popularity(planted):
    service, train = _service(planted)
    cold_known, unknown = planted.users.height + 1, 10_000  # in the vocabulary without history; not in it
    lists = service.recommend([cold_known, unknown], k=5)
    counts = np.bincount(train.items, minlength=train.num_items)
    top = np.lexsort((np.arange(counts.size), -counts))[:5]
    expected = service.items.decode(top).tolist()
    assert [item for item, _ in lists[0]] == expected and [item for item, _ in lists[1]] == expected
    assert [score for _, score in lists[0]] == counts[top].astype(float).tolist()
    assert service.is_cold(np.array([0, service.users.size - 1, service.users.oov_index])).tolist() == [
        False,
        True,
        True,
    ]


def test_save_load_round_trip(planted, tmp_path):
    for name in ("mf", "lightgcn"):
        service, _ = _service(planted, name)
        raw_users = [1, 2, 3, 77]
        before = service.recommend(raw_users, k=7)
        loaded = Recommender.load(service.save(tmp_path / name))
        assert loaded.recommend(raw_users, k=7) == before
    with pytest.raises(FileExistsError):
        service.save(tmp_path / "lightgcn")
    with pytest.raises(FileNotFoundError, match="not a saved regkit recommender"):
        Recommender.load(tmp_path)


@pytest.mark.parametrize("block", [1 << 22, 7])  # one score block, and many blocks of a few users
def test_exhaustive_flat_ranking_equals_faiss_search_of_k_plus_seen(planted, monkeypatch, block):
    """A flat index is ranked by one masked matrix product; FAISS's own search (an IVF probing every list is exact)
    fetching k + the user's seen count must give the same lists, also when k exceeds the unseen items (-1 pads)."""
    import recsys.faiss_index

    monkeypatch.setattr(recsys.faiss_index, "_SCORE_BLOCK", block * planted.items.height)
    flat, train = _service(planted)
    searched, _ = _service(planted, index=IndexConfig(kind="ivf", nlist=4, nprobe=4))
    users = np.arange(train.num_users + 1)  # the two users without history and the OOV index too
    for k in (10, train.num_items):
        flat_items, flat_scores = flat.recommend_indices(users, k)
        searched_items, searched_scores = searched.recommend_indices(users, k)
        np.testing.assert_array_equal(flat_items, searched_items)
        np.testing.assert_allclose(flat_scores, searched_scores, rtol=1e-5, atol=1e-6)
    unseen = train.num_items - np.diff(flat.seen_indptr)
    assert np.array_equal((flat_items[: train.num_users] >= 0).sum(1), unseen[: train.num_users])
