from __future__ import annotations

import math

import torch
from torch import nn

from common_regs.lowrank.weight_compander import WeightCompander, compand, compand_inverse


def test_compander_shape_properties() -> None:
    v = torch.linspace(-20, 20, 4001, dtype=torch.float64)
    w = compand(v, 10.0)
    torch.testing.assert_close(compand(-v, 10.0), -w)  # odd
    assert (w.diff() > 0).all()  # strictly monotone
    x = torch.tensor([0.0, 100.0], dtype=torch.float64, requires_grad=True)
    grad = torch.autograd.grad(compand(x, 10.0).sum(), x)[0]
    assert abs(float(grad[0]) - 10.0 / math.log(11.0)) < 1e-9  # f'(0) = μ / ln(1 + μ) > 1: expands near 0
    assert float(grad[1]) < 0.005  # compresses large magnitudes
    torch.testing.assert_close(compand_inverse(w, 10.0), v)  # exact inverse


def test_identity_at_init_and_learnable_mu_gets_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4))
    x = torch.randn(3, 5)
    before = model(x)
    reparam = WeightCompander(mu=5.0, learnable=True)
    reparam.prepare(model)
    torch.testing.assert_close(model(x), before, atol=1e-6, rtol=1e-6)
    model(x).pow(2).sum().backward()
    log_mu = model[0].parametrizations.weight[0].log_mu
    assert any(p is log_mu for p in reparam.trainable_parameters())
    assert log_mu.grad is not None and float(log_mu.grad) != 0


def test_small_latents_get_amplified_gradients() -> None:
    """The 'reactivation of dead weights': near-zero latents receive ~f'(0)× the plain gradient."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1e-4, 0.5, 1.0, 2.0]]))
    plain = layer.weight.detach().clone().requires_grad_(True)
    x = torch.randn(8, 4)
    (x @ plain.T).sum().backward()
    WeightCompander(mu=10.0).prepare(nn.Sequential(layer))
    layer(x).sum().backward()
    ratio = layer.parametrizations.weight.original0.grad / plain.grad
    assert abs(float(ratio[0, 0]) - 10.0 / math.log(11.0)) < 1e-2
    assert (ratio[0].diff() < 0).all()  # larger weights get smaller gradient multipliers
