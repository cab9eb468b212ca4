from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.generative.gifd_attack import (
    GIFDAttack,
    analytic_linear_inversion,
    gradient_match_cost,
    noisy_gradients,
    project_l1_ball,
    prune_gradients,
)


def test_l1_projection_is_the_closest_point_of_the_ball() -> None:
    g = torch.Generator().manual_seed(0)
    grid = torch.linspace(-2, 2, 401, dtype=torch.float64)
    ball = torch.cartesian_prod(grid, grid)
    ball = ball[ball.abs().sum(1) <= 1.5]
    for _ in range(5):
        v = 3 * torch.randn(1, 2, generator=g, dtype=torch.float64)
        p = project_l1_ball(v, 1.5)
        brute = ball[(ball - v).norm(dim=1).argmin()]
        assert float((p[0] - brute).norm()) < 0.015  # grid spacing 0.01
        assert float(p.abs().sum()) <= 1.5 + 1e-12
        torch.testing.assert_close(project_l1_ball(p, 1.5), p)  # idempotent
    inside = torch.tensor([[0.2, -0.3, 0.1]], dtype=torch.float64)
    torch.testing.assert_close(project_l1_ball(inside, 1.0), inside)
    many = torch.randn(4, 2, 5, generator=g, dtype=torch.float64) * 4
    norms = project_l1_ball(many, 2.0).abs().flatten(1).sum(1)
    torch.testing.assert_close(norms, torch.full((4,), 2.0, dtype=torch.float64))


def _linear_victim() -> tuple[nn.Linear, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Linear(6, 3).double()
    x = torch.rand(1, 6, dtype=torch.float64)
    y = torch.tensor([1])
    grads = list(torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters())))
    return model, x, y, grads


def test_single_sample_linear_layer_is_recovered_exactly() -> None:
    model, x, y, grads = _linear_victim()
    torch.testing.assert_close(analytic_linear_inversion(*grads), x[0], rtol=0, atol=1e-12)  # closed form
    result = GIFDAttack(steps=(150,), radii=(), lr=0.1)(model, nn.functional.cross_entropy, grads, y, [],
                                                         torch.full((1, 6), 0.5, dtype=torch.float64))
    assert result.cost < 1e-6
    assert float((result.x - x).abs().max()) < 1e-3


def test_privacy_defenses_make_the_attack_fail() -> None:
    model, x, y, grads = _linear_victim()
    attack = GIFDAttack(steps=(150,), radii=(), lr=0.1)
    start = torch.full((1, 6), 0.5, dtype=torch.float64)
    clean = float((attack(model, nn.functional.cross_entropy, grads, y, [], start).x - x).abs().max())
    pruned_grads = prune_gradients(grads, 0.9)
    assert [int((g != 0).sum()) for g in pruned_grads] == [18 - int(0.9 * 18), 3 - int(0.9 * 3)]  # 2 and 1 kept
    pruned = float((attack(model, nn.functional.cross_entropy, pruned_grads, y, [], start).x - x).abs().max())
    noisy_grads = noisy_gradients(grads, 0.05, torch.Generator().manual_seed(0))
    noisy = float((attack(model, nn.functional.cross_entropy, noisy_grads, y, [], start).x - x).abs().max())
    assert clean < 1e-3 and pruned > 100 * clean and noisy > 100 * clean
    assert float((analytic_linear_inversion(*noisy_grads) - x[0]).abs().max()) > 0.01


def test_feature_domain_search_beats_the_latent_search_off_the_generator_range() -> None:
    torch.manual_seed(1)
    blocks = [nn.Sequential(nn.Linear(3, 16), nn.Tanh()).double(),
              nn.Sequential(nn.Linear(16, 16), nn.Tanh()).double(), nn.Linear(16, 10).double()]
    victim = nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    with torch.no_grad():  # a private input near, but not on, the generator's range
        x = nn.Sequential(*blocks)(torch.randn(1, 3, dtype=torch.float64))
        x = x + 0.3 * torch.randn(1, 10, dtype=torch.float64)
    y = torch.tensor([2])
    grads = torch.autograd.grad(nn.functional.cross_entropy(victim(x), y), list(victim.parameters()))
    z0 = torch.randn(1, 3, dtype=torch.float64)
    latent = GIFDAttack(steps=(300,), radii=(), lr=0.05)(victim, nn.functional.cross_entropy, grads, y, blocks, z0)
    gifd = GIFDAttack(steps=(300, 150, 150), radii=(2.0, 2.0), lr=0.05)(victim, nn.functional.cross_entropy, grads, y,
                                                                        blocks, z0)
    assert gifd.stage_costs[0] == pytest.approx(latent.cost)  # stage 0 is the latent search
    assert gifd.cost < 0.5 * latent.cost and gifd.best_stage > 0
    assert float((gifd.x - x).pow(2).mean()) < 0.5 * float((latent.x - x).pow(2).mean())
    frozen = GIFDAttack(steps=(300, 20), radii=(1e-9,), lr=0.05)(victim, nn.functional.cross_entropy, grads, y, blocks,
                                                                 z0)
    assert frozen.stage_costs[1] == pytest.approx(frozen.stage_costs[0], abs=1e-6)  # ℓ1 ball of radius ~0: no change


def test_cost_and_validation() -> None:
    a, b = [torch.tensor([1.0, 0.0])], [torch.tensor([2.0, 0.0])]
    assert float(gradient_match_cost(a, b)) == pytest.approx(0.0)
    assert float(gradient_match_cost(a, [torch.tensor([0.0, 1.0])])) == pytest.approx(1.0)
    assert float(gradient_match_cost(a, b, "l2")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="radii"):
        GIFDAttack(steps=(10, 10), radii=())
    with pytest.raises(ValueError, match="ratio"):
        prune_gradients(a, 1.0)
    with pytest.raises(ValueError, match="blocks"):
        GIFDAttack(steps=(1, 1), radii=(1.0,))(nn.Linear(2, 2), nn.functional.cross_entropy, a, torch.tensor([0]),
                                               [], torch.zeros(1, 2))
