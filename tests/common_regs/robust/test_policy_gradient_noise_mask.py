"""Policy-gradient noise mask (#24): REINFORCE is unbiased for the Beta policy; identity at eval."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Beta

from common_regs.robust import PolicyNoiseMask, reinforce_loss


def test_reinforce_estimate_matches_analytic_gradient_of_expected_reward() -> None:
    torch.manual_seed(0)
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    samples = Beta(a.detach(), b.detach()).sample((200000,))
    loss = reinforce_loss(Beta(a, b).log_prob(samples), reward=samples)  # R(m) = m, E[R] = a/(a+b)
    loss.backward()
    assert float(-a.grad) == pytest.approx(3.0 / 25.0, abs=0.01)  # ∂/∂a a/(a+b) = b/(a+b)²
    assert float(-b.grad) == pytest.approx(-2.0 / 25.0, abs=0.01)


def test_training_noises_input_eval_is_identity_and_policy_learns_from_rewards() -> None:
    torch.manual_seed(0)
    module = PolicyNoiseMask(num_features=3, noise_scale=1.0)
    x = torch.ones(4, 3)
    noised = module(x)
    assert noised.shape == x.shape and not torch.equal(noised, x)
    policy_loss = module.policy_loss(torch.rand(4))
    policy_loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.policy.parameters())
    assert torch.equal(module.eval()(x), x)
    with pytest.raises(ValueError, match="forward"):
        PolicyNoiseMask(num_features=2).policy_loss(torch.zeros(1))
