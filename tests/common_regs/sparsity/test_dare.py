"""DARE/DAREx (#62): unbiasedness, variance, q-bias, PEFT equivalence, AdamR-L2 pulls back to θ_pre."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.sparsity.dare import DARE, DeltaL2, dare_delta, output_change_score


def test_mean_and_variance_of_rescaled_delta() -> None:
    delta = torch.full((200_000,), 0.5)
    out = dare_delta(delta, 0.9, generator=torch.Generator().manual_seed(0))
    assert float(out.mean()) == pytest.approx(0.5, rel=0.03)
    assert float(out.var()) == pytest.approx(0.25 * 0.9 / 0.1, rel=0.03)
    biased = dare_delta(delta, 0.9, q=0.2, generator=torch.Generator().manual_seed(0))
    assert float(biased.mean() - delta.mean()) == pytest.approx(((1 - 0.9) / 0.2 - 1) * 0.5, rel=0.05)


def test_equals_peft_random_pruning() -> None:
    merge_utils = pytest.importorskip("peft.utils.merge_utils", reason="peft not installed: no reference to compare")
    delta = torch.randn(64, 32)
    torch.manual_seed(3)
    expected = merge_utils.prune(delta, density=0.3, method="random", rescale=True)
    torch.manual_seed(3)
    torch.testing.assert_close(dare_delta(delta, 0.7), expected)


def test_apply_and_select_q() -> None:
    torch.manual_seed(0)
    base = nn.Linear(16, 4)
    tuned = nn.Linear(16, 4)
    tuned.load_state_dict({k: v + 0.01 * torch.randn_like(v) for k, v in base.state_dict().items()})
    pruned = DARE(drop_rate=0.5, seed=0).apply(nn.Linear(16, 4).requires_grad_(False), base)
    del pruned
    model = nn.Linear(16, 4)
    model.load_state_dict(tuned.state_dict())
    DARE(drop_rate=0.75).apply(model, base)
    delta_after = model.weight.detach() - base.weight.detach()
    kept = delta_after != 0
    torch.testing.assert_close(delta_after[kept], 4 * (tuned.weight.detach() - base.weight.detach())[kept])
    x = torch.randn(64, 16)
    best, scores = DARE(drop_rate=0.75).select_q(tuned, base, output_change_score(x, tuned), [0.05, 0.25, 1.0, 20.0])
    assert best in scores and scores[best] == max(scores.values())
    assert scores[20.0] < scores[best]


def test_delta_l2_with_zero_task_gradient_returns_to_anchor() -> None:
    model = nn.Linear(3, 2)
    anchor = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        model.weight.add_(1.0)
    reg = DeltaL2(weight=1.0, anchor=anchor)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        reg(TrainContext(model=model)).backward()
        opt.step()
    torch.testing.assert_close(model.weight.detach(), anchor["weight"], atol=1e-6, rtol=0)
