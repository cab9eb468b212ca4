"""Conditioning callback (#45): records κ and η·λ_max in a GD loop; ill-conditioning at p = n stops GD short."""

from __future__ import annotations

import pytest
import torch

from common_regs.dynamics import ConditioningMonitor
from common_regs.dynamics.double_descent import covariance_spectrum


def test_monitor_values_by_hand() -> None:
    # Φ = diag(1, 1, 2, 2), n = 4: ΦᵀΦ/n = diag(¼, ¼, 1, 1) → κ = 4, λ_max = 1; a zero column leaves κ unchanged
    phi = torch.diag(torch.tensor([1.0, 1.0, 2.0, 2.0, 0.0], dtype=torch.float64))[:4]
    out = ConditioningMonitor()(0, phi, lr=0.3)
    assert out == pytest.approx({"condition_number": 4.0, "lambda_max": 1.0, "effective_lr": 0.3})


def test_monitor_in_a_gd_run_explains_a_missing_peak() -> None:
    """Random ReLU features, n = 40: at p = n the problem is ill-conditioned, GD (η = 1/λ_max, 1000 steps) stays far
    from the interpolating minimum and its test error far below the min-norm peak; at p = 4n it reaches it."""
    g = torch.Generator().manual_seed(0)
    n, dim = 40, 20
    teacher = torch.randn(dim, generator=g, dtype=torch.float64)
    x, x_test = (torch.randn(m, dim, generator=g, dtype=torch.float64) for m in (n, 1000))
    y = x @ teacher / dim**0.5 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    y_test = x_test @ teacher / dim**0.5
    runs = {}
    for p in (n, 4 * n):
        proj = torch.randn(dim, p, generator=g, dtype=torch.float64)
        phi, phi_test = torch.relu(x @ proj) / p**0.5, torch.relu(x_test @ proj) / p**0.5
        monitor, lr = ConditioningMonitor(every=100), 1.0 / float(covariance_spectrum(phi)[0])
        w = torch.zeros(p, dtype=torch.float64)
        for step in range(1000):
            monitor(step, phi, lr=lr)
            w = w - lr * phi.T @ (phi @ w - y) / n
        min_norm = torch.linalg.pinv(phi) @ y
        runs[p] = {"kappa": monitor.history[-1]["condition_number"], "steps": len(monitor.history),
                   "train": float((phi @ w - y).pow(2).mean()), "test": float((phi_test @ w - y_test).pow(2).mean()),
                   "peak": float((phi_test @ min_norm - y_test).pow(2).mean())}
    assert runs[n]["steps"] == 10 and monitor.history[0]["effective_lr"] == pytest.approx(1.0)
    assert runs[n]["kappa"] > 100 * runs[4 * n]["kappa"]
    assert runs[n]["train"] > 100 * runs[4 * n]["train"]  # the optimizer does not reach the low-loss minimum...
    assert runs[n]["test"] < 0.1 * runs[n]["peak"]  # ...so the double-descent peak does not show
    assert runs[4 * n]["test"] == pytest.approx(runs[4 * n]["peak"], rel=0.05)  # well conditioned: it does
