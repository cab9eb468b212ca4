"""Partitioned (streaming) recommendation evaluation pools to exactly the in-memory evaluation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from pipelines.evaluation.recsys import evaluate_recommendations
from pipelines.evaluation.recsys_streaming import evaluate_recommendations_streaming
from recsys.data import Vocabulary, encode_interactions, item_frequencies
from recsys.features import FeatureSpec, FeatureTable
from recsys.models import build_model
from recsys.serving import Recommender


@pytest.fixture()
def setup(tmp_path):
    rng = np.random.default_rng(0)
    train = pl.DataFrame({"user_id": rng.integers(0, 60, 900), "item_id": rng.integers(0, 50, 900)})
    test = pl.DataFrame({"user_id": rng.integers(0, 66, 150), "item_id": rng.integers(0, 52, 150)})  # cold, unknown
    train.write_parquet(tmp_path / "train.parquet")
    test.write_parquet(tmp_path / "test.parquet")
    users = Vocabulary.from_values("user_id", train["user_id"])
    items = Vocabulary.from_values("item_id", train["item_id"])
    user_table = FeatureTable.build(users, [FeatureSpec("user_id", "id")])
    item_table = FeatureTable.build(items, [FeatureSpec("item_id", "id")])
    torch.manual_seed(0)
    model = build_model("mf", {"embedding_dim": 8}, users=user_table, items=item_table)
    seen = encode_interactions(train, users, items)
    return tmp_path, train, test, Recommender(model, users, items, user_table, item_table, seen)


def test_streaming_evaluation_equals_the_in_memory_one(setup) -> None:
    folder, _, test, service = setup
    expected = evaluate_recommendations(service, test, ks=(5, 10))
    popularity = item_frequencies(folder / "train.parquet", service.items)
    np.testing.assert_array_equal(popularity, service.popularity)
    got = evaluate_recommendations_streaming(
        service, folder / "train.parquet", folder / "test.parquet", popularity=popularity, ks=(5, 10),
        max_rows_per_part=200, work_dir=folder, show_progress=False,
    )
    assert got["parts"] == 5  # ceil(900 / 200)
    for key in ("R@5", "R@10", "nDCG@5", "nDCG@10", "head/R@10", "tail/nDCG@10"):
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    for key in ("users", "cold_users", "unknown_test_items", "head/users", "tail/users"):
        assert got[key] == expected[key], key
    assert expected["cold_users"] > 0 and expected["unknown_test_items"] > 0
    assert not list(folder.glob("regkit-eval-parts-*"))  # partitioned copies removed
    with pytest.raises(ValueError, match=r"`max_rows_per_part` must be >= 1, got 0"):
        evaluate_recommendations_streaming(service, folder / "train.parquet", folder / "test.parquet",
                                           max_rows_per_part=0)
