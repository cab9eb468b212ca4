"""recsys.trainer: every model learns planted structure; hooks plug in; early stopping; bit-identical resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from planted_log import CrashAt, recall_at_k

from recsys.data import InMemoryBatches, NegativeSampler, StreamingBatches, Vocabulary, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.losses import EmbeddingL2
from recsys.models import build_model
from recsys.trainer import TrainConfig, Trainer


def _setup(planted, *, item_features: bool = False):
    users = Vocabulary.from_values("user_id", planted.users["user_id"])
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    specs = [FeatureSpec("item_id", "id")]
    if item_features:
        specs += [
            FeatureSpec("genres", "multi_categorical", column="genres"),
            FeatureSpec("year", "bucketized", column="year", num_buckets=4),
        ]
    user_table = FeatureTable.build(users, [FeatureSpec("user_id", "id")])
    item_table = FeatureTable.build(items, specs, planted.items)
    train = encode_interactions(planted.train, users, items)
    test = encode_interactions(planted.test, users, items)
    return user_table, item_table, train, test


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


MODELS = [
    ("mf", {"embedding_dim": 16}, {"loss": "bpr", "lr": 0.05}, False),
    ("mf", {"embedding_dim": 16, "normalize": True, "temperature": 0.2}, {"loss": "softmax", "lr": 0.05}, False),
    ("lightgcn", {"embedding_dim": 16, "num_layers": 2}, {"loss": "bpr", "lr": 0.05}, False),
    (
        "two_tower",
        {"embedding_dim": 16, "tower_layers": [32, 16], "temperature": 0.2},
        {"loss": "softmax", "lr": 0.01},
        True,
    ),
]


@pytest.mark.torchrec
@pytest.mark.parametrize(("name", "options", "train_options", "features"), MODELS)
def test_models_learn_planted_structure(planted, name, options, train_options, features):
    user_table, item_table, train, test = _setup(planted, item_features=features)
    torch.manual_seed(0)
    model = build_model(name, options, users=user_table, items=item_table, interactions=train)
    untrained = _recall10(model, train, test)
    config = TrainConfig(epochs=100, max_steps=300, batch_size=64, show_progress=False, **train_options)
    trainer = Trainer(
        model,
        InMemoryBatches(train, 64, seed=0),
        config,
        item_counts=train.item_counts(),
        negative_sampler=NegativeSampler.from_interactions(train),
        hooks=[EmbeddingL2(1e-4)],
    )
    result = trainer.fit()
    assert result.steps == 300 and result.examples_per_second > 0
    seen = np.bincount(train.users, minlength=train.num_users).mean()
    random_recall = 10 / (train.num_items - seen)  # expected recall@10 of a random ranking
    learned = _recall10(model, train, test)
    assert learned > 3 * random_recall, (name, learned, random_recall, untrained)
    assert learned > 0.6


def _resume_trainer(planted, tmp_path, crash_at, seed_for_init):
    user_table, item_table, train, _ = _setup(planted, item_features=True)
    torch.manual_seed(seed_for_init)
    model = build_model(
        "two_tower", {"embedding_dim": 8, "tower_layers": [16, 8], "dropout": 0.2}, users=user_table, items=item_table
    )
    config = TrainConfig(
        epochs=3, max_steps=40, batch_size=64, logq="streaming", checkpoint_every=5, show_progress=False, seed=3
    )
    return Trainer(
        model, InMemoryBatches(train, 64, seed=3), config, hooks=[CrashAt(crash_at)], checkpoint_dir=tmp_path
    )


@pytest.mark.torchrec
def test_resume_after_crash_is_bit_identical(planted, tmp_path):
    reference = _resume_trainer(planted, tmp_path / "reference", None, 0)
    reference.fit()
    crashing = _resume_trainer(planted, tmp_path / "crash", 27, 0)  # epochs have 21 batches: crash mid-epoch 1
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit()
    assert any((tmp_path / "crash").glob("ckpt-*.pt"))
    resumed = _resume_trainer(planted, tmp_path / "crash", None, 123)  # different init: everything comes from disk
    result = resumed.fit()
    assert result.steps == 40
    reference_state, resumed_state = reference.model.state_dict(), resumed.model.state_dict()
    assert reference_state.keys() == resumed_state.keys()
    for key, value in reference_state.items():
        assert torch.equal(value, resumed_state[key]), key
    assert torch.equal(reference.estimator.interval, resumed.estimator.interval)


def test_loss_terms_grad_and_mask_hooks_plug_in(planted):
    user_table, item_table, train, _ = _setup(planted)
    torch.manual_seed(0)
    model = build_model("mf", {"embedding_dim": 8}, users=user_table, items=item_table)

    class ZeroRows:
        """Mask scheduler keeping item rows 0-4 at zero after every optimizer step."""

        hook_kind = "mask_scheduler"

        def prepare(self, model, optimizer=None):
            self.calls = 0

        def step(self, ctx):
            self.calls += 1
            with torch.no_grad():
                ctx.model.item_table.weight[:5] = 0

        @property
        def masks(self):
            return {}

    class ClipGrad:
        hook_kind = "grad_transform"

        def apply(self, ctx):
            self.seen = float(ctx.model.item_table.weight.grad.abs().max())
            ctx.model.item_table.weight.grad.clamp_(-1e-3, 1e-3)

    l2, zero, clip = EmbeddingL2(0.5), ZeroRows(), ClipGrad()
    trainer = Trainer(
        model,
        InMemoryBatches(train, 64),
        TrainConfig(epochs=1, max_steps=3, loss="bpr", show_progress=False),
        hooks=[l2, zero, clip],
        negative_sampler=NegativeSampler.from_interactions(train),
    )
    batch = next(iter(trainer.batches.batches(0)))
    components = trainer.train_step(batch)
    assert components["loss/total"] == pytest.approx(
        components["loss/task"] + 0.5 * components["loss/embedding_l2"], rel=1e-5
    )
    assert zero.calls == 1 and torch.count_nonzero(model.item_table.weight[:5]) == 0
    assert clip.seen > 0
    groups = {group["name"]: group for group in trainer.optimizer.param_groups}
    assert set(groups) == {"sparse"}  # MF has only embedding tables


def test_early_stopping_restores_the_best_weights(planted):
    user_table, item_table, train, _ = _setup(planted)
    torch.manual_seed(0)
    model = build_model("mf", {"embedding_dim": 8}, users=user_table, items=item_table)
    snapshots = []

    def evaluate(m):
        snapshots.append(m.item_table.weight.detach().clone())
        return {"R@20": 1.0 / len(snapshots)}  # best at the first evaluation, worse afterwards

    config = TrainConfig(epochs=50, batch_size=128, loss="bpr", lr=0.05, patience=2, show_progress=False)
    result = Trainer(
        model,
        InMemoryBatches(train, 128),
        config,
        evaluate=evaluate,
        negative_sampler=NegativeSampler.from_interactions(train),
    ).fit()
    assert result.stopped_early and result.epochs == 3 and result.best_epoch == 0
    assert torch.equal(model.item_table.weight, snapshots[0])
    with pytest.raises(ValueError, match="`train.patience` must be >= 1 or null, got 0"):
        TrainConfig(patience=0)
    with pytest.raises(ValueError, match="`item_counts` is required"):
        Trainer(model, InMemoryBatches(train, 128), TrainConfig(show_progress=False))


def test_streaming_batches_train_like_in_memory(planted):
    user_table, item_table, train, test = _setup(planted)
    stream = StreamingBatches(
        planted.folder / "train.parquet", user_table.entity, item_table.entity, 64, seed=0, buffer_rows=500
    )
    torch.manual_seed(0)
    model = build_model("mf", {"embedding_dim": 16}, users=user_table, items=item_table)
    config = TrainConfig(epochs=100, max_steps=300, batch_size=64, loss="bpr", lr=0.05, show_progress=False)
    result = Trainer(model, stream, config, negative_sampler=NegativeSampler.from_interactions(train)).fit()
    per_epoch = len(stream)  # 21 batches: 20 full + one of 40 rows
    assert result.steps == 300 and result.epochs == 300 // per_epoch
    assert result.examples == result.epochs * len(train) + (300 - result.epochs * per_epoch) * 64
    assert _recall10(model, train, test) > 0.6
