"""recsys.models: LightGCN propagation against a dense reference, two-tower torchrec vs plain EmbeddingBag, MF."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import recsys.models.base
from recsys.data import Interactions, Vocabulary, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.models import (
    MODELS,
    LightGCN,
    MatrixFactorization,
    RecBatch,
    TwoTower,
    build_model,
    model_names,
    register_model,
)
from recsys.models.lightgcn import normalized_adjacency


def _tiny() -> Interactions:
    users = np.array([0, 0, 1, 2, 2, 2])
    items = np.array([0, 1, 1, 0, 2, 3])
    return Interactions(users=users, items=items, num_users=4, num_items=5)  # user 3 and item 4 are isolated


def test_normalized_adjacency_dense_reference():
    data = _tiny()
    indices, values = normalized_adjacency(data.users, data.items, 4, 5)
    dense = torch.sparse_coo_tensor(indices, values, (9, 9)).to_dense().numpy()
    adjacency = np.zeros((9, 9))
    for u, i in zip(data.users, data.items, strict=True):
        adjacency[u, 4 + i] = adjacency[4 + i, u] = 1
    degree = adjacency.sum(1)
    inv = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0)
    np.testing.assert_allclose(dense, inv[:, None] * adjacency * inv[None, :], rtol=1e-6)


def test_lightgcn_propagation_matches_dense_power_series():
    torch.manual_seed(0)
    data = _tiny()
    model = LightGCN(4, 5, data, embedding_dim=3, num_layers=2)
    graph = model.graph().to_dense()
    e0 = torch.cat([model.user_table.weight[:4], model.item_table.weight[:5]])
    expected = (e0 + graph @ e0 + graph @ graph @ e0) / 3
    users, items = model.propagate()
    torch.testing.assert_close(torch.cat([users, items]), expected)
    out = model(
        RecBatch(
            users=torch.tensor([2]), items=torch.tensor([3]), rows=torch.tensor([0]), negatives=torch.tensor([[4]])
        )
    )
    torch.testing.assert_close(out.user[0], expected[2])
    torch.testing.assert_close(out.negatives[0, 0], expected[4 + 4])
    assert len(out.regularized) == 3  # layer-0 rows for the L2 term
    # a state dict round trip rebuilds the same graph without the interactions
    rebuilt = LightGCN(4, 5, None, embedding_dim=3, num_layers=2, graph_nnz=model.get_config()["graph_nnz"])
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.item_embeddings(), model.item_embeddings())


def test_mf_scores_and_cold_users():
    torch.manual_seed(0)
    model = MatrixFactorization(3, 4, embedding_dim=2)
    out = model(RecBatch(users=torch.tensor([1]), items=torch.tensor([2]), rows=torch.tensor([0])))
    torch.testing.assert_close(out.user, model.user_table.weight[1:2])
    cold = model.user_embeddings(torch.tensor([0, 1]), cold=torch.tensor([True, False]))
    torch.testing.assert_close(cold[0], model.user_table.weight[3])  # the OOV row
    assert model_names() == ["als", "ease", "item_knn", "lightgcn", "mf", "most_popular", "two_tower"]
    with pytest.raises(ValueError, match="`model.name` must be one of"):
        build_model("nope", {}, users=None, items=None)


def test_a_fixed_temperature_is_read_once_and_again_after_loading_weights():
    model = MatrixFactorization(3, 4, embedding_dim=2, normalize=True, temperature=0.2)
    assert model.similarity.scale() == float(torch.tensor(5.0).log().exp())  # the float32 value, as a float
    model.load_state_dict(MatrixFactorization(3, 4, embedding_dim=2, normalize=True, temperature=0.5).state_dict())
    assert model.similarity.scale() == pytest.approx(2.0)
    learnable = MatrixFactorization(3, 4, embedding_dim=2, temperature=0.5, learnable_temperature=True)
    assert isinstance(learnable.similarity.scale(), torch.Tensor) and learnable.similarity.scale().requires_grad


def test_a_new_model_is_one_decorated_class(planted, monkeypatch):
    """``@register_model`` makes a Recommender buildable by name; a second model of an existing name is refused."""
    monkeypatch.setattr("recsys.models.base.MODELS", dict(MODELS))  # the registration is undone after the test
    monkeypatch.setattr("recsys.models.MODELS", recsys.models.base.MODELS)

    @register_model
    class WideMF(MatrixFactorization):
        name = "wide_mf"

    users, items, _ = _tables(planted)
    model = build_model("wide_mf", {"embedding_dim": 3}, users=users, items=items)
    assert type(model) is WideMF and model.num_users == users.entity.size and "wide_mf" in model_names()
    with pytest.raises(ValueError, match="already registered"):
        register_model(type("OtherMF", (MatrixFactorization,), {"name": "mf"}))


def _tables(planted):
    users = Vocabulary.from_values("user_id", planted.users["user_id"])
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    user_table = FeatureTable.build(
        users, [FeatureSpec("user_id", "id"), FeatureSpec("segment", "categorical", column="segment")], planted.users
    )
    item_table = FeatureTable.build(
        items,
        [
            FeatureSpec("item_id", "id"),
            FeatureSpec("genres", "multi_categorical", column="genres"),
            FeatureSpec("year", "bucketized", column="year", num_buckets=4),
        ],
        planted.items,
    )
    return user_table, item_table, encode_interactions(planted.train, users, items)


def test_to_kjt_equals_torchrec_from_lengths(planted):
    """The KJT built with its split precomputed is the one torchrec builds from the lengths (incl. an empty bag)."""
    from torchrec import KeyedJaggedTensor

    from recsys.models.two_tower import to_kjt

    _, item_table, _ = _tables(planted)
    lookup = item_table.lookup(torch.tensor([0, 3, 1, 0]))
    values, lengths = lookup["genres"]
    lookup["genres"] = (values[int(lengths[0]):], torch.cat([lengths.new_zeros(1), lengths[1:]]))  # an empty bag
    keys = ["item_id", "genres", "year"]
    ours = to_kjt(lookup, keys)
    reference = KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=torch.cat([lookup[k][0] for k in keys]), lengths=torch.cat([lookup[k][1] for k in keys])
    )
    assert ours.keys() == reference.keys() and ours.stride() == reference.stride() == 4
    assert ours.length_per_key() == reference.length_per_key()
    assert ours.offset_per_key() == reference.offset_per_key()
    torch.testing.assert_close(ours.values(), reference.values())
    torch.testing.assert_close(ours.lengths(), reference.lengths())
    for key, jagged in reference.to_dict().items():
        torch.testing.assert_close(ours[key].values(), jagged.values())
        torch.testing.assert_close(ours[key].offsets(), jagged.offsets())


def test_two_tower_torchrec_equals_plain_embedding_bag(planted):
    user_table, item_table, train = _tables(planted)
    torch.manual_seed(0)
    torchrec_model = TwoTower(
        user_table, item_table, embedding_dim=8, tower_layers=(16, 8), embedding_backend="torchrec"
    )
    plain = TwoTower(user_table, item_table, embedding_dim=8, tower_layers=(16, 8), embedding_backend="torch")
    plain.load_state_dict(torchrec_model.state_dict())  # identical parameter names
    batch = RecBatch(
        users=torch.from_numpy(train.users[:32]),
        items=torch.from_numpy(train.items[:32]),
        rows=torch.arange(32),
        negatives=torch.from_numpy(train.items[32:96]).reshape(32, 2),
    )
    a, b = torchrec_model(torchrec_model.featurize(batch)), plain(plain.featurize(batch))
    torch.testing.assert_close(a.user, b.user)
    torch.testing.assert_close(a.item, b.item)
    torch.testing.assert_close(a.negatives, b.negatives)
    torch.testing.assert_close(a.user.norm(dim=1), torch.ones(32))
    # the genres bag is the mean of its rows: check one item by hand
    kjt = torchrec_model.item_inputs(torch.tensor([0]))
    assert kjt.keys() == ["item_id", "genres", "year"]
    genres = item_table.lookup(torch.tensor([0]))["genres"][0]
    table = torchrec_model.item_tower.embeddings.embedding_bags["item__genres"].weight
    pooled = torchrec_model.item_tower.embeddings(kjt).values()[0, 8:16]
    torch.testing.assert_close(pooled, table[genres].mean(0))
    # the embedding tables form the sparse optimizer group
    names = {name for name, _ in torchrec_model.sparse_parameters()}
    assert names == {
        f"{tower}_tower.embeddings.embedding_bags.{table}.weight"
        for tower, table in [
            ("user", "user__user_id"),
            ("user", "user__segment"),
            ("item", "item__item_id"),
            ("item", "item__genres"),
            ("item", "item__year"),
        ]
    }


def test_two_tower_cold_user_drops_the_id_bag(planted):
    user_table, item_table, _ = _tables(planted)
    torch.manual_seed(0)
    model = TwoTower(user_table, item_table, embedding_dim=4, tower_layers=(3,))
    assert model.has_user_features
    users = torch.tensor([0, 1])
    cold = model.user_embeddings(users, cold=torch.tensor([True, False]))
    weights = model.user_tower.embeddings.embedding_bags
    segment = user_table.lookup(users)["segment"][0]
    expected_cold = torch.cat([torch.zeros(4), weights["user__segment"].weight[segment[0]]])
    expected_cold = model.user_tower.mlp(expected_cold)
    torch.testing.assert_close(cold[0], torch.nn.functional.normalize(expected_cold, dim=0))
    torch.testing.assert_close(cold[1], model.user_embeddings(users[1:])[0])
