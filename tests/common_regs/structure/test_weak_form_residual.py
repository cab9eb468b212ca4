from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.structure.weak_form_residual import (
    WeakFormResidual,
    dgno_pde_loss,
    integration_grid,
    latin_hypercube_centers,
    weak_form_residuals,
    wendland,
    wendland_derivative_over_r,
)

PI = math.pi


def _official_wendland(r: float, dim: int) -> tuple[float, float]:
    """φ and φ'(r)/r as written in the authors' ``_Wendland`` (l = ⌊d/2⌋ + 3), for one scalar r."""
    l = dim // 2 + 3  # noqa: E741 — the authors' name
    r = min(r, 1.0)
    v = (1 - r) ** (l + 2) * ((l**2 + 4 * l + 3) * r**2 + (3 * l + 6) * r + 3) / 3
    dv_over_r = (1 - r) ** (l + 1) * (-(l**3 + 8 * l**2 + 19 * l + 12) * r - (l**2 + 7 * l + 12)) / 3
    return v, dv_over_r


def test_wendland_is_the_official_function_with_unit_peak_compact_support_and_its_derivative() -> None:
    for dim, closed_form in ((1, lambda r: (1 - r) ** 5 * (24 * r**2 + 15 * r + 3) / 3),  # l = 3
                             (2, lambda r: (1 - r) ** 6 * (35 * r**2 + 18 * r + 3) / 3)):  # l = 4
        r = torch.linspace(0.0, 1.5, 151, dtype=torch.float64, requires_grad=True)
        phi = wendland(r, dim)
        (grad,) = torch.autograd.grad(phi.sum(), r)
        r, phi = r.detach(), phi.detach()
        inside = r < 1
        torch.testing.assert_close(phi[inside], closed_form(r[inside]), rtol=1e-13, atol=1e-15)
        assert float(phi[0]) == 1.0 and bool((phi[~inside] == 0).all()) and bool((phi[inside] > 0).all())
        torch.testing.assert_close(wendland_derivative_over_r(r[1:], dim) * r[1:], grad[1:], rtol=1e-10,
                                   atol=1e-13)


def test_integration_grid_is_the_official_mesh() -> None:
    torch.testing.assert_close(integration_grid(5, 1)[:, 0], torch.tensor([-1, -0.5, 0, 0.5, 1], dtype=torch.float64))
    grid = integration_grid(9, 2)
    hand = [(x, y) for y in np.linspace(-1, 1, 9) for x in np.linspace(-1, 1, 9) if math.hypot(x, y) < 1]
    assert grid.shape == (len(hand), 2) == (45, 2)
    assert sorted(map(tuple, grid.tolist())) == sorted(hand)


def _hand_residuals(centers: np.ndarray, radius: float, n: int) -> list[float]:
    """The official residual mean_k(a ∇u·∇ψ − f ψ) by loops, u = sin(πx)sin(πy) + x², a = 1 + x, f = 3 + y."""
    out = []
    for cx, cy in centers:
        terms = []
        for sy in np.linspace(-1, 1, n):
            for sx in np.linspace(-1, 1, n):
                rho = math.hypot(sx, sy)
                if rho >= 1:
                    continue
                x, y = cx + radius * sx, cy + radius * sy
                ux = PI * math.cos(PI * x) * math.sin(PI * y) + 2 * x
                uy = PI * math.sin(PI * x) * math.cos(PI * y)
                v, dv_over_r = _official_wendland(rho, 2)
                dvx, dvy = dv_over_r * sx / radius, dv_over_r * sy / radius
                terms.append((1 + x) * (ux * dvx + uy * dvy) - (3 + y) * v)
        out.append(sum(terms) / len(terms))
    return out


def test_2d_residual_equals_the_official_formula_by_hand() -> None:
    centers = np.array([[0.3, 0.4], [0.7, 0.55], [0.5, 0.5]])
    u = lambda p: torch.sin(PI * p[:, 0]) * torch.sin(PI * p[:, 1]) + p[:, 0] ** 2  # noqa: E731
    for radius, n in ((0.1, 9), (1e-4, 9), (0.05, 7)):
        r = weak_form_residuals(u, torch.tensor(centers), radius, lambda p: 1 + p[:, 0], lambda p: 3 + p[:, 1], n)
        torch.testing.assert_close(r, torch.tensor(_hand_residuals(centers, radius, n), dtype=torch.float64),
                                   rtol=1e-10, atol=1e-10)


def test_1d_residual_equals_the_official_formula_by_hand() -> None:
    # u = x³, a = 2, f = 1, grid linspace(−1, 1, 10) including the end points (the Burgers example's 1-D grid)
    radius, centers = 0.2, [0.3, 0.6]
    hand = []
    for c in centers:
        terms = []
        for s in np.linspace(-1, 1, 10):
            v, dv_over_r = _official_wendland(abs(s), 1)
            x = c + radius * s
            terms.append(2 * 3 * x**2 * dv_over_r * s / radius - 1 * v)
        hand.append(sum(terms) / len(terms))
    r = weak_form_residuals(lambda p: p[:, 0] ** 3, torch.tensor(centers, dtype=torch.float64)[:, None], radius, 2.0,
                            1.0, 10)
    torch.testing.assert_close(r, torch.tensor(hand, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_exact_solution_residual_vanishes_as_the_mesh_refines_and_a_perturbation_does_not() -> None:
    centers = torch.tensor([[0.3, 0.4], [0.6, 0.7]], dtype=torch.float64)
    exact = lambda x: torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1])  # noqa: E731 — −Δu = 2π²u
    source = lambda x: 2 * PI**2 * exact(x)  # noqa: E731

    def worst(a: float, n: int) -> float:
        return float(weak_form_residuals(exact, centers, 0.1, a, source, n).detach().abs().max())

    scale = worst(0.0, 9)  # the f·ψ part alone
    coarse, fine = worst(1.0, 9), worst(1.0, 201)
    assert fine < 1e-3 * scale and fine < coarse
    perturbed = weak_form_residuals(lambda x: exact(x) + 0.1 * x.pow(2).sum(1), centers, 0.1, 1.0, source, 201)
    assert float(perturbed.detach().abs().min()) > 100 * fine


def test_dgno_loss_is_norm_plus_top_k_squares() -> None:
    r = torch.tensor([3.0, -1.0, 2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(dgno_pde_loss(r, top_k=2), torch.tensor(math.sqrt(14.25) + 9 + 4, dtype=torch.float64))
    torch.testing.assert_close(dgno_pde_loss(r), torch.tensor(math.sqrt(14.25) + 14.25, dtype=torch.float64))
    torch.testing.assert_close(dgno_pde_loss(r, top_k=0), torch.tensor(math.sqrt(14.25), dtype=torch.float64))


def test_latin_hypercube_centers_fill_every_stratum_inside_the_shrunk_box() -> None:
    n, radius = 10, 0.05
    c = latin_hypercube_centers(n, [0.0, 0.0], [1.0, 2.0], radius, torch.Generator().manual_seed(0))
    lo, hi = torch.tensor([radius, radius]), torch.tensor([1 - radius, 2 - radius])
    assert bool(((c >= lo) & (c <= hi)).all())
    strata = ((c - lo) / (hi - lo) * n).floor().long()
    for d in range(2):
        assert sorted(strata[:, d].tolist()) == list(range(n))
    with pytest.raises(ValueError, match="radius"):
        latin_hypercube_centers(3, [0.0], [1.0], 0.5)


def test_loss_value_gradient_and_a_label_free_fit() -> None:
    """The official loss alone (boundary values built in) trains a small network toward the Poisson solution."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    u = lambda x: (x[:, 0] * (1 - x[:, 0])) * net(x)[:, 0]  # noqa: E731 — u(0) = u(1) = 0 built in
    source = lambda x: PI**2 * torch.sin(PI * x[:, 0])  # noqa: E731
    centers = torch.linspace(0.1, 0.9, 17, dtype=torch.float64)[:, None]
    term = WeakFormResidual(radius=0.1)
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None]
    error0 = float((u(grid).detach() - torch.sin(PI * grid[:, 0])).norm() / torch.sin(PI * grid[:, 0]).norm())
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        loss = term(TrainContext(model=net, extras={"u": u, "centers": centers, "f": source}))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    value = term.forward(u, centers, 1.0, source)
    r = term.last_residuals
    torch.testing.assert_close(value, r.norm() + r.pow(2).sum())  # 17 residuals < top_k = 1000: all of them
    error = float((u(grid).detach() - torch.sin(PI * grid[:, 0])).norm() / torch.sin(PI * grid[:, 0]).norm())
    assert error0 > 0.5 and error < 0.05
    likelihood = WeakFormResidual(radius=0.1, sigma=0.5, reduction="sum").forward(u, centers, 1.0, source)
    torch.testing.assert_close(likelihood, r.pow(2).sum() / (2 * 0.25))


def test_validation() -> None:
    with pytest.raises(ValueError, match="centers"):
        weak_form_residuals(lambda x: x[:, 0], torch.zeros(2, 3), 0.1)
    with pytest.raises(ValueError, match="radius"):
        WeakFormResidual(radius=0.0)
    with pytest.raises(ValueError, match="reduction"):
        WeakFormResidual(reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="u"):
        WeakFormResidual()(TrainContext(model=nn.Identity()))
