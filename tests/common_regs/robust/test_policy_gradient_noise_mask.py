"""Policy-gradient noise mask (#24) against the official code's rules, worked out by hand on tiny cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from common_regs.robust import PolicyNoiseMask, reinforce_loss
from common_regs.robust.policy_gradient_noise_mask import gaussian_blur


def _beta_logpdf(m: float, a: float, b: float) -> float:
    return (a - 1) * math.log(m) + (b - 1) * math.log(1 - m) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


class _Fixed(nn.Module):
    """A policy whose raw log-parameters are x @ W (no bias), W chosen by the test."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight).reshape(x.shape[0], 2, -1)


def test_joint_objective_and_its_gradients_by_hand() -> None:
    lp = torch.tensor([[0.5, -1.0, 0.2], [1.5, 0.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ce = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    loss = reinforce_loss(lp, ce)
    rows = [[0.5, -1.0, 0.2], [1.5, 0.0, -2.0]]
    lse = [math.log(sum(math.exp(v) for v in row)) for row in rows]
    assert float(loss.detach()) == pytest.approx(0.7 * sum(lse) / 2, abs=1e-12)
    loss.backward()
    assert float(ce.grad) == pytest.approx(sum(lse) / 2, abs=1e-12)  # classifier gradient scaled by mean LSE
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            assert float(lp.grad[i, j]) == pytest.approx(0.7 * math.exp(v - lse[i]) / 2, abs=1e-12)


def test_flat_mask_parameters_base_update_and_log_density_by_hand() -> None:
    torch.manual_seed(0)
    weight = torch.tensor([[0.2, -0.4, 1.0, 0.3], [0.5, 0.1, -0.2, 0.6]])  # x (B, 2) -> (B, 2, 2)
    module = PolicyNoiseMask(policy=_Fixed(weight), num_features=2)
    base_a, base_b = module.base_alpha.clone().tolist(), module.base_beta.clone().tolist()
    x = torch.tensor([[1.0, 2.0], [-0.5, 0.5], [3.0, 1.0]])
    out = module(x)
    raw = (x @ weight).reshape(3, 2, 2).tolist()
    mask = module.last_mask
    assert mask is not None and module.last_log_prob is not None
    torch.testing.assert_close(out, x * mask)
    for i in range(3):
        for j in range(2):
            a = 0.9 * base_a[j] + 0.1 * raw[i][0][j]
            b = 0.9 * base_b[j] + 0.1 * raw[i][1][j]
            expected = _beta_logpdf(float(mask[i, j]), math.exp(a), math.exp(b))
            assert float(module.last_log_prob[i, j].detach()) == pytest.approx(expected, rel=1e-4, abs=1e-4)
    for j in range(2):
        mean_a = sum(raw[i][0][j] for i in range(3)) / 3
        mean_b = sum(raw[i][1][j] for i in range(3)) / 3
        assert float(module.base_alpha[j]) == pytest.approx(0.99 * base_a[j] + 0.01 * mean_a, abs=1e-6)
        assert float(module.base_beta[j]) == pytest.approx(0.99 * base_b[j] + 0.01 * mean_b, abs=1e-6)
    assert torch.equal(module.eval()(x), x)  # the policy is dropped at inference


def test_gaussian_blur_matches_numpy_loops() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((1, 1, 5, 6))
    k, sigma = 3, 1.0
    xs = np.array([-1.0, 0.0, 1.0])
    k1 = np.exp(-0.5 * (xs / sigma) ** 2)
    k1 /= k1.sum()
    padded = np.pad(img[0, 0], 1, mode="reflect")
    expected = np.zeros((5, 6))
    for r in range(5):
        for c in range(6):
            expected[r, c] = sum(k1[u] * k1[v] * padded[r + u, c + v] for u in range(3) for v in range(3))
    got = gaussian_blur(torch.from_numpy(img), k, sigma)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_image_mask_is_upsampled_nearest_then_blurred() -> None:
    torch.manual_seed(0)
    policy = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Unflatten(1, (2, 4))).double()
    module = PolicyNoiseMask(policy=policy, grid=2, kernel_size=3, sigma=1.0)
    x = torch.ones(2, 1, 4, 4, dtype=torch.float64)
    out = module(x)
    mask = module.last_mask
    assert mask is not None
    xs = np.array([-1.0, 0.0, 1.0])
    k1 = np.exp(-0.5 * xs**2)
    k1 /= k1.sum()
    for i in range(2):
        cells = mask[i].reshape(2, 2).double().numpy()
        up = np.array([[cells[r // 2, c // 2] for c in range(4)] for r in range(4)])  # nearest, 2× per side
        padded = np.pad(up, 1, mode="reflect")
        expected = np.array([[sum(k1[u] * k1[v] * padded[r + u, c + v] for u in range(3) for v in range(3))
                              for c in range(4)] for r in range(4)])
        np.testing.assert_allclose(out[i, 0].numpy(), expected, atol=1e-6)


def test_joint_loss_trains_policy_and_classifier_and_validates() -> None:
    torch.manual_seed(0)
    module = PolicyNoiseMask(num_features=3)
    classifier = nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    ce = nn.functional.cross_entropy(classifier(module(x)), y)
    module.joint_loss(ce).backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.policy.parameters()
               if p.dim() == 2)
    assert classifier.weight.grad is not None and float(classifier.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="forward"):
        PolicyNoiseMask(num_features=2).joint_loss(torch.tensor(0.0))
    with pytest.raises(ValueError, match="scalar"):
        module.joint_loss(torch.zeros(4))
    with pytest.raises(ValueError, match="exactly one"):
        PolicyNoiseMask(num_features=2, grid=2)
    with pytest.raises(ValueError, match="policy"):
        PolicyNoiseMask(grid=4)
