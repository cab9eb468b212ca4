from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.dynamics import HessianAlignment
from common_regs.dynamics.hessian_alignment import (
    _hutchinson_diag,
    hessian_alignment_penalty,
    hessian_gradient_product,
)


def test_hg_identity_matches_hvp() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    theta = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def loss_fn(t: torch.Tensor) -> torch.Tensor:
        return torch.log1p(torch.exp(-(x @ t) * y)).mean() + (t**4).sum()

    g, hg = hessian_gradient_product(loss_fn(theta), [theta])
    _, hvp = torch.autograd.functional.hvp(loss_fn, theta.detach(), g.detach())
    torch.testing.assert_close(hg, hvp, atol=1e-10, rtol=1e-8)


def test_hutchinson_is_unbiased_on_diagonal_quadratic() -> None:
    diag = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64)
    theta = torch.ones(3, dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    _, estimate = _hutchinson_diag(0.5 * (diag * theta**2).sum(), [theta], 4, gen)
    torch.testing.assert_close(estimate, diag)  # exact for a diagonal Hessian (v ⊙ Hv = diag(H) v²)


def test_penalty_zero_for_identical_envs_positive_otherwise() -> None:
    torch.manual_seed(1)
    head = nn.Linear(4, 2)
    x = torch.randn(16, 4)
    y = torch.randint(0, 2, (16,))

    def envs() -> list[torch.Tensor]:
        return [nn.functional.cross_entropy(head(x), y), nn.functional.cross_entropy(head(x * 3.0), 1 - y)]

    same = envs()[0]
    zero = hessian_alignment_penalty([same, same], list(head.parameters())).detach()
    assert float(zero) == pytest.approx(0.0, abs=1e-12)
    value = HessianAlignment(include=("weight",))(TrainContext(model=head, extras={"env_losses": envs()}))
    assert float(value.detach()) > 0
    (grad,) = torch.autograd.grad(value, head.weight)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    hutch = HessianAlignment(method="hutchinson")(TrainContext(model=head, extras={"env_losses": envs()}))
    assert float(hutch.detach()) > 0
    with pytest.raises(ValueError, match="`include`"):
        HessianAlignment(include=("nothing*",))(TrainContext(model=head, extras={"env_losses": envs()}))
