from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.generative.orex_gradient_hinge import (
    FourierFeatureField,
    OReXGradientHinge,
    input_gradient_hinge,
    iterative_bce,
)


def test_hinge_closed_form_on_a_linear_field() -> None:
    w = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    term = OReXGradientHinge(alpha=2.0)
    value = term(TrainContext(model=nn.Identity(), extras={"points": x, "logits": x @ w + 1.0}))
    assert float(value.detach()) == pytest.approx(5.0 - 2.0)  # ‖∇f‖ = ‖w‖ = 5 everywhere
    (grad_w,) = torch.autograd.grad(value, w)
    torch.testing.assert_close(grad_w, w.detach() / 5.0)  # ∂‖w‖/∂w
    assert term.last_stats["fraction_above_alpha"] == 1.0
    below = OReXGradientHinge(alpha=6.0).forward(x, x @ w)
    assert float(below.detach()) == 0.0


def test_iterative_bce_averages_iterations() -> None:
    labels = torch.tensor([0.0, 1.0])
    a, b = torch.tensor([0.3, -0.2]), torch.tensor([2.0, 1.0])
    expected = (nn.functional.binary_cross_entropy_with_logits(a, labels)
                + nn.functional.binary_cross_entropy_with_logits(b, labels)) / 2
    torch.testing.assert_close(iterative_bce([a, b], labels), expected)


def _inside(p: torch.Tensor) -> torch.Tensor:
    r, theta = p.norm(dim=-1), torch.atan2(p[:, 1], p[:, 0])
    return (r < 0.5 + 0.15 * torch.cos(3 * theta)).float()


def _slices(g: torch.Generator) -> torch.Tensor:
    """In/out samples on five horizontal cross-sections of a 2-D trefoil, plus points near their boundary crossings."""
    ys = torch.tensor([-0.6, -0.3, 0.0, 0.3, 0.6])
    pts = [torch.stack([torch.rand(100, generator=g) * 2 - 1, y.repeat(100)], 1) for y in ys]
    fine = torch.linspace(-1, 1, 2001)
    for y in ys:
        labels = _inside(torch.stack([fine, y.repeat(2001)], 1))
        for i in (labels[1:] != labels[:-1]).nonzero().flatten():
            offset = (torch.rand(30, generator=g) * 2 - 1) * 2**-5
            pts.append(torch.stack([fine[i] + offset, y.repeat(30)], 1))
    return torch.cat(pts)


def _fit(weight: float) -> tuple[FourierFeatureField, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    points = _slices(torch.Generator().manual_seed(0))
    labels = 1 - _inside(points)  # official convention: inside 0, outside 1
    field, hinge = FourierFeatureField(), OReXGradientHinge(alpha=10.0)
    optimizer = torch.optim.Adam(field.parameters(), lr=3e-3)
    for _ in range(150):
        x = points.clone().requires_grad_(True)
        logits = field(x)
        loss = iterative_bce([logits], labels) + (weight * hinge.forward(x, logits) if weight else 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return field, points, labels


def test_regularized_field_has_bounded_spatial_gradients_on_a_slice_toy() -> None:
    stats = {}
    for weight in (0.0, 0.1):
        field, points, labels = _fit(weight)
        x = points.clone().requires_grad_(True)
        logits = field(x)
        hinge, norms = input_gradient_hinge(x, logits, 10.0)
        stats[weight] = (float(hinge.detach()), float(norms.detach().max()),
                         float(((logits.detach() > 0).float() == labels).float().mean()))
    plain, regularized = stats[0.0], stats[0.1]
    assert regularized[0] < 0.05 * plain[0]  # the named quantity: mean max(‖∇f‖ − α, 0) at the training points
    assert regularized[1] < 0.2 * plain[1]  # and the steepest logit slope
    assert regularized[2] > 0.85 and plain[2] > 0.95  # both still fit the slices


def test_validation() -> None:
    with pytest.raises(ValueError, match="alpha"):
        OReXGradientHinge(alpha=-1.0)
    with pytest.raises(ValueError, match="requires_grad|require grad"):
        OReXGradientHinge().forward(torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="points"):
        OReXGradientHinge()(TrainContext(model=nn.Identity(), outputs=torch.zeros(2)))
    with pytest.raises(ValueError, match="logits_per_iteration"):
        iterative_bce([], torch.zeros(2))
