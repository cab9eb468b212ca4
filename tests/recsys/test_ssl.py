"""recsys.ssl / recsys.feature_mi: MI against hand-computed tables, complementary RFM/CFM views, multi-valued
dropout, the InfoNCE against a hand computation and its minimum at coinciding views, and the trainer hooks."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import polars as pl
import pytest
import torch
from planted_log import CrashAt

from common_regs.api import TrainContext
from recsys.data import InMemoryBatches, Vocabulary, encode_interactions
from recsys.feature_mi import (
    MIMatrix,
    bag_mutual_information,
    cached_mutual_information_matrix,
    mutual_information_from_joint,
    mutual_information_matrix,
    top_partners,
)
from recsys.features import FeatureSpec, FeatureTable
from recsys.models import build_model
from recsys.models.base import RecBatch
from recsys.ssl import (
    CorrelatedFeatureMasking,
    ItemSSLLoss,
    RandomFeatureMasking,
    SSLConfig,
    build_ssl_hooks,
    drop_values,
    masked_count,
    ssl_info_nce,
)
from recsys.trainer import TrainConfig, Trainer

log = math.log


# -- mutual information ------------------------------------------------------------------------------------------


def test_mi_of_contingency_tables_with_zero_cells_matches_hand_computation() -> None:
    # B determines A: MI = H(A) = log 2 (cells (a0,b1), (a1,b0), (a1,b2) are empty)
    assert mutual_information_from_joint(np.array([[2, 0, 2], [0, 4, 0]])) == pytest.approx(log(2), abs=1e-12)
    # independent: MI = 0
    assert mutual_information_from_joint(np.array([[1, 2], [2, 4]])) == pytest.approx(0.0, abs=1e-12)
    # total 7; P(a) = (4/7, 3/7), P(b) = (3/7, 2/7, 2/7); two zero cells contribute 0
    expected = 3 / 7 * log(7 / 4) + 1 / 7 * log(7 / 8) + 1 / 7 * log(7 / 6) + 2 / 7 * log(7 / 3)
    table = np.array([[3, 1, 0], [0, 1, 2]])
    assert mutual_information_from_joint(table) == pytest.approx(expected, abs=1e-12)
    # the same table as 7 single-valued entities gives the same number
    a = np.repeat([0, 0, 1, 1], [3, 1, 1, 2])
    b = np.repeat([0, 1, 1, 2], [3, 1, 1, 2])
    ones = np.ones(7, dtype=np.int64)
    assert bag_mutual_information((a, ones), (b, ones)) == pytest.approx(expected, abs=1e-12)


def test_mi_rejects_bad_tables() -> None:
    with pytest.raises(ValueError, match="no mass"):
        mutual_information_from_joint(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        mutual_information_from_joint(np.array([[1.0, -1.0]]))
    with pytest.raises(ValueError, match="same entities"):
        bag_mutual_information((np.array([0]), np.array([1])), (np.array([0, 1]), np.array([1, 1])))


def _multi_valued_table() -> FeatureTable:
    frame = pl.DataFrame({"item_id": [1, 2, 3], "genres": [["x", "y"], ["x"], ["z"]], "decade": ["d0", "d1", "d1"]})
    specs = [
        FeatureSpec("item_id", "id"),
        FeatureSpec("genres", "multi_categorical", "genres"),
        FeatureSpec("decade", "categorical", "decade"),
    ]
    return FeatureTable.build(Vocabulary.from_values("item_id", frame["item_id"]), specs, frame)


def test_mi_matrix_handles_multi_valued_features_by_hand() -> None:
    mi = mutual_information_matrix(_multi_valued_table())
    index = {name: i for i, name in enumerate(mi.features)}
    # items: {x,y}/d0, {x}/d1, {z}/d1; item 1 splits its mass over x and y:
    # P(x,d0) = P(y,d0) = 1/6, P(x,d1) = P(z,d1) = 1/3; P(x,y,z) = (1/2, 1/6, 1/3), P(d0, d1) = (1/3, 2/3)
    expected = 1 / 6 * log(1) + 1 / 6 * log(3) + 1 / 3 * log(1) + 1 / 3 * log(3 / 2)
    assert mi.values[index["genres"], index["decade"]] == pytest.approx(expected, abs=1e-12)
    entropy_decade = -(1 / 3 * log(1 / 3) + 2 / 3 * log(2 / 3))
    assert mi.values[index["decade"], index["decade"]] == pytest.approx(entropy_decade, abs=1e-12)
    assert mi.values[index["item_id"], index["decade"]] == pytest.approx(entropy_decade, abs=1e-12)  # id determines
    assert mi.values[index["item_id"], index["item_id"]] == pytest.approx(log(3), abs=1e-12)
    np.testing.assert_allclose(mi.values, mi.values.T)
    # weights = training counts (interaction weighting); item 3 unseen drops out:
    # P(x,d0) = P(y,d0) = 1/4, P(x,d1) = 1/2; P(x) = 3/4, P(y) = 1/4, P(d0) = P(d1) = 1/2
    weighted = mutual_information_matrix(_multi_valued_table(), weights=np.array([1.0, 1.0, 0.0]))
    expected = 1 / 4 * log(2 / 3) + 1 / 4 * log(2) + 1 / 2 * log(4 / 3)
    assert weighted.values[index["genres"], index["decade"]] == pytest.approx(expected, abs=1e-12)
    assert weighted.weighting == "custom"


def test_mi_matrix_is_cached_by_content(tmp_path) -> None:
    table = _multi_valued_table()
    first = cached_mutual_information_matrix(table, tmp_path)
    files = list(tmp_path.glob("mi_*.npz"))
    assert len(files) == 1
    second = cached_mutual_information_matrix(table, tmp_path)
    np.testing.assert_array_equal(first.values, second.values)
    assert second.fingerprint == first.fingerprint and list(tmp_path.glob("mi_*.npz")) == files
    weighted = cached_mutual_information_matrix(table, tmp_path, weights=np.array([1.0, 1.0, 0.0]))
    assert weighted.fingerprint != first.fingerprint and len(list(tmp_path.glob("mi_*.npz"))) == 2


def test_top_partners_is_deterministic_with_ties_by_index() -> None:
    mi = np.array([[9, 1, 3, 3], [1, 9, 2, 0], [3, 2, 9, 5], [3, 0, 5, 9]], dtype=float)
    assert top_partners(mi, 0, 3) == [2, 3, 1]
    assert top_partners(mi, 3, 2) == [2, 0]
    with pytest.raises(ValueError, match="`count`"):
        top_partners(mi, 0, 4)


# -- augmentation ------------------------------------------------------------------------------------------------


def _five_feature_table() -> FeatureTable:
    rng = np.random.default_rng(0)
    n = 40
    frame = pl.DataFrame(
        {
            "item_id": np.arange(n),
            "a": [f"a{v}" for v in rng.integers(0, 4, n)],
            "b": [f"b{v}" for v in rng.integers(0, 3, n)],
            "tags": [[f"t{v}" for v in rng.choice(6, int(rng.integers(1, 4)), replace=False)] for _ in range(n)],
            "year": rng.integers(1950, 2000, n),
        }
    )
    specs = [
        FeatureSpec("item_id", "id"),
        FeatureSpec("a", "categorical", "a"),
        FeatureSpec("b", "categorical", "b"),
        FeatureSpec("tags", "multi_categorical", "tags"),
        FeatureSpec("year", "bucketized", "year", num_buckets=4),
    ]
    return FeatureTable.build(Vocabulary.from_values("item_id", frame["item_id"]), specs, frame)


def _check_views(table: FeatureTable, views, count: int) -> None:
    keys = set(table.keys)
    assert set(views.masked_a).isdisjoint(views.masked_b) and set(views.masked_a) | set(views.masked_b) == keys
    assert len(views.masked_a) == count
    original = table.lookup(views.items)
    for view, masked in ((views.view_a, views.masked_a), (views.view_b, views.masked_b)):
        for name in keys:
            values, lengths = view[name]
            default = table.features[name].default_index
            if name in masked:
                assert torch.equal(lengths, torch.ones_like(lengths)) and bool((values == default).all())
            elif table.features[name].spec.kind != "multi_categorical":
                assert torch.equal(values, original[name][0]) and torch.equal(lengths, original[name][1])


def test_rfm_views_are_complementary_and_cover_every_pattern() -> None:
    table = _five_feature_table()
    masking = RandomFeatureMasking(table, dropout=0.3, seed=1)
    count = masked_count(5, 0.5)
    assert count == 3
    seen = set()
    for _ in range(200):
        views = masking(
            RecBatch(
                users=torch.zeros(8, dtype=torch.long), items=torch.zeros(8, dtype=torch.long), rows=torch.arange(8)
            )
        ).extras["ssl"]
        _check_views(table, views, count)
        seen.add(views.masked_a)
    assert len(seen) == math.comb(5, 3)  # every 3-subset is drawn


def test_cfm_masks_the_seed_and_its_top_mi_partners() -> None:
    table = _five_feature_table()
    keys = table.keys  # item_id, a, b, tags, year
    values = np.array(
        [
            [9.0, 0.1, 0.2, 0.3, 0.4],
            [0.1, 9.0, 0.8, 0.5, 0.0],
            [0.2, 0.8, 9.0, 0.1, 0.6],
            [0.3, 0.5, 0.1, 9.0, 0.7],
            [0.4, 0.0, 0.6, 0.7, 9.0],
        ]
    )
    mi = MIMatrix(tuple(keys), values, "custom", "")
    # m = 3: seed + 2 highest-MI partners, read off the rows by hand
    expected = {
        "item_id": {"item_id", "year", "tags"},
        "a": {"a", "b", "tags"},
        "b": {"b", "a", "year"},
        "tags": {"tags", "year", "a"},
        "year": {"year", "tags", "b"},
    }
    masking = CorrelatedFeatureMasking(table, mi, dropout=0.2, seed=3)
    seeds = []
    for _ in range(100):
        views = masking.views(torch.arange(10), torch.Generator().manual_seed(len(seeds)))
        _check_views(table, views, 3)
        assert set(views.masked_a) == expected[views.seed_feature]
        seeds.append(views.seed_feature)
    assert set(seeds) == set(keys)  # the seed is drawn from every feature
    with pytest.raises(ValueError, match="MI matrix covers"):
        CorrelatedFeatureMasking(table, MIMatrix(tuple(reversed(keys)), values, "custom", ""))


def test_cfm_with_the_id_excluded_groups_the_other_features_by_hand() -> None:
    table = _five_feature_table()
    keys = table.keys  # item_id, a, b, tags, year
    values = np.array(  # the id is every feature's top partner, as with data-computed MI
        [
            [9.0, 2.0, 2.0, 2.0, 2.0],
            [2.0, 9.0, 0.8, 0.5, 0.0],
            [2.0, 0.8, 9.0, 0.1, 0.6],
            [2.0, 0.5, 0.1, 9.0, 0.7],
            [2.0, 0.0, 0.6, 0.7, 9.0],
        ]
    )
    mi = MIMatrix(tuple(keys), values, "custom", "")
    # k' = 4 grouped features, m = 2: the seed + its top partner among a, b, tags, year (rows read by hand)
    expected = {"a": {"a", "b"}, "b": {"b", "a"}, "tags": {"tags", "year"}, "year": {"year", "tags"}}
    masking = CorrelatedFeatureMasking(table, mi, seed=3, exclude=["item_id"])
    assert masking.count == 2 and masking.get_config_dict()["exclude"] == ["item_id"]
    seeds = set()
    for call in range(100):
        views = masking.views(torch.arange(10), torch.Generator().manual_seed(call))
        _check_views(table, views, 2)
        assert set(views.masked_a) == expected[views.seed_feature]
        assert "item_id" in views.masked_b  # kept in view A, masked in view B
        seeds.add(views.seed_feature)
    assert seeds == {"a", "b", "tags", "year"}
    # without the exclusion the id joins every group (the raw-MI behaviour the option removes)
    raw = CorrelatedFeatureMasking(table, mi, seed=3)
    assert all("item_id" in raw.views(torch.arange(4), torch.Generator().manual_seed(c)).masked_a for c in range(20))
    with pytest.raises(ValueError, match="not item features"):
        CorrelatedFeatureMasking(table, mi, exclude=["title"])
    with pytest.raises(ValueError, match="CFM needs >= 2"):
        CorrelatedFeatureMasking(table, mi, exclude=["item_id", "a", "b", "tags"])


def test_ssl_config_cfm_exclude_id_reaches_the_masking_hook() -> None:
    table = _five_feature_table()
    transform, _ = build_ssl_hooks(SSLConfig(mode="cfm", cfm_exclude_id=True), table)
    assert transform.exclude == ("item_id",) and transform.count == 2
    assert build_ssl_hooks(SSLConfig(mode="cfm"), table)[0].exclude == ()
    with pytest.raises(ValueError, match="cfm_exclude_id"):
        SSLConfig(mode="rfm", cfm_exclude_id=True)


def test_cfm_on_data_mi_never_separates_a_feature_from_its_top_partner() -> None:
    table = _five_feature_table()
    mi = mutual_information_matrix(table)
    masking = CorrelatedFeatureMasking(table, mi, seed=0)
    for call in range(30):
        views = masking.views(torch.arange(5), torch.Generator().manual_seed(call))
        seed = views.seed_feature
        partner = table.keys[top_partners(mi.values, table.keys.index(seed), 1)[0]]
        assert {seed, partner} <= set(views.masked_a)


def test_multi_valued_dropout_rate_order_and_empty_bags() -> None:
    lengths = torch.full((4000,), 3)
    values = torch.arange(12000)
    out_values, out_lengths = drop_values(values, lengths, 0.3, default=-1, generator=torch.Generator().manual_seed(0))
    kept = out_values[out_values >= 0]
    # 12000 Bernoulli(0.7) keeps: mean 8400, sd ~50
    assert abs(kept.numel() - 8400) < 5 * math.sqrt(12000 * 0.3 * 0.7)
    assert int(out_lengths.sum()) == out_values.numel() and bool((out_lengths >= 1).all())
    starts = torch.cumsum(out_lengths, 0) - out_lengths
    for row in (0, 1, 2, 3999):
        bag = out_values[starts[row] : starts[row] + out_lengths[row]]
        if bool((bag == -1).any()):
            assert bag.tolist() == [-1]  # every value dropped → the default row alone
        else:
            assert bag.tolist() == sorted(bag.tolist()) and set(bag.tolist()) <= set(range(3 * row, 3 * row + 3))
    empty = int((out_values == -1).sum())
    assert abs(empty - 4000 * 0.3**3) < 5 * math.sqrt(4000 * 0.027)
    same = drop_values(values, lengths, 0.0, default=-1)
    assert torch.equal(same[0], values) and torch.equal(same[1], lengths)
    with pytest.raises(ValueError, match="`dropout`"):
        drop_values(values, lengths, 1.0, default=-1)


def test_ssl_items_are_uniform_distinct_and_a_separate_batch() -> None:
    table = _five_feature_table()  # 40 items
    masking = RandomFeatureMasking(table, seed=0)
    main_items = torch.zeros(16, dtype=torch.long)  # the main batch only holds item 0
    counts = np.zeros(40)
    for _ in range(500):
        batch = masking(RecBatch(users=torch.zeros(16, dtype=torch.long), items=main_items, rows=torch.arange(16)))
        items = batch.extras["ssl"].items
        assert items.numel() == 16 and items.unique().numel() == 16 and torch.equal(batch.items, main_items)
        counts[items.numpy()] += 1
    # uniform over the catalogue: every item expected 200 times; chi-square with 39 dof, p < 1e-6 above 90
    chi2 = float(((counts - 200.0) ** 2 / 200.0).sum())
    assert chi2 < 90.0
    assert masking.state_dict() == {"calls": 500}


def test_bad_arguments_name_the_parameter() -> None:
    table = _five_feature_table()
    with pytest.raises(ValueError, match="`mask_ratio`"):
        RandomFeatureMasking(table, mask_ratio=1.0)
    with pytest.raises(ValueError, match="at least 2 item features"):
        masked_count(1, 0.5)
    with pytest.raises(TypeError, match="`mi`"):
        CorrelatedFeatureMasking(table, np.eye(5))
    with pytest.raises(ValueError, match="`temperature`"):
        ItemSSLLoss(temperature=0.0)
    with pytest.raises(ValueError, match="`ssl.mode`"):
        SSLConfig(mode="simclr")
    assert build_ssl_hooks(SSLConfig(), table) == []


# -- the contrastive loss ----------------------------------------------------------------------------------------


def test_info_nce_matches_a_hand_computed_three_item_batch() -> None:
    z = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    z_prime = torch.tensor([[4.0, 3.0], [-1.0, 1.0], [0.0, 5.0]])
    tau = 0.5
    # cosines by hand: rows (3,4)/5, (1,0), (0,1); columns (4,3)/5, (-1,1)/√2, (0,1)
    r2 = math.sqrt(2)
    cos = [[24 / 25, 1 / (5 * r2), 4 / 5], [4 / 5, -1 / r2, 0.0], [3 / 5, 1 / r2, 1.0]]
    expected = -sum(cos[i][i] / tau - log(sum(math.exp(c / tau) for c in cos[i])) for i in range(3)) / 3
    assert float(ssl_info_nce(z, z_prime, tau)) == pytest.approx(expected, abs=1e-6)
    # a duplicated item: its other column leaves the row's denominator
    ids = torch.tensor([7, 8, 7])
    dup = (
        -sum(
            cos[i][i] / tau - log(sum(math.exp(c / tau) for j, c in enumerate(cos[i]) if j == i or ids[j] != ids[i]))
            for i in range(3)
        )
        / 3
    )
    assert float(ssl_info_nce(z, z_prime, tau, item_ids=ids)) == pytest.approx(dup, abs=1e-6)


def _bound(n: int, tau: float) -> float:
    """min InfoNCE over unit vectors: log(1 + (n−1)·exp(−n/((n−1)τ))).

    loss_i = log(1 + Σ_{j≠i} exp((s_ij − s_ii)/τ)) ≥ f(mean_{j≠i}(s_ij − s_ii)/τ) (Jensen), f(x) = log(1+(n−1)e^x)
    convex increasing; Σ_{i,j} s_ij − n Σ_i s_ii = −½ Σ_{i,j} ⟨z_i − z_j, z'_i − z'_j⟩ ≥ −n² (Cauchy-Schwarz), with
    equality iff z' = z, centred, all off-diagonal similarities equal: coinciding views on a regular simplex.
    """
    return log(1 + (n - 1) * math.exp(-n / ((n - 1) * tau)))


def test_info_nce_is_minimised_when_the_views_coincide() -> None:
    tau, n = 0.5, 3
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    simplex = torch.stack([angles.cos(), angles.sin()], dim=1)
    assert float(ssl_info_nce(simplex, simplex, tau)) == pytest.approx(_bound(n, tau), abs=1e-6)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        a, b = torch.randn(n, 2, generator=generator), torch.randn(n, 2, generator=generator)
        assert float(ssl_info_nce(a, b, tau)) >= _bound(n, tau) - 1e-6
        assert float(ssl_info_nce(a, b, tau)) > float(ssl_info_nce(simplex, simplex, tau))
    for degrees in (5, 30, 90):
        turn = math.radians(degrees)
        rotation = torch.tensor([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
        assert float(ssl_info_nce(simplex, simplex @ rotation.T, tau)) > _bound(n, tau) + 1e-4
    # with the anchors fixed, gradient descent on the second view converges to the first view
    second = torch.randn(n, 2, generator=generator, requires_grad=True)
    optimizer = torch.optim.Adam([second], lr=0.05)
    for _ in range(600):
        optimizer.zero_grad()
        ssl_info_nce(simplex, second, tau).backward()
        optimizer.step()
    cosines = torch.nn.functional.cosine_similarity(simplex, second.detach(), dim=1)
    assert bool((cosines > 0.999).all())


# -- the hooks in the trainer ------------------------------------------------------------------------------------


def _two_tower(planted, seed: int = 0):
    users = Vocabulary.from_values("user_id", planted.users["user_id"])
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    user_table = FeatureTable.build(users, [FeatureSpec("user_id", "id")])
    item_table = FeatureTable.build(
        items,
        [
            FeatureSpec("item_id", "id"),
            FeatureSpec("genres", "multi_categorical", column="genres"),
            FeatureSpec("year", "bucketized", column="year", num_buckets=4),
        ],
        planted.items,
    )
    torch.manual_seed(seed)
    model = build_model(
        "two_tower",
        {"embedding_dim": 8, "tower_layers": [16, 8], "temperature": 0.2},
        users=user_table,
        items=item_table,
    )
    return model, item_table, encode_interactions(planted.train, users, items)


@pytest.mark.torchrec
def test_ssl_loss_reaches_only_the_item_tower_and_the_default_rows(planted) -> None:
    model, item_table, train = _two_tower(planted)
    masking, loss = build_ssl_hooks(SSLConfig(mode="cfm", temperature=0.2), item_table, seed=0)
    assert isinstance(masking, CorrelatedFeatureMasking) and isinstance(loss, ItemSSLLoss)
    batch = model.featurize(RecBatch(users=torch.arange(32), items=torch.arange(32), rows=torch.arange(32)))
    batch = masking(batch)
    views = batch.extras["ssl"]
    value = loss(TrainContext(model=model, batch=batch))
    assert value.dim() == 0 and math.isfinite(float(value.detach())) and -1.0 <= loss.last_alignment <= 1.0
    value.backward()
    assert all(p.grad is None for p in model.user_tower.parameters())
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.item_tower.parameters())
    for name in views.masked_a:  # the masked features' default row is learned from the SSL loss
        weight = dict(model.item_tower.embeddings.named_parameters())[f"embedding_bags.item__{name}.weight"]
        assert bool(weight.grad[item_table.features[name].default_index].abs().sum() > 0)
    with pytest.raises(ValueError, match="no `extras\\['ssl'\\]`"):
        loss(TrainContext(model=model, batch=batch.replace(extras={})))


def _trainer(planted, folder, crash_at):
    model, item_table, train = _two_tower(planted, seed=0)
    hooks = build_ssl_hooks(SSLConfig(mode="rfm", alpha=0.5, dropout=0.3), item_table, seed=5)
    config = TrainConfig(
        epochs=2, max_steps=30, batch_size=64, checkpoint_every=4, show_progress=False, seed=3, lr=0.01
    )
    return Trainer(
        model,
        InMemoryBatches(train, 64, seed=3),
        config,
        hooks=[*hooks, CrashAt(crash_at)],
        item_counts=train.item_counts(),
        checkpoint_dir=folder,
    )


@pytest.mark.torchrec
def test_training_with_ssl_logs_the_term_and_resumes_bit_identically(planted, tmp_path) -> None:
    reference = _trainer(planted, tmp_path / "reference", None)
    reference.fit()
    components = reference.train_step(next(iter(reference.batches.batches(0))))
    assert components["loss/ssl_infonce"] > 0.0
    assert components["loss/total"] == pytest.approx(
        components["loss/task"] + 0.5 * components["loss/ssl_infonce"], rel=1e-5
    )
    reference = _trainer(planted, tmp_path / "reference2", None)
    reference.fit()
    crashing = _trainer(planted, tmp_path / "crash", 13)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit()
    resumed = _trainer(planted, tmp_path / "crash", None)
    resumed.fit()
    assert resumed.hooks[0].calls == reference.hooks[0].calls == 30
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_masked_count_rounding() -> None:
    # m = ⌈r·k⌉ clamped to [1, k−1]; for odd k this is the paper's 1 + ⌊k/2⌋ (seed + ⌊k/2⌋ partners)
    assert [masked_count(k, 0.5) for k in (2, 3, 4, 5, 6, 7)] == [1, 2, 2, 3, 3, 4]
    assert all(masked_count(k, 0.5) == 1 + k // 2 for k in (3, 5, 7, 9))
    assert masked_count(4, 0.1) == 1 and masked_count(4, 0.99) == 3
    assert {len(c) for c in combinations(range(4), masked_count(4, 0.5))} == {2}
