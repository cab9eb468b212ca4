"""Vicinity UFM (#9): closed-form H matches gradient descent, monotone objective, NC1 grows with β."""

from __future__ import annotations

import torch

from common_regs.representation import VicinityUFM, neural_collapse_metrics, ufm_features_step, ufm_objective


def _problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    labels = torch.arange(3).repeat_interleave(6)
    y = torch.nn.functional.one_hot(labels, 3).T.double()
    return y, torch.randn(5, 18, dtype=torch.float64), labels


def test_closed_form_features_match_gradient_descent() -> None:
    y, h0, _ = _problem()
    w = torch.randn(3, 5, dtype=torch.float64)
    closed = ufm_features_step(w, y, h0, beta=0.5)
    h = h0.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([h], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ufm_objective(w, h, y, h0, beta=0.5, lambda_w=0.0)
        loss.backward()
        return loss

    optimizer.step(closure)
    torch.testing.assert_close(h.detach(), closed, atol=1e-6, rtol=1e-6)


def test_objective_monotone_and_collapse_weakens_with_beta() -> None:
    y, h0, labels = _problem()
    nc1 = []
    for beta in (0.0, 0.1, 10.0):  # β = 0: least-norm H, no null-space component left
        _, h, history = VicinityUFM(beta=beta, lambda_w=1e-3, iterations=15).solve(y, h0)
        assert all(b <= a + 1e-9 for a, b in zip(history, history[1:], strict=False))
        nc1.append(neural_collapse_metrics(h.T, labels)["nc1"])
    assert nc1[0] < 1e-6 and nc1[0] < nc1[1] < nc1[2]
