from __future__ import annotations

import pytest
import torch

from common_regs.structure import CoLiDE
from common_regs.structure.colide import colide_score, dagma_acyclicity, structural_hamming_distance

EDGES = [(0, 1), (1, 2), (0, 3), (3, 4), (2, 5), (4, 5)]


def _planted(n: int = 1000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    adj = torch.zeros(6, 6)
    for i, j in EDGES:
        adj[i, j] = 1
    signs = torch.where(torch.rand(6, 6, generator=g) < 0.5, -1.0, 1.0)
    w = adj * (torch.rand(6, 6, generator=g) * 1.5 + 0.5) * signs
    x = torch.randn(n, 6, generator=g) @ torch.linalg.inv(torch.eye(6) - w)
    return x, adj


def test_recovers_planted_dag_and_is_scale_invariant() -> None:
    x, adj = _planted()
    model = CoLiDE(iters=(1500, 3000))
    w, sigma = model.fit(x)
    assert structural_hamming_distance(adj, model.adjacency(w)) == 0
    assert float(sigma) == pytest.approx(1.0, abs=0.1)  # unit-variance noise
    w5, sigma5 = model.fit(5.0 * x)  # concomitant σ absorbs the scale: same graph at the same λ
    assert structural_hamming_distance(adj, model.adjacency(w5)) == 0
    assert float(sigma5) == pytest.approx(5 * float(sigma), rel=0.05)


def test_acyclicity_and_score_closed_forms() -> None:
    tri = torch.tensor([[0.0, 0.8, -0.3], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert float(dagma_acyclicity(tri)[0]) == pytest.approx(0.0, abs=1e-12)
    cyc = torch.tensor([[0.0, 0.5], [0.5, 0.0]], dtype=torch.float64)
    assert float(dagma_acyclicity(cyc)[0]) > 0
    w = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    value, grad = dagma_acyclicity(w * 0.2, 1.0)
    (auto,) = torch.autograd.grad(value, w)
    torch.testing.assert_close(auto, 0.2 * grad.detach())
    x = torch.randn(50, 3, dtype=torch.float64)
    cov = x.T @ x / 50
    w0 = torch.randn(3, 3, dtype=torch.float64) * 0.1
    for variance in ("ev", "nv"):
        score, grad_w, sigma = colide_score(w0, cov, variance)
        sig = sigma.clone().requires_grad_()
        a = torch.eye(3, dtype=torch.float64) - w0
        resid = (a * (cov @ a)).sum(0)
        full = (resid.sum() / (2 * sig) + 3 * sig / 2) if variance == "ev" else (resid / (2 * sig) + sig / 2).sum()
        (d_sigma,) = torch.autograd.grad(full, sig)
        torch.testing.assert_close(d_sigma, torch.zeros_like(d_sigma), atol=1e-10, rtol=0)  # σ̂ zeroes ∂S/∂σ
        wg = w0.clone().requires_grad_()
        a2 = torch.eye(3, dtype=torch.float64) - wg
        r2 = (a2 * (cov @ a2)).sum(0)
        s_fixed = (r2.sum() / (2 * sigma)) if variance == "ev" else (r2 / (2 * sigma)).sum()
        (auto_w,) = torch.autograd.grad(s_fixed, wg)
        torch.testing.assert_close(auto_w, grad_w)


def test_shd_and_validation() -> None:
    t = torch.tensor([[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    assert structural_hamming_distance(t, t) == 0
    assert structural_hamming_distance(t, t.T) == 2  # two reversed edges
    assert structural_hamming_distance(t, torch.zeros_like(t)) == 2
    with pytest.raises(ValueError, match="`variance`"):
        CoLiDE(variance="xx")  # type: ignore[arg-type]
