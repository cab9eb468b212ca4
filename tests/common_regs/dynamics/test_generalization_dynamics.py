"""Advani & Saxe (#47) prescriptions acting in small GD runs: small initial weights, early stopping at n = d."""

from __future__ import annotations

import pytest
import torch

from common_regs.dynamics import LinearGradientFlow


def _gd_test_errors(x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, teacher: torch.Tensor, steps: int,
                    lr: float, noise: float) -> list[float]:
    """Plain full-batch GD on ½‖Xw − y‖²/n; test error ‖w − w̄‖² + σ² (isotropic test inputs) after every step."""
    w, errors = w0.clone(), []
    for _ in range(steps):
        w = w - lr * x.T @ (x @ w - y) / len(x)
        errors.append(float((w - teacher).pow(2).sum()) + noise**2)
    return errors


def test_large_initial_weights_leave_an_error_floor_in_the_frozen_subspace() -> None:
    g = torch.Generator().manual_seed(3)
    n, d, noise = 20, 40, 0.5  # n < d: a 20-dim null space that gradient descent never moves
    teacher = torch.randn(d, generator=g, dtype=torch.float64) / d**0.5
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ teacher + noise * torch.randn(n, generator=g, dtype=torch.float64)
    direction = torch.randn(d, generator=g, dtype=torch.float64) * 3 / d**0.5
    finals = []
    for scale in (0.0, 0.3, 1.0):
        w0 = scale * direction
        simulated = _gd_test_errors(x, y, w0, teacher, steps=600, lr=0.05, noise=noise)[-1]
        predicted = LinearGradientFlow(noise=noise)(x, y, w0, teacher, [30.0])["test_error"][0]
        assert simulated == pytest.approx(predicted, rel=1e-2)
        finals.append(simulated)
    assert finals[0] < finals[1] < finals[2] and finals[2] > 4 * finals[0]  # start small: the paper's advice


def test_early_stopping_beats_training_to_convergence_when_n_equals_d() -> None:
    g = torch.Generator().manual_seed(4)
    n = d = 30
    noise = 0.5
    teacher = torch.randn(d, generator=g, dtype=torch.float64) / d**0.5
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ teacher + noise * torch.randn(n, generator=g, dtype=torch.float64)
    w0 = torch.zeros(d, dtype=torch.float64)
    lr, steps = 0.05, 4000
    simulated = _gd_test_errors(x, y, w0, teacher, steps=steps, lr=lr, noise=noise)
    times = [lr * (k + 1) for k in range(steps)]
    predicted = LinearGradientFlow(noise=noise)(x, y, w0, teacher, times)["test_error"]
    best = min(range(steps), key=simulated.__getitem__)
    assert abs(best - min(range(steps), key=predicted.__getitem__)) <= 2  # the closed form gives the stopping time
    assert 0 < best < steps - 1 and simulated[best] < 0.5 * simulated[-1]  # overtraining at n = d
