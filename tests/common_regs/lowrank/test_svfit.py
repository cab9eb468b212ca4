from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.lowrank._utils import energy_rank
from common_regs.lowrank.svfit import SVFit


def test_energy_rank_closed_form() -> None:
    s = torch.tensor([3.0, 2.0, 1.0, 0.1])  # squared: 9, 4, 1, 0.01 -> cumulative 9/14.01, 13/14.01, ...
    assert energy_rank(s, 0.6) == 1
    assert energy_rank(s, 0.9) == 2
    assert energy_rank(s, 0.99) == 3
    assert energy_rank(s, 1.0) == 4
    with pytest.raises(ValueError, match="energy"):
        energy_rank(s, 0.0)


def test_trainable_count_is_rank_per_layer_and_base_frozen() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 6))
    reparam = SVFit(rank=3, freeze_base=True)
    reparam.prepare(model)
    assert reparam.num_trainable() == 6
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 6


def test_singular_value_gradient_is_u_g_v() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(7, 5, bias=False)
    reparam = SVFit(rank=3)
    reparam.prepare(nn.Sequential(layer))
    x = torch.randn(11, 7)
    target = torch.randn(11, 5)
    # G = dL/dW' computed on a plain copy of the effective weight
    w_eff = layer.weight.detach().clone().requires_grad_(True)
    ((x @ w_eff.T - target) ** 2).sum().backward()
    ((layer(x) - target) ** 2).sum().backward()
    param = layer.parametrizations.weight[0]
    sigma = layer.parametrizations.weight.original0
    expected = torch.stack([param.u[:, i] @ w_eff.grad @ param.vh[i] for i in range(3)])
    torch.testing.assert_close(sigma.grad, expected, atol=1e-5, rtol=1e-5)


def test_energy_rule_picks_rank_from_spectrum() -> None:
    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.diag(torch.tensor([10.0, 1.0, 0.01, 0.001])))
    reparam = SVFit(energy=0.99)
    reparam.prepare(nn.Sequential(layer))
    assert reparam.num_trainable() == 1  # 100 / 101.0001 > 0.99
    torch.testing.assert_close(reparam.singular_values()["0"], torch.tensor([10.0]))
