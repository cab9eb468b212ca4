"""Vicinity UFM (#9): the paper's Eq. 2, its collapsed minimizer (Thm 2.1, Cor 2.2) and perturbation map (Thm 4.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common_regs.representation import (
    VicinityUFM,
    collapsed_ufm_minimizer,
    neural_collapse_metrics,
    ufm_features_step,
    ufm_objective,
)


def _problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    labels = torch.arange(3).repeat_interleave(6)
    y = torch.nn.functional.one_hot(labels, 3).T.double()
    return y, torch.randn(5, 18, dtype=torch.float64), labels


def test_objective_equals_eq_2_by_hand() -> None:
    # K = 2 classes, n = 2 per class, D = 2: every term of Eq. 2 summed with loops
    y = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    w = np.array([[0.5, -1.0], [2.0, 0.25]])
    h = np.array([[1.0, 0.0, -1.0, 2.0], [0.5, 1.5, 0.0, -0.5]])
    h0 = np.array([[0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, -1.0]])
    beta, lambda_w, lambda_h, k, n_total = 3.0, 0.2, 0.1, 2, 4
    fit = sum((sum(w[r, j] * h[j, i] for j in range(2)) - y[r, i]) ** 2 for r in range(2) for i in range(4))
    expected = (fit / (2 * n_total) + lambda_w / (2 * k) * sum(v**2 for v in w.flat)
                + lambda_h / (2 * n_total) * sum(v**2 for v in h.flat)
                + beta / (2 * n_total) * sum((a - b) ** 2 for a, b in zip(h.flat, h0.flat, strict=True)))
    value = ufm_objective(*(torch.tensor(a) for a in (w, h, y, h0)), beta, lambda_w, lambda_h)
    assert float(value) == pytest.approx(expected, rel=1e-12)


def test_closed_form_features_match_lbfgs() -> None:
    y, h0, _ = _problem()
    w = torch.randn(3, 5, dtype=torch.float64)
    closed = ufm_features_step(w, y, h0, beta=0.5, lambda_h=0.3)
    h = h0.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([h], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ufm_objective(w, h, y, h0, beta=0.5, lambda_w=1.0, lambda_h=0.3)
        loss.backward()
        return loss

    optimizer.step(closure)
    torch.testing.assert_close(h.detach(), closed, atol=1e-6, rtol=1e-6)


def test_objective_monotone_and_collapse_weakens_with_beta() -> None:
    y, h0, labels = _problem()
    nc1 = []
    for beta in (0.0, 0.1, 10.0):  # λ_H = β = 0: least-norm H, no null-space component left
        _, h, history = VicinityUFM(beta=beta, lambda_w=1e-3, lambda_h=0.0, iterations=15).solve(y, h0)
        assert all(b <= a + 1e-9 for a, b in zip(history, history[1:], strict=False))
        nc1.append(neural_collapse_metrics(h.T, labels)["nc1"])
    assert nc1[0] < 1e-6 and nc1[0] < nc1[1] < nc1[2]


def _collapsed(lambda_w: float, lambda_h: float, k: int = 3, d: int = 4, n: int = 2
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Theorem 2.1's minimizer built by hand: H* = √ρ R ⊗ 1ₙᵀ, W* = √(λ_H/λ_W) √ρ Rᵀ."""
    basis = torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    rho = (1 - math.sqrt(lambda_h * lambda_w)) * math.sqrt(lambda_w / lambda_h)
    h_star = torch.stack([math.sqrt(rho) * basis[:, c] for c in range(k) for _ in range(n)], dim=1)
    w_star = math.sqrt(lambda_h / lambda_w) * math.sqrt(rho) * basis.T
    y = torch.stack([torch.eye(k, dtype=torch.float64)[c] for c in range(k) for _ in range(n)], dim=1)
    return basis, w_star, h_star, y


def test_collapsed_minimizer_is_stationary_for_eq_1_and_fixed_for_eq_2() -> None:
    lambda_w, lambda_h = 0.5, 0.2
    basis, w_star, h_star, y = _collapsed(lambda_w, lambda_h)
    w, h = collapsed_ufm_minimizer(basis, 2, lambda_w, lambda_h)
    torch.testing.assert_close(w, w_star)
    torch.testing.assert_close(h, h_star)
    # Theorem 2.1: a critical point of Eq. 1 (β = 0), checked by autograd on the objective
    w_var, h_var = w_star.clone().requires_grad_(True), h_star.clone().requires_grad_(True)
    ufm_objective(w_var, h_var, y, h_star, 0.0, lambda_w, lambda_h).backward()
    assert float(w_var.grad.abs().max()) < 1e-12 and float(h_var.grad.abs().max()) < 1e-12
    # Corollary 2.2: with H₀ = H* the solver's minimizer of Eq. 2 is (W*, H*)
    w_hat, h_hat, _ = VicinityUFM(beta=10.0, lambda_w=lambda_w, lambda_h=lambda_h, iterations=20).solve(y, h_star)
    torch.testing.assert_close(h_hat, h_star, atol=1e-12, rtol=0)
    torch.testing.assert_close(w_hat, w_star, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="orthonormal"):
        collapsed_ufm_minimizer(2 * basis, 2, lambda_w, lambda_h)


def test_perturbation_of_a_collapsed_input_matches_theorem_4_2() -> None:
    """Jacobian of H₀ ↦ argmin Eq. 2 at H₀ = H* (central differences through the solver) vs Theorem 4.2.

    For β ≫ max(1, λ_H): intra-class blocks F_kk have σ_max = 1 and σ_min = 1 − β⁻¹√(λ_H/λ_W); inter-class blocks
    F_kk̃ are rank 1 with σ_max = 2β⁻¹λ_H(1 − √(λ_Hλ_W)); both up to O(β⁻²).
    """
    lambda_w, lambda_h, beta, k, d, n = 0.5, 0.2, 200.0, 3, 4, 2
    _, _, h_star, y = _collapsed(lambda_w, lambda_h, k, d, n)
    solver = VicinityUFM(beta=beta, lambda_w=lambda_w, lambda_h=lambda_h, iterations=60)
    size, eps = d * n * k, 1e-4
    jacobian = torch.zeros(size, size, dtype=torch.float64)
    for j in range(size):  # vec(·) stacks columns: entry j is row j % d of column j // d
        bump = torch.zeros(d, n * k, dtype=torch.float64)
        bump[j % d, j // d] = eps
        plus, minus = solver.solve(y, h_star + bump)[1], solver.solve(y, h_star - bump)[1]
        jacobian[:, j] = ((plus - minus) / (2 * eps)).T.reshape(-1)
    block = d * n
    tol = 3.0 / beta**2
    for a in range(k):
        intra = torch.linalg.svdvals(jacobian[a * block:(a + 1) * block, a * block:(a + 1) * block])
        assert float(intra.max()) == pytest.approx(1.0, abs=tol)
        assert float(intra.min()) == pytest.approx(1 - math.sqrt(lambda_h / lambda_w) / beta, abs=tol)
        for b in range(k):
            if b != a:
                inter = torch.linalg.svdvals(jacobian[a * block:(a + 1) * block, b * block:(b + 1) * block])
                assert float(inter[0]) == pytest.approx(2 / beta * lambda_h * (1 - math.sqrt(lambda_h * lambda_w)),
                                                        abs=tol)
                assert float(inter[1]) < 1e-7  # rank one


def test_large_beta_reduces_within_class_variability_corollary_3_2() -> None:
    y, h0, labels = _problem()
    before = neural_collapse_metrics(h0.T, labels)["nc1_tilde"]
    for beta in (50.0, 500.0):
        _, h, _ = VicinityUFM(beta=beta, lambda_w=0.1, lambda_h=0.1, iterations=50).solve(y, h0)
        after = neural_collapse_metrics(h.T, labels)["nc1_tilde"]
        assert after < before
        assert after > 0.5 * before  # a small step from H₀, not a collapse
