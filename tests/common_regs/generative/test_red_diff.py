from __future__ import annotations

import pytest
import torch

from common_regs.generative.red_diff import REDDiff, denoiser_weight, gaussian_prior_eps, red_diff_loss


def _linear_gaussian_problem() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    d, m = 8, 5
    h = torch.randn(m, d, generator=g, dtype=torch.float64)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    x = mean + torch.randn(d, generator=g, dtype=torch.float64)
    y = h @ x + 0.1**0.5 * torch.randn(m, generator=g, dtype=torch.float64)
    return {"h": h, "mean": mean, "y": y}


def test_gradient_is_weighted_noise_residual_plus_data_term() -> None:
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    h = torch.randn(3, 4, generator=g, dtype=torch.float64)
    y, eps_pred, noise = (torch.randn(s, generator=g, dtype=torch.float64) for s in ((2, 3), (2, 4), (2, 4)))
    loss = red_diff_loss(x0, y, lambda z: z @ h.T, eps_pred, noise, weight=0.7, obs_weight=1.3)
    (grad,) = torch.autograd.grad(loss, x0)
    expected = -1.3 * (y - x0.detach() @ h.T) @ h / y.numel() + 0.7 * (eps_pred - noise) / x0.numel()
    torch.testing.assert_close(grad, expected)


def test_weightings_match_official_table() -> None:
    a = torch.tensor(0.2, dtype=torch.float64)
    s = (0.8 / 0.2) ** 0.5  # = 2
    assert float(denoiser_weight(a, "linear")) == pytest.approx(s)
    assert float(denoiser_weight(a, "sqrt")) == pytest.approx(s**0.5)
    assert float(denoiser_weight(a, "square")) == pytest.approx(s**2)
    assert float(denoiser_weight(a, "log")) == pytest.approx(torch.log(torch.tensor(s + 1.0)).item())
    assert float(denoiser_weight(a, "trunc_linear")) == pytest.approx(1.0)
    assert float(denoiser_weight(a, "const")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weighting"):
        denoiser_weight(a, "cubic")  # type: ignore[arg-type]


def test_gaussian_denoiser_is_the_posterior_mean_of_the_noise() -> None:
    """Monte-Carlo check of ε̂ = E[ε | x_t] for the analytic Gaussian-prior predictor (regression of ε on x_t)."""
    g = torch.Generator().manual_seed(1)
    cov = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=torch.float64)
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64)
    x0 = mean + torch.randn(200_000, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    eps = torch.randn(200_000, 2, generator=g, dtype=torch.float64)
    a = torch.tensor(0.3, dtype=torch.float64)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    pred = gaussian_prior_eps(mean, cov)(x_t, a)
    assert float((eps - pred).mean(0).abs().max()) < 0.01  # unbiased
    assert float(((eps - pred) * x_t).mean(0).abs().max()) < 0.02  # residual orthogonal to x_t (MMSE)


def test_converges_to_the_closed_form_posterior_mean() -> None:
    """Linear-Gaussian inverse problem: with λ matched to σ_y²/s², the RED-diff fixed point is the posterior mean."""
    p = _linear_gaussian_problem()
    h, mean, y = p["h"], p["mean"], p["y"]
    m, d = h.shape
    s2, sy2, a = 1.0, 0.1, 0.5
    eye = torch.eye(d, dtype=torch.float64)
    posterior = torch.linalg.solve(h.T @ h / sy2 + eye / s2, h.T @ y / sy2 + mean / s2)
    # fixed point (v HᵀH/m + λ P/d) μ = v Hᵀy/m + λ P m_prior/d with P = (1-a)/(a s² + 1 - a): match λ P/d = s⁻² σ_y²/m
    lam = sy2 * d * (a * s2 + 1 - a) / (m * s2 * (1 - a))
    batch = 64  # independent chains of the same problem; their mean removes the Adam jitter
    start = (torch.linalg.pinv(h) @ y).expand(batch, d)
    mu = REDDiff(grad_term_weight=lam, lr=0.01)(
        y.expand(batch, m), lambda z: z @ h.T, gaussian_prior_eps(mean, s2 * eye),
        torch.full((1500,), a, dtype=torch.float64), init=start, generator=torch.Generator().manual_seed(1))
    assert float((start[0] - posterior).abs().max()) > 1.0
    assert float((mu.mean(0) - posterior).abs().max()) < 0.05
    # without the denoising term the same solver goes to the min-norm data fit instead
    mu0 = REDDiff(grad_term_weight=0.0, lr=0.01)(
        y.expand(batch, m), lambda z: z @ h.T, gaussian_prior_eps(mean, s2 * eye),
        torch.full((300,), a, dtype=torch.float64), init=start, generator=torch.Generator().manual_seed(1))
    assert float((mu0.mean(0) - posterior).abs().max()) > 0.5


def test_validation() -> None:
    with pytest.raises(ValueError, match="grad_term_weight"):
        REDDiff(grad_term_weight=-1.0)
    with pytest.raises(ValueError, match="alpha_bars"):
        REDDiff()(torch.zeros(2), lambda x: x, lambda x, a: x, torch.tensor([1.0]), init=torch.zeros(2))
    with pytest.raises(ValueError, match="cov"):
        gaussian_prior_eps(torch.zeros(3), torch.eye(2))
