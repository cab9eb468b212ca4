"""recsys.regularizers: multi-sample dropout and PS-KD inside the recsys trainer's in-batch softmax."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common_regs.api import TrainContext
from recsys.data import InMemoryBatches, Vocabulary, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.losses import in_batch_logits, log_q_from_counts
from recsys.models import RecBatch, TwoTower
from recsys.regularizers import InBatchPSKD, InBatchSoftmax, TrainSetup, TwoTowerMultiSampleDropout
from recsys.trainer import TrainConfig, Trainer


@pytest.fixture()
def setup_data(planted):
    users = Vocabulary.from_values("user_id", planted.users["user_id"])
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    user_table = FeatureTable.build(users, [FeatureSpec("user_id", "id")])
    item_table = FeatureTable.build(items, [FeatureSpec("item_id", "id")])
    return user_table, item_table, encode_interactions(planted.train, users, items)


def _model(setup_data, seed: int = 0, backend: str = "torchrec") -> TwoTower:
    users, items, _ = setup_data
    torch.manual_seed(seed)
    return TwoTower(users, items, embedding_dim=8, tower_layers=[8], temperature=0.2, embedding_backend=backend)


def _config(**changes) -> TrainConfig:
    options = {"epochs": 2, "batch_size": 256, "lr": 0.02, "show_progress": False, "eval_every": 0, **changes}
    return TrainConfig(**options)


def _train(model, train, config, hooks=(), steps: int | None = None) -> list[float]:
    """Train from a fixed seed; returns loss/total per step."""
    trainer = Trainer(model, InMemoryBatches(train, config.batch_size, seed=0), config, hooks=hooks,
                      item_counts=train.item_counts())
    torch.manual_seed(123)
    losses = []
    for epoch in range(config.epochs):
        trainer.epoch = epoch
        for index_batch in trainer.batches.batches(epoch):
            losses.append(trainer.train_step(index_batch)["loss/total"])
            if steps is not None and len(losses) >= steps:
                return losses
    return losses


def _setup(model, train, config) -> TrainSetup:
    return TrainSetup(model=model, train=config, item_counts=train.item_counts(), epochs=config.epochs)


@pytest.mark.torchrec
def test_msd_with_one_sample_is_plain_dropout(setup_data) -> None:
    """M=1 through the hook == a model with nn.Dropout before the user tower's last layer (same RNG stream).

    The two paths sum the same terms in a different order, and which order depends on the CPU's kernels (AVX-512,
    AVX2, default). In float32 that difference (~1e-7 relative) is amplified by Adam's ``m / sqrt(v)`` to ~1e-4
    after a few steps, so the comparison runs in float64 (plain ``nn.EmbeddingBag`` backend: fbgemm's tables are
    float32-only): reordering errors are then ~1e-16 relative and stay far below the tolerance on any CPU, while a
    different mask or a missing dropout changes parameters by ~1e-3.
    """
    _, _, train = setup_data
    config = _config()
    model = _model(setup_data, backend="torch").double()
    reference = copy.deepcopy(model)
    reference.user_tower.mlp = nn.Sequential(nn.Dropout(0.3), *reference.user_tower.mlp)  # ordinary dropout
    hook = TwoTowerMultiSampleDropout.from_setup(_setup(model, train, config), num_samples=1, p=0.3)
    got = _train(model, train, config, [hook], steps=4)
    expected = _train(reference, train, config, steps=4)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-10, atol=1e-12)
    without_dropout = _train(_model(setup_data, backend="torch").double(), train, config, steps=1)[0]
    assert got[0] != pytest.approx(without_dropout)  # dropout did act
    for (name, value), other in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(value, other, rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.torchrec
def test_msd_loss_is_the_mean_of_the_sample_losses(setup_data) -> None:
    """ℓ + Δ == (1/M) Σ_m ℓ(dropout_m(h)) with the same masks drawn by hand; p = 0 gives Δ = 0."""
    _, _, train = setup_data
    config = _config()
    for at in ("hidden", "output"):
        model = _model(setup_data)
        hook = TwoTowerMultiSampleDropout.from_setup(_setup(model, train, config), num_samples=3, p=0.4, at=at)
        batch = model.featurize(RecBatch(users=torch.tensor([0, 1, 2, 5]), items=torch.tensor([3, 7, 3, 9]),
                                         rows=torch.arange(4)))
        outputs = model(batch)
        log_q = log_q_from_counts(train.item_counts())[batch.items]

        def task(user, outputs=outputs, batch=batch, log_q=log_q):
            logits = in_batch_logits(user, outputs.item, scale=outputs.scale, log_q=log_q, candidate_ids=batch.items)
            return F.cross_entropy(logits, torch.arange(4))

        tower = model.user_tower
        h = tower.embeddings(batch.user_features).values() if at == "hidden" else tower(batch.user_features)
        torch.manual_seed(7)
        delta = hook(TrainContext(model=model, batch=batch, outputs=outputs))
        torch.manual_seed(7)
        masks = F.dropout(torch.ones(3, *h.shape), 0.4)
        last = tower.mlp[-1]
        heads = [(h * mask) if at == "output" else last(h * mask) for mask in masks]
        expected = torch.stack([task(F.normalize(x, dim=-1)) for x in heads]).mean()
        torch.testing.assert_close(task(outputs.user) + delta, expected)
        no_dropout = TwoTowerMultiSampleDropout(model, hook.softmax, num_samples=4, p=0.0, at=at)
        outputs = model(batch)
        value = no_dropout(TrainContext(model=model, batch=batch, outputs=outputs))
        assert float(value) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.torchrec
def test_pskd_with_zero_alpha_trains_like_no_pskd(setup_data) -> None:
    _, _, train = setup_data
    config = _config(epochs=3)
    plain, distilled = _model(setup_data), _model(setup_data)
    hook = InBatchPSKD.from_setup(_setup(distilled, train, config), alpha_final=0.0)
    expected = _train(plain, train, config)
    got = _train(distilled, train, config, [hook])
    assert hook.teacher is not None and hook.teacher_epoch == 2  # the teacher did run in epochs 1 and 2
    assert got == expected
    for value, other in zip(distilled.state_dict().values(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(value, other, rtol=0, atol=0)


@pytest.mark.torchrec
def test_pskd_total_is_soft_cross_entropy_against_the_previous_epoch_model(setup_data) -> None:
    """ℓ + Δ == CE(z, (1-α_t)·onehot + α_t·softmax(z_teacher)), teacher = the model when epoch t began."""
    _, _, train = setup_data
    config = _config(epochs=4, logq="none")
    model = _model(setup_data)
    hook = InBatchPSKD.from_setup(_setup(model, train, config), alpha_final=0.8)
    assert hook.total_epochs == 4  # defaults to the run's epoch budget
    batch = model.featurize(RecBatch(users=torch.tensor([0, 4, 9]), items=torch.tensor([1, 2, 8]),
                                     rows=torch.arange(3)))
    outputs = model(batch)
    assert float(hook(TrainContext(model=model, batch=batch, outputs=outputs, epoch=0))) == 0.0  # one-hot at t=0
    hook(TrainContext(model=model, batch=batch, outputs=outputs, epoch=1))  # epoch 1 starts: snapshot
    snapshot = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))  # the student moves on during epoch 1
    outputs = model(batch)
    delta = hook(TrainContext(model=model, batch=batch, outputs=outputs, epoch=1))
    alpha = 0.8 * 2 / 4
    scale = outputs.scale
    student = in_batch_logits(outputs.user, outputs.item, scale=scale, candidate_ids=batch.items)
    with torch.no_grad():
        past = snapshot(batch)
        teacher = in_batch_logits(past.user, past.item, scale=past.scale, candidate_ids=batch.items)
    target = (1 - alpha) * torch.eye(3) + alpha * teacher.softmax(-1)
    expected = F.cross_entropy(student, target)  # torch's probability-target cross-entropy
    task = F.cross_entropy(student, torch.arange(3))
    torch.testing.assert_close(task + delta, expected)
    # the hook state (teacher + epoch) survives a checkpoint round trip
    restored = InBatchPSKD.from_setup(_setup(model, train, config), alpha_final=0.8)
    restored.load_state_dict(copy.deepcopy(hook.state_dict()))
    torch.testing.assert_close(restored(TrainContext(model=model, batch=batch, outputs=outputs, epoch=1)), delta)


@pytest.mark.torchrec
def test_adapters_reject_what_they_cannot_reproduce(setup_data) -> None:
    _, _, train = setup_data
    model = _model(setup_data)
    with pytest.raises(ValueError, match="`train.loss`='softmax'"):
        InBatchSoftmax(_setup(model, train, _config(loss="bpr")), "ps_kd")
    with pytest.raises(ValueError, match="streaming"):
        InBatchSoftmax(_setup(model, train, _config(logq="streaming")), "ps_kd")
    softmax = InBatchSoftmax(_setup(model, train, _config()), "ps_kd")
    with pytest.raises(ValueError, match="`alpha_final` must be a number in \\[0, 1\\], got 1.5"):
        InBatchPSKD(model, softmax, alpha_final=1.5)
    with pytest.raises(ValueError, match="`num_samples` must be a positive integer"):
        TwoTowerMultiSampleDropout(model, softmax, num_samples=0)
    with pytest.raises(ValueError, match="`at` must be 'hidden' or 'output'"):
        TwoTowerMultiSampleDropout(model, softmax, at="input")
    with pytest.raises(ValueError, match="needs a two-tower model"):
        TwoTowerMultiSampleDropout(nn.Linear(2, 2), softmax)  # type: ignore[arg-type]
