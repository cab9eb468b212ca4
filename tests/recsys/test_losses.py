"""recsys.losses against hand-computed values and reference loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common_regs.api import TrainContext
from recsys.losses import EmbeddingL2, StreamingFrequencyEstimator, bpr_loss, in_batch_softmax_loss, log_q_from_counts
from recsys.models.base import RecOutput


def test_logq_correction_hand_computed():
    # two users, two items; scores s·<u, v>: user 0 -> [2, 0], user 1 -> [1, 3] (scale 2, unit vectors)
    query = torch.tensor([[1.0, 0.0], [0.5, 1.5]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    log_q = torch.log(torch.tensor([0.75, 0.25]))
    loss = in_batch_softmax_loss(query, items, scale=2.0, log_q=log_q)
    # corrected logits: row 0: [2 - ln .75, 0 - ln .25] = [2.28768, 1.38629]; row 1: [1.28768, 4.38629]
    row0 = -(2 - math.log(0.75)) + math.log(math.exp(2 - math.log(0.75)) + math.exp(-math.log(0.25)))
    row1 = -(3 - math.log(0.25)) + math.log(math.exp(1 - math.log(0.75)) + math.exp(3 - math.log(0.25)))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert loss.item() == pytest.approx((0.34075 + 0.04414) / 2, abs=1e-4)  # log(1+e^-0.90139), log(1+e^-3.09861)
    uncorrected = in_batch_softmax_loss(query, items, scale=2.0)
    assert uncorrected.item() == pytest.approx((math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-2))) / 2, rel=1e-6)
    half = in_batch_softmax_loss(query, items, scale=2.0, log_q=log_q, log_q_weight=0.0)
    assert half.item() == pytest.approx(uncorrected.item())


def test_accidental_hits_are_masked():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    ids = torch.tensor([7, 8, 7])  # rows 0 and 2 share item 7
    loss = in_batch_softmax_loss(query, items, candidate_ids=ids)
    row0 = -1 + math.log(math.exp(1) + math.exp(0))  # column 2 (item 7 again) removed
    row1 = -1 + math.log(math.exp(0) + math.exp(1) + math.exp(0))
    row2 = -1 + math.log(math.exp(1) + math.exp(1))  # column 0 removed
    assert loss.item() == pytest.approx((row0 + row1 + row2) / 3, rel=1e-6)


def test_bpr_hand_computed():
    query = torch.tensor([[1.0, 2.0]])
    positive = torch.tensor([[1.0, 1.0]])
    negatives = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])
    # x_ui = 3; x_uj = 2 and 2 -> -log σ(1) twice
    assert bpr_loss(query, positive, negatives).item() == pytest.approx(-math.log(1 / (1 + math.exp(-1))), rel=1e-6)
    assert bpr_loss(query, positive, negatives, scale=3.0).item() == pytest.approx(-math.log(1 / (1 + math.exp(-3))))
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        bpr_loss(query, positive, negatives[0])


def test_log_q_from_counts():
    log_q = log_q_from_counts(np.array([3, 1, 0]))
    assert torch.allclose(log_q.exp(), torch.tensor([3 / 5, 1 / 5, 1 / 5]))


def _loop_reference(stream: list[list[int]], buckets: int, alpha: float, init: float) -> np.ndarray:
    a, b = np.zeros(buckets), np.full(buckets, init)
    for t, batch in enumerate(stream, start=1):
        for y in batch:  # Yi et al. 2019, Algorithm 2, one example at a time
            h = y % buckets
            b[h] = (1 - alpha) * b[h] + alpha * (t - a[h])
            a[h] = t
    return b


def test_streaming_estimator_matches_the_algorithm_loop():
    rng = np.random.default_rng(0)
    stream = [rng.integers(0, 12, size=8).tolist() for _ in range(60)]
    estimator = StreamingFrequencyEstimator(5, alpha=0.1, initial_interval=2.0)
    for t, batch in enumerate(stream, start=1):
        estimator.update(torch.tensor(batch), t)
    np.testing.assert_allclose(estimator.interval.numpy(), _loop_reference(stream, 5, 0.1, 2.0), rtol=1e-12)


def test_streaming_estimator_converges_to_the_period():
    estimator = StreamingFrequencyEstimator(4, alpha=0.05)
    for t in range(1, 2001):
        estimator.update(torch.tensor([0] + ([1] if t % 4 == 0 else [])), t)  # item 0 each step, item 1 every 4th
    probability = estimator.log_probability(torch.tensor([0, 1])).exp()
    assert probability.tolist() == pytest.approx([1.0, 0.25], rel=1e-3)
    restored = StreamingFrequencyEstimator(4, alpha=0.05)
    restored.load_state_dict(estimator.state_dict())
    assert torch.equal(restored.interval, estimator.interval)


def test_embedding_l2_term():
    rows = [torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[3.0, 0.0], [1.0, 1.0]])]
    outputs = RecOutput(user=rows[0], item=rows[1], scale=torch.tensor(1.0), regularized=rows)
    value = EmbeddingL2(weight=0.5)(TrainContext(model=torch.nn.Linear(1, 1), outputs=outputs))
    assert value.item() == pytest.approx((1 + 4 + 0 + 1 + 9 + 0 + 1 + 1) / (2 * 2))
    with pytest.raises(ValueError, match="`weight` must be >= 0"):
        EmbeddingL2(weight=-1)
