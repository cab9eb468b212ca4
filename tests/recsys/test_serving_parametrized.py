"""A model trained with a mask parametrization (DSL) saves its effective weights and serves the same lists."""

from __future__ import annotations

import numpy as np
import torch

from common_regs.sparsity import DSL
from recsys.data import Vocabulary, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.models import build_model
from recsys.serving import Recommender


def test_dsl_masked_model_round_trips_through_save_and_load(planted, tmp_path):
    users = Vocabulary.from_values("user_id", planted.users["user_id"])
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    user_table = FeatureTable.build(users, [FeatureSpec("user_id", "id")])
    item_table = FeatureTable.build(items, [FeatureSpec("item_id", "id")])
    train = encode_interactions(planted.train, users, items)
    torch.manual_seed(0)
    model = build_model("mf", {"embedding_dim": 8}, users=user_table, items=item_table)
    optimizer = torch.optim.Adam(model.parameters())
    dsl = DSL(density=0.3, update_interval=10, total_steps=10)
    dsl.prepare(model, optimizer)
    assert any(".parametrizations." in key for key in model.state_dict())
    service = Recommender(model, users, items, user_table, item_table, train)
    expected_items, expected_scores = service.recommend_indices(np.arange(30), 10)
    loaded = Recommender.load(service.save(tmp_path / "served"))
    state = loaded.model.state_dict()
    assert not any(".parametrizations." in key for key in state)
    weight = state["item_table.weight"]
    assert int(torch.count_nonzero(weight)) == round(0.3 * weight.numel())  # the DSL budget, baked in
    items_after, scores_after = loaded.recommend_indices(np.arange(30), 10)
    np.testing.assert_array_equal(items_after, expected_items)
    np.testing.assert_allclose(scores_after, expected_scores, rtol=1e-6)
    assert any(".parametrizations." in key for key in model.state_dict())  # the live model is left untouched
