from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.ot import MongeGap
from common_regs.ot._utils import sq_euclidean
from common_regs.ot.monge_gap import entropic_cost, fit_monge_map, monge_gap

ot = pytest.importorskip("ot", reason="POT gives the exact (unregularized) Monge gap")


def _exact_gap(x: np.ndarray, tx: np.ndarray) -> float:
    w = np.full(len(x), 1 / len(x))
    cost = ot.dist(x, tx)
    return float(np.mean(np.diag(cost)) - ot.emd2(w, w, cost))


def test_identity_and_translation_are_optimal() -> None:
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([2.0, -1.0], dtype=torch.float64)
    eps = 1e-3
    identity = float(monge_gap(x, x, eps=eps))
    translation = float(monge_gap(x, x + shift, eps=eps))
    assert -eps * math.log(40) <= identity <= 1e-9  # entropic gap: in [−ε log n, 0] for the identity
    assert translation == pytest.approx(identity, abs=1e-9)  # linear cost terms do not change the entropic problem
    assert _exact_gap(x.numpy(), x.numpy()) == pytest.approx(0.0, abs=1e-12)
    assert _exact_gap(x.numpy(), (x + shift).numpy()) == pytest.approx(0.0, abs=1e-9)


def test_non_monotone_map_has_positive_gap_close_to_exact() -> None:
    z = torch.rand(40, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) ** 3
    exact = _exact_gap(z.numpy(), (-z).numpy())
    entropic = float(monge_gap(z, -z, eps=1e-4))
    assert exact > 0.1
    assert entropic == pytest.approx(exact, abs=40 * 1e-4 * math.log(40))


def test_entropic_cost_gradient_is_the_plan() -> None:
    gen = torch.Generator().manual_seed(2)
    cost = torch.rand(6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.full((6,), 1 / 6, dtype=torch.float64)
    value = entropic_cost(cost, w, w, 0.05)
    (grad,) = torch.autograd.grad(value, cost)
    reference = ot.sinkhorn(w.numpy(), w.numpy(), cost.detach().numpy(), 0.05, method="sinkhorn_log", stopThr=1e-13,
                            numItermax=100_000)
    np.testing.assert_allclose(grad.numpy(), reference, atol=1e-8)
    plan = torch.from_numpy(reference)
    primal = (plan * cost.detach()).sum() + 0.05 * (plan * (plan / (w[:, None] * w[None, :])).log()).sum()
    assert float(value.detach()) == pytest.approx(float(primal), abs=1e-8)


def test_loss_term_and_map_fitting_example() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(16, 2, generator=gen, dtype=torch.float64) + torch.tensor([3.0, 0.0], dtype=torch.float64)
    term = MongeGap(eps=1e-2)
    assert float(term(TrainContext(model=nn.Identity(), batch=x, outputs=x.flip(0)))) > 0.1
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    history = fit_monge_map(x, y, model, steps=60, lr=5e-2, weight=1.0, eps=0.1)
    assert history[-1]["fit"] < 0.1 * history[0]["fit"]
    assert -0.1 * math.log(16) - 1e-6 <= history[-1]["monge_gap"] < 0.05  # ≈ optimal (entropic floor −ε log n)
    mean_shift = (model(x) - x).mean(0).detach()
    torch.testing.assert_close(mean_shift, y.mean(0) - x.mean(0), atol=0.35, rtol=0)
    assert sq_euclidean(x[:1], y[:1]).shape == (1, 1)
