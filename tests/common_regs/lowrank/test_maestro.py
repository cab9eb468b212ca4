from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.lowrank.maestro import Maestro, maestro_group_lasso


def _layer(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(7, 5, bias=False)


def test_truncated_forward_equals_truncated_svd() -> None:
    layer = _layer()
    w = layer.weight.detach().clone()
    u, s, vh = torch.linalg.svd(w.double())
    maestro = Maestro()
    maestro.prepare(nn.Sequential(layer))
    for k, width in [(1, 0.2), (2, 0.4), (3, 0.6), (5, 1.0)]:
        with maestro.truncated(0, width):
            expected = (u[:, :k] * s[:k]) @ vh[:k]
            torch.testing.assert_close(layer.weight.detach().double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.weight.detach(), w, atol=1e-5, rtol=1e-5)


def test_group_lasso_and_importance_closed_form_at_svd_init() -> None:
    layer = _layer()
    s = torch.linalg.svdvals(layer.weight.detach().double()).float()
    maestro = Maestro(hierarchical=False)
    maestro.prepare(nn.Sequential(layer))
    # ‖u_i‖ = ‖v_i‖ = sqrt(σ_i): GL = 2 Σ sqrt(σ_i), importance = σ_i
    torch.testing.assert_close(maestro.group_lasso(), 2 * s.sqrt().sum(), atol=1e-4, rtol=1e-4)
    ranks = maestro.shrink(threshold=float((s[1] + s[2]) / 2))
    assert ranks == {"0": 2}


def test_hierarchical_group_lasso_hand_case() -> None:
    u = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # columns norms 3, 4
    v = torch.tensor([[0.0, 1.0], [2.0, 0.0]])  # row norms 1, 2
    # tail norms: v: [sqrt(1+4), 2], u: [sqrt(9+16), 4]
    torch.testing.assert_close(maestro_group_lasso(u, v, hierarchical=True),
                               torch.tensor([5**0.5 + 5.0, 6.0]))
    torch.testing.assert_close(maestro_group_lasso(u, v, hierarchical=False), torch.tensor([4.0, 6.0]))


def test_sampler_visits_every_layer_width_pair_once_per_cycle() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    maestro = Maestro()
    maestro.prepare(model)
    generator = torch.Generator().manual_seed(0)
    cycle = [maestro.sample(generator) for _ in range(3 + 2)]
    assert sorted(cycle) == sorted([(0, 1 / 3), (0, 2 / 3), (0, 1.0), (1, 0.5), (1, 1.0)])


def test_training_objective_orders_components() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    maestro = Maestro(group_lasso_weight=1e-2)
    maestro.prepare(model)
    x, y = torch.randn(128, 6), torch.randint(0, 3, (128,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    first = None
    for _ in range(40):
        optimizer.zero_grad()
        full = model(x)
        with maestro.truncated(*maestro.sample(generator)):
            partial = model(x)
        loss = maestro.loss(full, partial, y)
        first = float(loss.detach()) if first is None else first
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < first
    with pytest.raises(ValueError, match="width"):
        with maestro.truncated(0, 0.0):
            pass
