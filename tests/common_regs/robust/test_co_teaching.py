"""Co-teaching (#3): peers learn from each other's small-loss samples; R = 0 is the sum of CEs; R schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common_regs.api import TrainContext
from common_regs.robust import CoTeaching, co_teaching_forget_rate, small_loss_indices


def test_forget_rate_schedule() -> None:
    assert [co_teaching_forget_rate(0.4, e, 10) for e in (0, 5, 10, 20)] == pytest.approx([0.0, 0.2, 0.4, 0.4])


def test_each_network_trains_on_the_peer_selection() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(10, 3, requires_grad=True), torch.randn(10, 3, requires_grad=True)
    y = torch.randint(0, 3, (10,))
    term = CoTeaching(noise_rate=0.4, gradual_epochs=1)
    loss = term(TrainContext(model=torch.nn.Identity(), batch=(None, y), outputs=(a, b), epoch=3))
    loss_a, loss_b = F.cross_entropy(a, y, reduction="none"), F.cross_entropy(b, y, reduction="none")
    keep_a, keep_b = loss_a.argsort()[:6], loss_b.argsort()[:6]
    torch.testing.assert_close(loss, loss_a[keep_b].mean() + loss_b[keep_a].mean())
    loss.backward()
    dropped_for_a = sorted(set(range(10)) - set(keep_b.tolist()))
    assert float(a.grad[dropped_for_a].abs().sum()) == 0.0


def test_zero_forget_rate_is_plain_cross_entropy() -> None:
    a, b, y = torch.randn(6, 4), torch.randn(6, 4), torch.randint(0, 4, (6,))
    loss = CoTeaching(noise_rate=0.3)(
        TrainContext(model=torch.nn.Identity(), batch=(None, y), outputs=(a, b), epoch=0)
    )
    torch.testing.assert_close(loss, F.cross_entropy(a, y) + F.cross_entropy(b, y))
    assert small_loss_indices(torch.tensor([3.0, 1.0, 2.0]), 0.9).tolist() == [1]
