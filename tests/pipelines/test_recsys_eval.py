"""pipelines.evaluation.recsys against a hand-computed example (full ranking, seen items excluded)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from pipelines.evaluation.recsys import (
    encode_test,
    evaluate_encoded,
    evaluate_recommendations,
    head_items,
    make_evaluator,
)
from recsys.data import Vocabulary, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.models import MatrixFactorization
from recsys.serving import Recommender

D2 = 1 / math.log2(3)  # discount of rank 2


@pytest.fixture()
def service() -> Recommender:
    users = Vocabulary.from_values("user_id", [1, 2, 3])
    items = Vocabulary.from_values("item_id", [1, 2, 3, 4, 5, 6])
    train = encode_interactions(pl.DataFrame({"user_id": [2, 3, 3], "item_id": [1, 2, 3]}), users, items)
    model = MatrixFactorization(3, 6, embedding_dim=2)
    with torch.no_grad():
        model.user_table.weight.copy_(torch.tensor([[1.0, 0.0]] * 4))
        model.item_table.weight.copy_(torch.tensor([[6.0, 0], [5, 0], [4, 0], [3, 0], [2, 0], [1, 0], [0, 0]]))
    tables = (
        FeatureTable.build(users, [FeatureSpec("user_id", "id")]),
        FeatureTable.build(items, [FeatureSpec("item_id", "id")]),
    )
    return Recommender(model, users, items, *tables, train)


TEST = pl.DataFrame({"user_id": [1, 1, 2, 2, 3], "item_id": [1, 99, 3, 6, 4]})


def test_metrics_match_hand_computation(service):
    # user 1: cold -> popularity [1, 2]; test {1, 99 (not in catalogue)} -> R@1 = R@2 = 1/2, nDCG@2 = 1/(1+D2)
    # user 2: seen {1} -> [2, 3]; test {3, 6} -> R@1 = 0, R@2 = 1/2, nDCG@2 = D2/(1+D2)
    # user 3: seen {2, 3} -> [1, 4]; test {4} -> R@1 = 0, R@2 = 1, nDCG@2 = D2
    metrics = evaluate_recommendations(service, TEST, ks=(1, 2), per_user=True)
    assert metrics["R@1"] == pytest.approx(0.5 / 3)
    assert metrics["R@2"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert metrics["nDCG@1"] == pytest.approx(1 / 3)
    assert metrics["nDCG@2"] == pytest.approx((1 / (1 + D2) + D2 / (1 + D2) + D2) / 3)
    assert metrics["per_user"]["u:2"]["R@2"] == pytest.approx(0.5)
    # the item with the same raw id as the user (item 1 for user 1, item 2 for user 2) is NOT dropped
    assert metrics["per_user"]["u:1"]["nDCG@1"] == pytest.approx(1.0)
    assert metrics["coverage@2"] == pytest.approx(4 / 6)
    assert (metrics["users"], metrics["cold_users"], metrics["unknown_test_items"]) == (3, 1, 1)


def test_head_tail_slices(service):
    # training counts [1, 1, 1, 0, 0, 0]: head = top ceil(0.2 * 6) = 2 items = {1, 2} (ties -> lower index)
    assert head_items(np.array([1, 1, 1, 0, 0, 0])).tolist() == [True, True, False, False, False, False]
    metrics = evaluate_recommendations(service, TEST, ks=(2,))
    assert metrics["head/users"] == 1 and metrics["head/R@2"] == pytest.approx(1.0)  # user 1: {1}
    assert metrics["tail/users"] == 2 and metrics["tail/R@2"] == pytest.approx((0.5 + 1.0) / 2)  # users 2, 3
    assert metrics["head_share@2"] == pytest.approx(4 / 6)  # slots [1,2], [2,3], [1,4]
    assert metrics["avg_popularity@2"] == pytest.approx((1 + 1 + 1 + 1 + 1 + 0) / 6)


def test_evaluator_callback_and_bad_input(service):
    evaluate = make_evaluator(service, TEST, ks=(2,))
    assert evaluate(service.model)["R@2"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="test split is empty"):
        evaluate_recommendations(service, TEST.head(0))
    with pytest.raises(ValueError, match="no `item_id` column"):
        evaluate_recommendations(service, TEST.select("user_id"))


def test_an_encoded_test_log_is_reused_after_the_model_changes(service):
    # make_evaluator encodes the log once; each call ranks with the current weights. Item 4 first for everyone:
    # user 1 (cold, popularity) keeps [1, 2]; user 2 -> [4, 2] (R@2 = 0), user 3 -> [4, 1] (R@2 = 1)
    encoded = encode_test(service, TEST)
    evaluate = make_evaluator(service, TEST, ks=(2,))
    with torch.no_grad():
        service.model.item_table.weight[3, 0] = 10.0
    after = evaluate(service.model)
    assert after["R@2"] == pytest.approx((0.5 + 0 + 1) / 3)
    direct = evaluate_encoded(service, encoded, ks=(2,))
    assert {k: v for k, v in direct.items() if k != "seconds"} == {
        k: v for k, v in evaluate_recommendations(service, TEST, ks=(2,)).items() if k != "seconds"
    }
    assert direct["R@2"] == after["R@2"]
