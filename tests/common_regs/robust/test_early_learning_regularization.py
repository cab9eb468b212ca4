"""ELR (#21): gradient matches its closed form, EMA algebra, only batch rows updated, finite at saturation."""

from __future__ import annotations

import torch

from common_regs.api import TrainContext
from common_regs.robust import EarlyLearningRegularization, elr_penalty


def test_gradient_matches_closed_form() -> None:
    torch.manual_seed(0)
    z = (0.5 * torch.randn(4, 5)).requires_grad_(True)  # moderate logits: no clamping
    t = torch.softmax(torch.randn(4, 5), -1) * 0.9
    elr_penalty(z, t).backward()
    p = torch.softmax(z.detach(), -1)
    inner = (t * p).sum(-1, keepdim=True)
    expected = -p * (t - inner) / (4 * (1 - inner))
    torch.testing.assert_close(z.grad, expected)


def test_ema_update_touches_only_batch_rows() -> None:
    elr = EarlyLearningRegularization(num_samples=5, num_classes=3, beta=0.7)
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    ctx = TrainContext(model=torch.nn.Identity(), outputs=logits, sample_indices=torch.tensor([0, 3]))
    elr(ctx)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(elr.targets[[0, 3]], 0.3 * p / p.sum(-1, keepdim=True))
    assert float(elr.targets[[1, 2, 4]].abs().sum()) == 0.0
    elr(ctx)
    torch.testing.assert_close(elr.targets[[0, 3]], 0.7 * 0.3 * p + 0.3 * p)


def test_penalty_decreases_as_prediction_aligns_with_target_and_is_finite_at_saturation() -> None:
    t = torch.tensor([[0.9, 0.05, 0.05]])
    aligned = elr_penalty(torch.tensor([[5.0, 0.0, 0.0]]), t)
    opposed = elr_penalty(torch.tensor([[0.0, 5.0, 0.0]]), t)
    assert float(aligned) < float(opposed)
    saturated = elr_penalty(torch.tensor([[1e4, -1e4, -1e4]]), torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.isfinite(saturated)


def test_state_round_trip() -> None:
    elr = EarlyLearningRegularization(4, 2)
    elr(TrainContext(model=torch.nn.Identity(), outputs=torch.randn(2, 2), sample_indices=torch.tensor([1, 2])))
    other = EarlyLearningRegularization(4, 2)
    other.load_state_dict(elr.state_dict())
    assert torch.equal(other.targets, elr.targets)
