"""Weight compander (#6): Eq. (1) Ψ(v) = a·arctan(v/b), Eq. (3) its slope, Eq. (4) the inverse init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from common_regs.lowrank.weight_compander import WeightCompander, compand, compand_inverse

A, B = 0.7, 0.8
V = [-3.0, -0.5, 0.0, 0.25, 2.0]


def test_compander_matches_paper_equations_by_hand() -> None:
    v = torch.tensor(V, dtype=torch.float64, requires_grad=True)
    w = compand(v, A, B)
    (slope,) = torch.autograd.grad(w.sum(), v)
    for i, vi in enumerate(V):
        assert float(w[i].detach()) == pytest.approx(A * math.atan(vi / B), abs=1e-12)  # Eq. (1)
        assert float(slope[i]) == pytest.approx(A / (B * (1 + vi**2 / B**2)), abs=1e-12)  # Eq. (3)
    w_vals = [A * math.atan(vi / B) for vi in V]
    back = compand_inverse(torch.tensor(w_vals, dtype=torch.float64), A, B)
    for i, wi in enumerate(w_vals):
        assert float(back[i]) == pytest.approx(B * math.tan(wi / A), abs=1e-12)  # Eq. (4)
        assert float(back[i]) == pytest.approx(V[i], abs=1e-9)
    huge = compand(torch.tensor([1e9, -1e9], dtype=torch.float64), A, B)
    assert (huge.abs() < A * math.pi / 2).all()  # bounded by a·π/2
    with pytest.raises(ValueError, match="`a`"):
        compand_inverse(torch.tensor([A * math.pi / 2 + 1e-3]), A, B)


def test_identity_at_init_defaults_and_bounded_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 4))
    x = torch.randn(5, 2, 4, 4)
    before = model(x)
    reparam = WeightCompander()
    assert (reparam.a, reparam.b) == (0.7, 0.8)
    reparam.prepare(model)
    torch.testing.assert_close(model(x), before, atol=1e-6, rtol=1e-5)
    assert hasattr(model[0], "parametrizations") and hasattr(model[2], "parametrizations")  # conv and linear
    assert not hasattr(model[2].parametrizations, "bias")  # biases are not reparametrized
    with torch.no_grad():
        model[2].parametrizations.weight.original0.mul_(1e6)
    assert float(model[2].weight.detach().abs().max()) < 0.7 * math.pi / 2


def test_learnable_per_layer_a_b_get_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    reparam = WeightCompander(learnable=True)
    assert (reparam.a, reparam.b) == (0.5, 1.0)
    reparam.prepare(model)
    model(torch.randn(3, 5)).pow(2).sum().backward()
    for layer in (model[0], model[2]):
        p = layer.parametrizations.weight[0]
        assert any(q is p.a for q in reparam.trainable_parameters())
        assert p.a.grad is not None and float(p.a.grad) != 0
        assert p.b.grad is not None and float(p.b.grad) != 0
    assert model[0].parametrizations.weight[0].a is not model[2].parametrizations.weight[0].a  # one pair per layer


def test_latent_gradients_are_scaled_by_the_slope() -> None:
    """Near-zero latents get the largest multiplier a/b ("reactivating dead weights"), large ones less."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1e-4, 0.3, 0.6, 1.0]]))
    plain = layer.weight.detach().clone().requires_grad_(True)
    x = torch.randn(8, 4)
    (x @ plain.T).sum().backward()
    WeightCompander(a=1.0, b=0.6).prepare(nn.Sequential(layer))
    layer(x).sum().backward()
    v = layer.parametrizations.weight.original0.detach()
    ratio = layer.parametrizations.weight.original0.grad / plain.grad
    expected = 1.0 / (0.6 * (1 + (v / 0.6) ** 2))
    torch.testing.assert_close(ratio, expected, rtol=1e-4, atol=1e-6)
    assert float(ratio[0, 0]) == pytest.approx(1.0 / 0.6, rel=1e-4)
    assert (ratio[0].diff() < 0).all()
