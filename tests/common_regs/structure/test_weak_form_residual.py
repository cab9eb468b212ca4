from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.structure.weak_form_residual import (
    WeakFormResidual,
    weak_form_residuals,
    wendland_c2,
    wendland_c2_derivative,
)

PI = math.pi


def test_wendland_function_support_peak_and_derivative() -> None:
    r = torch.linspace(0, 1.5, 301, dtype=torch.float64, requires_grad=True)
    phi = wendland_c2(r)
    (grad,) = torch.autograd.grad(phi.sum(), r)
    phi = phi.detach()
    assert float(phi[0]) == 1.0 and float(phi.max()) == 1.0
    assert bool((phi[r.detach() >= 1] == 0).all()) and bool((phi[r.detach() < 1] > 0).all())
    torch.testing.assert_close(grad, wendland_c2_derivative(r.detach()))
    # ∫₀¹ φ = 1/3 and ∫₀¹ φ(ρ)ρ dρ = 1/14 (the hand values the residual tests below rely on)
    x, w = (torch.tensor(v, dtype=torch.float64) for v in np.polynomial.legendre.leggauss(10))
    assert float((w * wendland_c2((x + 1) / 2)).sum() / 2) == pytest.approx(1 / 3, abs=1e-14)
    assert float((w * wendland_c2((x + 1) / 2) * (x + 1) / 2).sum() / 2) == pytest.approx(1 / 14, abs=1e-14)


def test_1d_exact_solution_has_zero_residual_and_a_perturbation_the_hand_value() -> None:
    centers = torch.linspace(0.2, 0.8, 7, dtype=torch.float64)[:, None]
    radius = 0.15
    exact = lambda x: torch.sin(PI * x[:, 0])  # noqa: E731 — −u'' = π² sin(πx)
    source = lambda x: PI**2 * torch.sin(PI * x[:, 0])  # noqa: E731
    r = weak_form_residuals(exact, centers, radius, 1.0, source)
    assert float(r.abs().max()) < 1e-9
    delta = 0.01  # u + δx²: Δr_j = δ∫2xψ' = −2δ∫ψ = −2δ·(2R/3)
    r_pert = weak_form_residuals(lambda x: exact(x) + delta * x[:, 0] ** 2, centers, radius, 1.0, source)
    torch.testing.assert_close(r_pert, torch.full((7,), -4 * delta * radius / 3, dtype=torch.float64), atol=1e-9,
                               rtol=0)


def test_1d_variable_coefficient_polynomial_solution_is_exact() -> None:
    a = lambda x: 1 + x[:, 0]  # noqa: E731
    u = lambda x: x[:, 0] ** 2  # noqa: E731 — −(a u')' = −(2x + 2x²)' = −(2 + 4x)
    f = lambda x: -(2 + 4 * x[:, 0])  # noqa: E731
    r = weak_form_residuals(u, torch.tensor([[0.3], [0.6]], dtype=torch.float64), 0.2, a, f)
    assert float(r.abs().max()) < 1e-13


def test_2d_exact_solution_and_perturbation() -> None:
    g = torch.Generator().manual_seed(0)
    centers = 0.25 + 0.5 * torch.rand(5, 2, generator=g, dtype=torch.float64)
    radius = 0.2
    exact = lambda x: torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1])  # noqa: E731
    source = lambda x: 2 * PI**2 * exact(x)  # noqa: E731
    r = weak_form_residuals(exact, centers, radius, 1.0, source, n_quad=24)
    assert float(r.abs().max()) < 1e-8
    delta = 0.01  # u + δ‖x‖²: Δr_j = −δ∫Δ‖x‖²ψ = −4δ·πR²/7
    r_pert = weak_form_residuals(lambda x: exact(x) + delta * x.pow(2).sum(1), centers, radius, 1.0, source)
    torch.testing.assert_close(r_pert, torch.full((5,), -4 * PI * delta * radius**2 / 7, dtype=torch.float64),
                               atol=1e-8, rtol=0)


def test_loss_value_gradient_and_a_label_free_fit() -> None:
    """The residual loss alone (plus the boundary values) trains a small network toward the Poisson solution."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    u = lambda x: (x[:, 0] * (1 - x[:, 0])) * net(x)[:, 0]  # noqa: E731 — u(0) = u(1) = 0 built in
    source = lambda x: PI**2 * torch.sin(PI * x[:, 0])  # noqa: E731
    centers = torch.linspace(0.1, 0.9, 17, dtype=torch.float64)[:, None]
    term = WeakFormResidual(radius=0.1, sigma=0.01)
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None]
    error0 = float((u(grid) - torch.sin(PI * grid[:, 0])).norm() / torch.sin(PI * grid[:, 0]).norm())
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        loss = term(TrainContext(model=net, extras={"u": u, "centers": centers, "f": source}))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    value = term.forward(u, centers, 1.0, source)
    torch.testing.assert_close(value, term.last_residuals.pow(2).sum() / (2 * 0.01**2))
    error = float((u(grid) - torch.sin(PI * grid[:, 0])).norm() / torch.sin(PI * grid[:, 0]).norm())
    assert error0 > 0.5 and error < 0.05


def test_validation() -> None:
    with pytest.raises(ValueError, match="centers"):
        weak_form_residuals(lambda x: x[:, 0], torch.zeros(2, 3), 0.1)
    with pytest.raises(ValueError, match="radius"):
        WeakFormResidual(radius=0.0)
    with pytest.raises(ValueError, match="u"):
        WeakFormResidual()(TrainContext(model=nn.Identity()))
