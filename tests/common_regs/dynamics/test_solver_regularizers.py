from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.dynamics import GlobalSolverRegularizer, LocalSolverRegularizer
from common_regs.dynamics._rk import dopri5_step, integrate, rk_step, scaled_rms
from common_regs.dynamics.global_solver_regularizer import solve_with_heuristics, solver_heuristic_penalty
from common_regs.dynamics.local_solver_regularizer import (
    local_error_penalty,
    local_heuristic,
    sample_step,
    sample_time,
    time_grid,
)

torchdiffeq = pytest.importorskip("torchdiffeq", reason="torchdiffeq is the reference ODE solver")

# OrdinaryDiffEq's Tsit5 tableau (Tsitouras 2011), transcribed here independently of regkit's ``_rk``
TS_C = [0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0]
TS_A = [[], [0.161], [-0.008480655492356989, 0.335480655492357],
        [2.897153057105493, -6.359448489975075, 4.3622954328695815],
        [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525],
        [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383],
        [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774]]
TS_BTILDE = [-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
             0.5823571654525552, -0.45808210592918697, 0.015151515151515152]
TSIT5_STABILITY = 3.5068  # OrdinaryDiffEq.alg_stability_size(Tsit5())


def _rms(v: np.ndarray) -> float:
    return float(np.sqrt(np.mean(v**2)))


def _hand_tsit5_step(f, t: float, y: np.ndarray, h: float, rtol: float, atol: float  # noqa: ANN001
                     ) -> tuple[np.ndarray, float, float, float]:
    """OrdinaryDiffEq's Tsit5 ``perform_step`` by loops: ``(u, EEst, eigen_est, condition number of utilde)``.

    ``utilde = h Σ b̃ᵢkᵢ`` cancels heavily (b̃ sums to 0), so two correct float64 evaluations in a different order
    agree only to ~eps·cond with cond = RMS(h Σ|b̃ᵢ||kᵢ| / scale) / EEst: the comparisons below use that tolerance.
    """
    ks = [f(t, y)]
    stages = [y]
    for i in range(1, 7):
        stage = y + h * sum(TS_A[i][j] * ks[j] for j in range(i))
        stages.append(stage)
        ks.append(f(t + TS_C[i] * h, stage))
    u, g6 = stages[6], stages[5]
    utilde = h * sum(b * k for b, k in zip(TS_BTILDE, ks, strict=True))
    scale = atol + np.maximum(np.abs(y), np.abs(u)) * rtol
    eest = _rms(utilde / scale)
    eigen = _rms(ks[6] - ks[5]) / _rms(u - g6)
    cond = _rms(h * sum(abs(b) * np.abs(k) for b, k in zip(TS_BTILDE, ks, strict=True)) / scale) / eest
    return u, eest, eigen, cond


def test_integrator_matches_matrix_exponential_and_torchdiffeq() -> None:
    a = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    reference = torchdiffeq.odeint(lambda t, y: y @ a.T, y0, torch.tensor([0.0, 3.0], dtype=torch.float64),
                                   rtol=1e-7, atol=1e-9, method="dopri5")[-1]
    for method in ("dopri5", "tsit5"):
        y1, stats = integrate(lambda t, y: y @ a.T, y0, 0.0, 3.0, rtol=1e-7, atol=1e-9, method=method)
        torch.testing.assert_close(y1[0], torch.linalg.matrix_exp(3 * a) @ y0[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(y1, reference, atol=1e-6, rtol=0)
        assert stats.accepted > 10 and stats.nfe >= 6 * stats.accepted


def test_error_estimate_order_and_stiffness_and_constant_dynamics() -> None:
    one = torch.ones(1, dtype=torch.float64)
    for method in ("dopri5", "tsit5"):
        errs = [float(rk_step(lambda t, y: y, 0.0, one, h, method=method)[1].abs()) for h in (0.1, 0.05)]
        assert errs[0] / errs[1] == pytest.approx(2**5, rel=0.05)  # embedded (4th-order) error O(h⁵)
        assert float(rk_step(lambda t, y: torch.zeros_like(y), 0.0, one, 0.3, method=method)[1].abs()) == 0.0
        eigen = rk_step(lambda t, y: -7.0 * y, 0.0, torch.ones(3, dtype=torch.float64), 0.05, method=method)[2]
        assert float(eigen) == pytest.approx(7.0, rel=1e-9)  # eigen_est = |λ| on y' = λy
    exact = torch.exp(torch.tensor([-0.1], dtype=torch.float64))
    torch.testing.assert_close(dopri5_step(lambda t, y: -y, 0.0, one, 0.1)[0], exact, atol=1e-8, rtol=0)


def test_global_penalty_equals_the_official_aggregate_by_hand() -> None:
    """mean_j EEst_j·h_j, max_j eigen_j/ρ and mean_j(EEst_j·h_j + 0.1·eigen_j/ρ) over the accepted Tsit5 steps."""
    rtol, atol = 1e-6, 1e-7

    def f_np(t: float, y: np.ndarray) -> np.ndarray:
        return -1.5 * y**3 + math.sin(3 * t) * y

    y0 = torch.tensor([0.9, -0.4], dtype=torch.float64)
    _, stats = solve_with_heuristics(lambda t, y: -1.5 * y**3 + torch.sin(3 * t) * y, y0, 0.0, 2.0, rtol=rtol,
                                     atol=atol)
    y, errors, stiff, cond = y0.numpy(), [], [], 1.0
    for t, h in zip(stats.times, stats.steps, strict=True):
        y, eest, eigen, step_cond = _hand_tsit5_step(f_np, t, y, h, rtol, atol)
        errors.append(eest * h)
        stiff.append(eigen / TSIT5_STABILITY)
        cond = max(cond, step_cond)
    assert stats.accepted == len(errors) > 5
    cases = {"error": np.mean(errors), "stiffness": np.max(stiff),
             "error_stiffness": np.mean(np.array(errors) + 0.1 * np.array(stiff))}
    for heuristic, hand in cases.items():
        value = GlobalSolverRegularizer(heuristic=heuristic)(TrainContext(model=nn.Identity(),
                                                                         extras={"solver_stats": stats}))
        # the state itself is integrated in a different order too: allow 100 steps' worth of rounding on top
        torch.testing.assert_close(value, torch.tensor(hand, dtype=torch.float64), rtol=100 * 2.2e-16 * cond, atol=0)
    linear = solve_with_heuristics(lambda t, y: -2.0 * y, y0, rtol=rtol, atol=atol)[1]
    assert float(solver_heuristic_penalty(linear, "stiffness")) == pytest.approx(2.0 / TSIT5_STABILITY, rel=1e-9)
    with pytest.raises(ValueError, match="solver_stats"):
        GlobalSolverRegularizer()(TrainContext(model=nn.Identity()))
    with pytest.raises(ValueError, match="heuristic"):
        GlobalSolverRegularizer(heuristic="sum")  # type: ignore[arg-type]


def _penalty_at_fixed_steps(func, y0: torch.Tensor, stats, rtol: float, atol: float) -> torch.Tensor:  # noqa: ANN001
    """mean_j (EEst_j·h_j + 0.1·eigen_j/ρ) along a given Tsit5 step sequence, without step-size control."""
    y, terms = y0, []
    for t, h in zip(stats.times, stats.steps, strict=True):
        y_next, error, eigen, _, _ = rk_step(func, t, y, h, method="tsit5")
        terms.append(scaled_rms(error, y, y_next, rtol, atol) * abs(h) + 0.1 * eigen / TSIT5_STABILITY)
        y = y_next
    return torch.stack(terms).mean()


def test_global_penalty_gradient_matches_finite_difference() -> None:
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    rtol = atol = 1e-4

    def field(th: torch.Tensor):  # noqa: ANN202
        return lambda t, y: -th * y**3

    def at(th: float) -> torch.Tensor:
        return _penalty_at_fixed_steps(field(torch.tensor(th, dtype=torch.float64)), y0, stats, rtol, atol)

    theta = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    _, stats = solve_with_heuristics(field(theta), y0, rtol=rtol, atol=atol)
    value = solver_heuristic_penalty(stats, "error_stiffness")
    (grad,) = torch.autograd.grad(value, theta)
    # Step sizes are controller decisions and are not differentiated, so the gradient is d/dθ of the penalty along
    # the solve's own step sequence: compare with a central difference of that fixed-step penalty.
    torch.testing.assert_close(at(1.3), value.detach(), rtol=1e-12, atol=0)  # the replay is the same solve
    eps = 1e-6
    finite_difference = (at(1.3 + eps) - at(1.3 - eps)) / (2 * eps)
    # float64: truncation (~eps² times the third derivative) and rounding (~1e-16·penalty/eps) are both below 1e-9
    # here, far inside rtol 1e-6
    torch.testing.assert_close(grad, finite_difference, rtol=1e-6, atol=0)


def _hand_initial_dt(f, t: float, y: np.ndarray, dtmax: float, rtol: float, atol: float) -> float:  # noqa: ANN001
    """OrdinaryDiffEq ``ode_determine_initdt`` (out-of-place) for an order-5 method."""
    sk = atol + np.abs(y) * rtol
    f0 = f(t, y)
    d0, d1 = _rms(y / sk), _rms(f0 / sk)
    dt0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else (d0 / d1) / 100
    dt0 = min(dt0, dtmax)
    f1 = f(t + dt0, y + dt0 * f0)
    d2 = _rms((f1 - f0) / sk) / dt0
    m = max(d1, d2)
    dt1 = max(1e-6, dt0 * 1e-3) if m <= 1e-15 else 10.0 ** (-(2 + math.log10(m)) / 5)
    return min(100 * dt0, dt1, dtmax)


def test_local_heuristic_equals_the_official_step_by_hand() -> None:
    """``LocalRegNeuralDE.jl``: a fresh Tsit5 integrator at (t_j, y(t_j)), its automatic dt, one step."""
    rtol, atol, t, t_end, theta0 = 1e-6, 1e-7, 0.3, 1.0, 1.7
    y = np.array([0.8, -0.5, 0.2])

    def f_np(th: float):  # noqa: ANN202
        return lambda s, v: -th * v**3 + math.sin(s) * v

    h = _hand_initial_dt(f_np(theta0), t, y, t_end - t, rtol, atol)
    _, eest, eigen, cond = _hand_tsit5_step(f_np(theta0), t, y, h, rtol, atol)
    assert 10 * 2.2e-16 * cond < 1e-6  # the tolerance below stays meaningful
    theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    state = torch.tensor(y, requires_grad=True)
    func = lambda s, v: -theta * v**3 + torch.sin(s) * v  # noqa: E731
    value = local_heuristic(func, t, state, t_end, rtol=rtol, atol=atol)
    torch.testing.assert_close(value, torch.tensor(eest * h, dtype=torch.float64), rtol=10 * 2.2e-16 * cond, atol=0)
    stiffness = local_heuristic(func, t, state, t_end, heuristic="stiffness", rtol=rtol, atol=atol)
    torch.testing.assert_close(stiffness, torch.tensor(eigen / TSIT5_STABILITY, dtype=torch.float64), rtol=1e-9,
                               atol=0)
    # the official integrator is built outside AD: y, k1 = f(y) and dt are constants, stages 2-7 carry ∂/∂θ
    grad_theta, grad_state = torch.autograd.grad(value, [theta, state], allow_unused=True)
    assert grad_state is None
    k1_fixed = f_np(theta0)(t, y)

    def frozen(th: float) -> float:
        f = f_np(th)
        ks, stages = [k1_fixed], [y]
        for i in range(1, 7):
            stages.append(y + h * sum(TS_A[i][j] * ks[j] for j in range(i)))
            ks.append(f(t + TS_C[i] * h, stages[-1]))
        utilde = h * sum(b * k for b, k in zip(TS_BTILDE, ks, strict=True))
        return _rms(utilde / (atol + np.maximum(np.abs(y), np.abs(stages[6])) * rtol)) * h

    # with k1 frozen at θ0 the embedded error grows like |Δθ|·1e5 relative to itself (curvature on a scale
    # Δθ ~ 1e-5), so the central difference needs eps ≪ 1e-5: at 1e-8 truncation is ~1e-6 relative and rounding
    # (~eps_mach·cond·value / eps) ~1e-5 relative
    eps = 1e-8
    assert float(grad_theta) == pytest.approx((frozen(theta0 + eps) - frozen(theta0 - eps)) / (2 * eps), rel=1e-4)
    # the step never passes t_end: near the end the automatic dt is capped at t_end − t
    near_end = local_heuristic(func, 0.999, state, t_end, rtol=rtol, atol=atol).detach()
    h_end = _hand_initial_dt(f_np(theta0), 0.999, y, 0.001, rtol, atol)
    _, eest_end, _, cond_end = _hand_tsit5_step(f_np(theta0), 0.999, y, h_end, rtol, atol)
    assert h_end == pytest.approx(0.001) and float(near_end) == pytest.approx(eest_end * h_end, rel=10 * 2.2e-16
                                                                                * cond_end)


def _local_penalty(rate: float, t_s: float, y0: torch.Tensor) -> float:
    """Local error penalty of y' = -rate·sin(3y) at t_s, its state taken from torchdiffeq as documented."""
    f = lambda t, y: -rate * torch.sin(3 * y)  # noqa: E731
    times, index = time_grid(0.0, t_s, 1.0)
    y_s = torchdiffeq.odeint(f, y0, times, rtol=1e-8, atol=1e-8)[index]
    term = LocalSolverRegularizer(rtol=1e-6, atol=1e-6)
    return float(term(TrainContext(model=nn.Identity(), extras={"ode_func": f, "ode_samples": [(t_s, y_s)],
                                                                "ode_t_end": 1.0})))


def test_local_penalty_uses_torchdiffeq_state_and_shrinks_for_easier_dynamics() -> None:
    y0 = torch.tensor([1.0, -1.0], dtype=torch.float64)
    # one step from the state at t = 0.05: the automatic dt adapts to the field, so the scaled error estimate times
    # dt still falls when the dynamics are 4x slower (they reach the flat region of sin(3y) later)
    hard_value, easy_value = _local_penalty(4.0, 0.05, y0), _local_penalty(1.0, 0.05, y0)
    assert 0 < easy_value < hard_value
    fixed_h = [float(local_error_penalty(lambda t, y, r=r: -r * torch.sin(3 * y), 0.05, y0, 0.1, rtol=1e-6,
                                         atol=1e-6)) for r in (4.0, 1.0)]
    assert 0 < fixed_h[1] < 0.1 * fixed_h[0]  # the same step h on 4x slower dynamics: ~(h·rate)⁵ smaller
    theta = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    f = lambda t, y: -theta * torch.sin(3 * y)  # noqa: E731
    y_s = torchdiffeq.odeint(f, y0, torch.tensor([0.0, 0.3], dtype=torch.float64))[-1]
    value = LocalSolverRegularizer()(TrainContext(model=nn.Identity(), extras={"ode_func": f, "ode_samples": [
        (0.3, y_s)], "ode_t_end": 1.0}))
    (grad,) = torch.autograd.grad(value, theta)
    assert torch.isfinite(grad) and float(grad) != 0.0
    with pytest.raises(ValueError, match="ode_t_end"):
        LocalSolverRegularizer()(TrainContext(model=nn.Identity(), extras={"ode_func": f,
                                                                           "ode_samples": [(0.3, y_s)]}))


def test_unbiased_draws_are_uniform_on_the_interval() -> None:
    gen = torch.Generator().manual_seed(0)
    draws = np.array([sample_time(0.5, 2.5, gen) for _ in range(4000)])
    assert draws.min() >= 0.5 and draws.max() < 2.5
    assert abs(draws.mean() - 1.5) < 0.05 and abs(draws.var() - 4 / 12) < 0.03  # U(a, b): mean, (b − a)²/12
    term = LocalSolverRegularizer()
    f = lambda t, y: -4.0 * torch.sin(3 * y)  # noqa: E731
    assert 0.0 <= term.sample(f, torch.ones(2, dtype=torch.float64), 0.0, 1.0, gen) < 1.0


def test_sampled_first_step_state_comes_from_the_documented_grid() -> None:
    # "biased": the first accepted step starts at t0, so t_j = t0 is drawn about once in `accepted` draws; the
    # documented recipe (odeint over `time_grid`) must work for it as for every other draw
    gen = torch.Generator().manual_seed(0)
    y0 = torch.tensor([1.0, -1.0], dtype=torch.float64)
    f = lambda t, y: -4.0 * torch.sin(3 * y)  # noqa: E731
    draws = {sample_step(f, y0, 0.0, 1.0, rtol=1e-5, atol=1e-5, generator=gen)[0] for _ in range(100)}
    assert any(t_s == 0.0 for t_s in draws) and any(t_s > 0.0 for t_s in draws)
    for t_s in sorted(draws):
        times, index = time_grid(0.0, t_s, 1.0)
        y_s = torchdiffeq.odeint(f, y0, times)[index]
        if t_s == 0.0:
            assert torch.equal(y_s, y0)
        assert torch.isfinite(local_heuristic(f, t_s, y_s, 1.0))
    with pytest.raises(ValueError, match=r"`t_j` must be in \[t0, t1\)"):
        time_grid(0.0, 1.0, 1.0)
