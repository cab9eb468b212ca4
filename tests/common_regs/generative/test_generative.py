from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.generative import (
    AdaptiveGuidance,
    AdaptThenUnlearnRepulsion,
    CrossInitialization,
    StepVariationRegularizer,
)
from common_regs.generative.step_variation_regularizer import jacobian_vector_norms


def test_cross_initialization_anchor() -> None:
    encoder = nn.Linear(4, 4)
    refs = torch.randn(5, 4)
    ci = CrossInitialization(weight=1.0)
    v = ci.initialize(encoder, refs)
    torch.testing.assert_close(v.detach(), encoder(refs.mean(0)).detach())
    assert float(ci(TrainContext(model=encoder)).detach()) == 0.0
    with torch.no_grad():
        v.add_(torch.tensor([1.0, 0.0, -2.0, 0.0]))
    value = ci.penalty()
    (grad,) = torch.autograd.grad(value, v)
    torch.testing.assert_close(grad, 2 * torch.tensor([1.0, 0.0, -2.0, 0.0]))
    with pytest.raises(ValueError, match="initialize"):
        CrossInitialization().penalty()


@pytest.mark.parametrize("kernel", ["l2", "exp", "inverse"])
def test_repulsion_gradient_points_away_from_adapted_params(kernel: str) -> None:
    torch.manual_seed(0)
    model, adapted = nn.Linear(3, 2), nn.Linear(3, 2)
    term = AdaptThenUnlearnRepulsion(kernel=kernel)  # type: ignore[arg-type]
    term.set_anchor(adapted)
    value = term(TrainContext(model=model))
    grads = torch.autograd.grad(value, list(model.parameters()))
    pairs = zip(model.parameters(), adapted.parameters(), grads, strict=True)
    away = sum(float(((p - a) * -g).sum()) for p, a, g in pairs)
    assert away > 0  # a descent step on R increases the distance to θ_N
    if kernel == "exp":
        term.set_anchor(model)
        assert float(term(TrainContext(model=model))) == pytest.approx(1.0)  # finite at θ = θ_N


def test_step_variation_matches_analytic_jvp_and_vanishes_for_isometries() -> None:
    q, _ = torch.linalg.qr(torch.randn(64, 64, dtype=torch.float64))
    x = torch.randn(8, 64, dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    alpha_bar = torch.full((8,), 0.3, dtype=torch.float64)
    r = jacobian_vector_norms(x, 2.0 * x @ q.T, alpha_bar, gen)
    noise = torch.randn(8, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / 8 * 0.7**0.5
    torch.testing.assert_close(r, (2.0 * noise @ q).norm(dim=1))  # ‖J n‖ = 2‖Qᵀn‖ = 2‖n‖
    reg = StepVariationRegularizer(decay=1.0)
    value = reg.forward(x, 2.0 * x @ q.T, alpha_bar)
    assert float(value) < 0.03 * reg.mean**2  # isometry ⇒ r = 2‖n‖ ≈ constant: only the noise-norm spread remains
    uneven = StepVariationRegularizer(decay=1.0)  # per-sample gains 1..8: the Jacobian norm varies a lot
    value_uneven = uneven.forward(x, x * torch.arange(1.0, 9.0, dtype=torch.float64)[:, None], alpha_bar)
    assert float(value_uneven.detach()) / uneven.mean**2 > 10 * float(value.detach()) / reg.mean**2


def test_adaptive_guidance_policy() -> None:
    class Toy(nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
            return x if cond is None else x + cond * float(t)  # predictions converge as t → 0

    x, cond = torch.ones(2, 4), torch.tensor([[1.0, -1.0, 1.0, -1.0]]).expand(2, 4)  # cond ⊥ x
    cfg = AdaptiveGuidance(scale=3.0, threshold=1.5).apply(Toy())
    ag = AdaptiveGuidance(scale=3.0, threshold=0.999).apply(Toy())
    outs_cfg, outs_ag = [], []
    for t in [1.0, 0.5, 0.01, 0.001, 0.0]:
        outs_cfg.append(cfg(x, torch.tensor(t), cond))
        outs_ag.append(ag(x, torch.tensor(t), cond))
    torch.testing.assert_close(outs_cfg[0], x + 3.0 * cond)  # γ̄ > 1: exact CFG throughout
    assert cfg.nfe == 10 and not cfg.switched
    assert ag.switched and ag.switch_step == 2 and ag.nfe == 2 * 3 + 2  # one-way switch, then 1 NFE per step
    torch.testing.assert_close(outs_ag[-1], Toy()(x, torch.tensor(0.0), cond))

