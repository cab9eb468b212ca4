"""Large-catalogue index options of recsys.serving: IVF-PQ, HNSW efConstruction, and partitioned seen items."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from recsys.data import Interactions
from recsys.serving import IndexConfig, build_faiss_index


def _clustered(n: int, dim: int, *, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]))


def test_ivfpq_is_a_product_quantized_ivf_index_whose_fine_codes_recover_exact_neighbours() -> None:
    vectors, queries = _clustered(3000, 16), _clustered(50, 16, seed=1)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]  # brute force, independent of FAISS
    coarse = build_faiss_index(vectors, IndexConfig(kind="ivfpq", nlist=16, nprobe=16, pq_m=4, pq_nbits=8))
    assert isinstance(coarse, faiss.IndexIVFPQ)
    assert coarse.metric_type == faiss.METRIC_INNER_PRODUCT and coarse.ntotal == 3000
    assert coarse.code_size == 4 and coarse.pq.M == 4 and coarse.pq.nbits == 8  # 4 bytes per vector vs 64 flat
    # one 8-bit code per dimension (pq_m = D) quantizes each coordinate to 256 levels: close to exact search
    fine = build_faiss_index(vectors, IndexConfig(kind="ivfpq", nlist=16, nprobe=16, pq_m=16, pq_nbits=8))
    assert _recall(fine.search(queries, 10)[1], exact) >= 0.9
    assert _recall(coarse.search(queries, 10)[1], exact) < _recall(fine.search(queries, 10)[1], exact)
    one_cell = build_faiss_index(vectors, IndexConfig(kind="ivfpq", nlist=16, nprobe=1, pq_m=16))
    assert one_cell.nprobe == 1
    assert _recall(one_cell.search(queries, 10)[1], exact) <= _recall(fine.search(queries, 10)[1], exact)


def test_refine_factor_reranks_ivfpq_candidates_by_exact_inner_product() -> None:
    vectors, queries = _clustered(3000, 16), _clustered(50, 16, seed=2)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    config = {"kind": "ivfpq", "nlist": 16, "nprobe": 16, "pq_m": 2, "pq_nbits": 6}
    plain = build_faiss_index(vectors, IndexConfig(**config))
    refined = build_faiss_index(vectors, IndexConfig(**config, refine_factor=10))
    assert isinstance(refined, faiss.IndexRefineFlat) and refined.k_factor == 10 and refined.ntotal == 3000
    assert faiss.extract_index_ivf(refined).nprobe == 16
    scores, ids = refined.search(queries, 10)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, ids, axis=1), rtol=1e-5, atol=1e-5)
    assert _recall(ids, exact) > _recall(plain.search(queries, 10)[1], exact)
    with pytest.raises(ValueError, match=r"only used with kind 'ivfpq'; got 4 with kind 'hnsw'"):
        IndexConfig(kind="hnsw", refine_factor=4)


def test_ivfpq_and_hnsw_options_are_validated_and_applied() -> None:
    vectors = _clustered(600, 12)
    with pytest.raises(ValueError, match=r"`index.pq_m` must divide the embedding dimension 12, got 5"):
        build_faiss_index(vectors, IndexConfig(kind="ivfpq", pq_m=5))
    with pytest.raises(ValueError, match=r"`index.pq_nbits`=10 needs at least 1024 vectors"):
        build_faiss_index(vectors, IndexConfig(kind="ivfpq", pq_m=4, pq_nbits=10))
    with pytest.raises(ValueError, match=r"`index.pq_nbits` must be in \[1, 16\], got 0"):
        IndexConfig(kind="ivfpq", pq_nbits=0)
    with pytest.raises(ValueError, match=r"`index.ef_construction` must be >= 1, got 0"):
        IndexConfig(kind="hnsw", ef_construction=0)
    with pytest.raises(ValueError, match=r"'flat', 'ivf', 'ivfpq' or 'hnsw', got 'pq'"):
        IndexConfig(kind="pq")  # type: ignore[arg-type]
    hnsw = build_faiss_index(vectors, IndexConfig(kind="hnsw", hnsw_m=8, ef_construction=24, ef_search=50))
    assert hnsw.hnsw.efConstruction == 24 and hnsw.hnsw.efSearch == 50


def test_with_seen_swaps_the_excluded_items_and_keeps_the_index(planted) -> None:
    from recsys.data import Vocabulary, encode_interactions
    from recsys.features import FeatureSpec, FeatureTable
    from recsys.models import build_model
    from recsys.serving import Recommender

    users = Vocabulary.from_values("user_id", planted.users["user_id"])
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    user_table = FeatureTable.build(users, [FeatureSpec("user_id", "id")])
    item_table = FeatureTable.build(items, [FeatureSpec("item_id", "id")])
    train = encode_interactions(planted.train, users, items)
    model = build_model("mf", {"embedding_dim": 8}, users=user_table, items=item_table)
    service = Recommender(model, users, items, user_table, item_table, train)
    mine = train.users < 10
    part = Interactions(users=train.users[mine], items=train.items[mine], num_users=users.size, num_items=items.size)
    view = service.with_seen(part, popularity=np.arange(items.size))
    assert view.index is service.index and view.model is service.model
    for user in range(users.size):
        np.testing.assert_array_equal(view.seen_of(user), service.seen_of(user) if user < 10 else [])
    np.testing.assert_array_equal(view.popularity, np.arange(items.size))
    top, _ = view.recommend_indices(np.arange(10), 5)
    full, _ = service.recommend_indices(np.arange(10), 5)
    np.testing.assert_array_equal(top, full)  # same users, same seen items: same lists
    with pytest.raises(ValueError, match=r"`popularity` must have shape"):
        service.with_seen(part, popularity=np.ones(3))
