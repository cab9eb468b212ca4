"""DSL (common_regs.sparsity.DSL) through the recsys trainer's hooks: no model changes, exact budget, resume."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
from planted_log import CrashAt, recall_at_k

from common_regs.sparsity import DSL
from recsys.data import InMemoryBatches, NegativeSampler, Vocabulary, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.losses import EmbeddingL2
from recsys.models import build_model
from recsys.trainer import TrainConfig, Trainer

TABLES = ("user_table.weight", "item_table.weight")


def _data(planted):
    users = Vocabulary.from_values("user_id", planted.users["user_id"])
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    user_table = FeatureTable.build(users, [FeatureSpec("user_id", "id")])
    item_table = FeatureTable.build(items, [FeatureSpec("item_id", "id")])
    return user_table, item_table, encode_interactions(planted.train, users, items), encode_interactions(
        planted.test, users, items
    )


def _recall10(model, train, test) -> float:
    model.eval()
    with torch.no_grad():
        scores = model.user_embeddings(torch.arange(train.num_users)) @ model.item_embeddings().T
    scores[torch.from_numpy(train.users), torch.from_numpy(train.items)] = -torch.inf
    top = scores.topk(10, dim=1).indices.numpy()
    truth: dict[int, set[int]] = {}
    for user, item in zip(test.users.tolist(), test.items.tolist(), strict=True):
        truth.setdefault(user, set()).add(item)
    return recall_at_k(top, truth, 10)


@pytest.mark.parametrize(("name", "options"), [("mf", {"embedding_dim": 16}), ("lightgcn", {"embedding_dim": 16})])
def test_dsl_trains_mf_and_lightgcn_at_a_constant_budget(planted, name, options):
    user_table, item_table, train, test = _data(planted)
    torch.manual_seed(0)
    model = build_model(name, options, users=user_table, items=item_table, interactions=train)
    steps = 240
    dsl = DSL(density=0.5, update_interval=20, total_steps=steps)
    budget_seen: list[int] = []

    class Budget:
        hook_kind: ClassVar[str] = "mask_scheduler"
        masks: ClassVar[dict] = {}

        def prepare(self, model, optimizer=None):
            del model, optimizer

        def step(self, ctx):
            del ctx
            budget_seen.append(dsl.active_parameters())

    config = TrainConfig(epochs=100, max_steps=steps, batch_size=64, loss="bpr", lr=0.05, show_progress=False)
    trainer = Trainer(model, InMemoryBatches(train, 64, seed=0), config, hooks=[EmbeddingL2(1e-4), dsl, Budget()],
                      negative_sampler=NegativeSampler.from_interactions(train))
    trainer.fit()
    assert sorted(dsl.masks) == sorted(TABLES)  # the model's own tables, found without any model change
    total = sum(dsl.budget.values())
    assert total == (train.num_users + 1 + train.num_items + 1) * 16 // 2
    assert budget_seen == [total] * steps
    assert len(dsl.history) == steps // 20
    for table in TABLES:
        assert int((dsl.effective(table) != 0).sum()) <= dsl.budget[table]
    seen = np.bincount(train.users, minlength=train.num_users).mean()
    assert _recall10(model, train, test) > 3 * 10 / (train.num_items - seen)


def _resume_trainer(planted, folder, crash_at, init_seed):
    user_table, item_table, train, _ = _data(planted)
    torch.manual_seed(init_seed)
    model = build_model("mf", {"embedding_dim": 8}, users=user_table, items=item_table)
    dsl = DSL(density=0.25, update_interval=4, total_steps=40, seed=init_seed)
    config = TrainConfig(epochs=3, max_steps=40, batch_size=64, loss="bpr", lr=0.05, checkpoint_every=5,
                         show_progress=False, seed=3)
    trainer = Trainer(model, InMemoryBatches(train, 64, seed=3), config, hooks=[dsl, CrashAt(crash_at)],
                      negative_sampler=NegativeSampler.from_interactions(train, seed=3), checkpoint_dir=folder)
    return trainer, dsl


def test_trainer_checkpoint_resume_continues_with_identical_masks(planted, tmp_path):
    reference, reference_dsl = _resume_trainer(planted, tmp_path / "reference", None, 0)
    reference.fit()
    crashing, _ = _resume_trainer(planted, tmp_path / "crash", 27, 0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit()
    resumed, resumed_dsl = _resume_trainer(planted, tmp_path / "crash", None, 123)  # other init, masks, seed
    assert not all(torch.equal(resumed_dsl.masks[t], reference_dsl.masks[t]) for t in TABLES)
    resumed.fit()
    for table in TABLES:
        assert torch.equal(resumed_dsl.masks[table], reference_dsl.masks[table]), table
    assert resumed_dsl.history == reference_dsl.history
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_restore_best_restores_the_masks_of_the_best_weights_and_total_steps_reach_dsl(planted):
    user_table, item_table, train, _ = _data(planted)
    torch.manual_seed(0)
    model = build_model("mf", {"embedding_dim": 8}, users=user_table, items=item_table)
    dsl = DSL(density=0.25, update_interval=3)  # no total_steps: read from the trainer's context
    scores = iter([0.9, 0.1, 0.2, 0.3])  # the first evaluation (epoch 0) is the best
    snapshots: list[dict[str, torch.Tensor]] = []

    def evaluate(_model):
        snapshots.append({t: dsl.masks[t].clone() for t in TABLES})
        return {"R@20": next(scores)}

    config = TrainConfig(epochs=4, batch_size=64, loss="bpr", lr=0.05, show_progress=False, restore_best=True)
    trainer = Trainer(model, InMemoryBatches(train, 64, seed=0), config, hooks=[dsl], evaluate=evaluate,
                      negative_sampler=NegativeSampler.from_interactions(train))
    trainer.fit()
    assert trainer.result.best_epoch == 0
    assert not all(torch.equal(snapshots[0][t], snapshots[-1][t]) for t in TABLES)  # masks moved after epoch 0
    state = model.state_dict()
    for table in TABLES:
        assert torch.equal(dsl.masks[table], snapshots[0][table]), table  # masks of the restored weights
        raw = state[table.replace(".weight", ".parametrizations.weight.original")]
        assert int(torch.count_nonzero(raw[dsl.masks[table] == 0])) == 0  # pruned entries of those weights are 0
