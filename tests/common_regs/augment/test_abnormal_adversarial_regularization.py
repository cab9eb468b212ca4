"""AAER (#69): abnormal-AE detection, zero without AAEs, closed-form value, full FGSM loss is finite."""

from __future__ import annotations

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.augment import AAER, aaer_regularizer


def test_detection_and_value_on_a_crafted_batch() -> None:
    before = torch.tensor([2.0, 1.0, 3.0, 0.5])
    after = torch.tensor([1.0, 1.5, 2.0, 0.7])  # samples 0 and 2 are abnormal (loss went down)
    out_before, out_after = torch.zeros(4, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    reg, abnormal = aaer_regularizer(before, after, out_before, out_after, lambda1=1.0, lambda2=4.0, lambda3=1.5)
    assert abnormal.tolist() == [True, False, True, False]
    gap, variation, reference = 1.0, (1.0 + 4.0) / 2, (1.0 + 0.0) / 2
    assert float(reg) == pytest.approx(1.0 * 2 / 4 * (4.0 * gap + 1.5 * (variation - reference)))


def test_zero_without_abnormal_examples() -> None:
    reg, abnormal = aaer_regularizer(torch.ones(3), torch.full((3,), 2.0), torch.zeros(3, 2), torch.ones(3, 2))
    assert float(reg) == 0.0 and not bool(abnormal.any())


def test_full_single_step_loss_runs_and_backpropagates() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x, y = torch.rand(32, 6), torch.randint(0, 3, (32,))
    term = AAER(epsilon=0.5, differentiable_gap=True)
    loss = term(TrainContext(model=model, batch=(x, y)))
    loss.backward()
    assert torch.isfinite(loss) and set(term.last_components) == {"adversarial_ce", "regularizer", "abnormal"}
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
