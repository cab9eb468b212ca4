from __future__ import annotations

import math

import pytest
import torch

from common_regs.dynamics import DoubleDescentDiagnostics, LinearGradientFlow, SelfTuningNetwork, STNLinear
from common_regs.dynamics.double_descent import covariance_spectrum, effective_lr_scan
from common_regs.dynamics.generalization_dynamics import gradient_flow_weights, marchenko_pastur_pdf


def _ridge_problem() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, generator=g)
    xt = torch.randn(30, 20, generator=g)
    xv = torch.randn(500, 20, generator=g)
    return xt, xt @ w + 2.0 * torch.randn(30, generator=g), xv, xv @ w + 2.0 * torch.randn(500, generator=g)


def test_stn_tunes_ridge_strength_toward_the_validation_optimum() -> None:
    xt, yt, xv, yv = _ridge_problem()

    def ridge_val(lam: float) -> float:
        coef = torch.linalg.solve(xt.T @ xt / 30 + lam * torch.eye(20), xt.T @ yt / 30)
        return float(((xv @ coef - yv) ** 2).mean())

    grid = torch.logspace(-3, 2, 120).tolist()
    best = min(grid, key=ridge_val)
    torch.manual_seed(0)
    layer = STNLinear(20, 1, 1)
    init = math.log(3.0)  # strongly over-regularized start
    stn = SelfTuningNetwork(layer, [init], lr=1e-2, hyper_lr=3e-2)

    def train_loss(h: torch.Tensor) -> torch.Tensor:
        weight, _ = layer.effective_weight(h)
        return ((layer(xt, h).squeeze(-1) - yt) ** 2).mean() + h.exp().squeeze() * weight.pow(2).sum()

    def val_loss(h: torch.Tensor) -> torch.Tensor:
        return ((layer(xv, h).squeeze(-1) - yv) ** 2).mean()

    for _ in range(300):
        out = stn.step(train_loss, val_loss)
    tuned = out["hparams"][0]
    assert abs(tuned - math.log(best)) < math.log(4.0), (math.exp(tuned), best)
    assert ridge_val(math.exp(tuned)) < 0.8 * ridge_val(3.0)
    state = stn.state_dict()
    fresh = SelfTuningNetwork(STNLinear(20, 1, 1), [0.0])
    fresh.load_state_dict(state)
    assert fresh.hparams.item() == pytest.approx(tuned)
    with pytest.raises(ValueError, match="`config`"):
        SelfTuningNetwork(layer, [0.0], config={"bogus": 1})


def test_stn_effective_weight_equals_forward() -> None:
    layer = STNLinear(4, 3, 2)
    torch.nn.init.normal_(layer.hyper.weight)
    h, x = torch.randn(2), torch.randn(5, 4)
    weight, bias = layer.effective_weight(h)
    torch.testing.assert_close(layer(x, h), x @ weight.T + bias)


def test_double_descent_peak_at_interpolation_threshold() -> None:
    widths = [10, 20, 40, 80, 400]
    out = DoubleDescentDiagnostics()(40, widths)
    peak = out["test_mse"].index(max(out["test_mse"]))
    assert widths[peak] == 40 and out["condition_number"][2] == max(out["condition_number"])
    ridge = DoubleDescentDiagnostics(ridge=1e-2)(40, widths)
    assert ridge["test_mse"][2] < 0.2 * out["test_mse"][2]  # regularization flattens the peak
    phi = torch.randn(50, 5, dtype=torch.float64)
    edge = 2 / float(covariance_spectrum(phi)[0])
    scan = effective_lr_scan(phi, torch.randn(50, dtype=torch.float64), [0.5 * edge, 1.1 * edge])
    assert scan["final_loss"][1] > 1e3 * scan["final_loss"][0]  # diverges past the 2/λ_max edge


def test_gradient_flow_closed_form_matches_small_step_gd_and_freezes_null_space() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 10, generator=g, dtype=torch.float64)  # n < d: 4-dim null space
    y, w0 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)
    w, lr = w0.clone(), 1e-3
    for _ in range(2000):
        w = w - lr * x.T @ (x @ w - y) / 6
    closed = gradient_flow_weights(x, y, w0, [2.0])[0]
    torch.testing.assert_close(w, closed, atol=2e-3, rtol=0)
    null = torch.linalg.svd(x).Vh[6:]
    torch.testing.assert_close(null @ closed, null @ w0)
    out = LinearGradientFlow(noise=0.5)(x, y, w0, torch.zeros(10, dtype=torch.float64), [0.0, 1.0, 100.0])
    assert out["train_mse"][0] > out["train_mse"][1] > out["train_mse"][2]


def test_marchenko_pastur_matches_empirical_spectrum() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4000, 1000, generator=g, dtype=torch.float64)
    eig = covariance_spectrum(x)
    grid = torch.linspace(0.01, 3.0, 3000, dtype=torch.float64)
    pdf = marchenko_pastur_pdf(grid, 0.25)
    assert float(torch.trapezoid(pdf, grid)) == pytest.approx(1.0, abs=0.01)
    assert float(eig.max()) == pytest.approx(1.5**2, rel=0.03) and float(eig.min()) == pytest.approx(0.5**2, rel=0.05)
