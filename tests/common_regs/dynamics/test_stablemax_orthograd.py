from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common_regs.api import TrainContext
from common_regs.dynamics import OrthogonalGradient, StableMaxCrossEntropy
from common_regs.dynamics.orthogonal_gradient import orthogonal_gradient
from common_regs.dynamics.stablemax_cross_entropy import _s, stablemax, stablemax_cross_entropy


def test_stablemax_is_finite_where_float32_softmax_collapses() -> None:
    logits = torch.tensor([[1e3, 0.0, -5.0], [0.0, 2e3, 1.0]], dtype=torch.float32, requires_grad=True)
    targets = torch.tensor([0, 1])
    (soft_grad,) = torch.autograd.grad(F.cross_entropy(logits, targets), logits)
    assert torch.count_nonzero(soft_grad) == 0  # softmax collapse: the gradient is exactly zero in float32
    loss = stablemax_cross_entropy(logits, targets)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and loss > 0 and torch.count_nonzero(grad) > 0
    expected = -torch.log(torch.tensor([1001.0 / (1001 + 1 + 1 / 6), 2001.0 / (1 + 2001 + 2)], dtype=torch.float64))
    torch.testing.assert_close(stablemax_cross_entropy(logits.detach(), targets, reduction="none").double(), expected)


def test_stablemax_shape_invariants() -> None:
    z = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(stablemax(z).sum(-1), torch.ones(4, dtype=torch.float64))
    assert not torch.allclose(stablemax(z + 3.0), stablemax(z))  # not shift-invariant, unlike softmax
    torch.testing.assert_close(torch.softmax(z + 3.0, -1), torch.softmax(z, -1))
    x = torch.tensor([-1e-6, 0.0, 1e-6], dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(_s(x).sum(), x)
    torch.testing.assert_close(d, torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)  # C¹ at 0, s(0) = 1
    term = StableMaxCrossEntropy()
    value = term(TrainContext(model=nn.Identity(), outputs=z.float(), batch=(None, torch.tensor([0, 1, 2, 3]))))
    torch.testing.assert_close(value.double(), stablemax_cross_entropy(z, torch.tensor([0, 1, 2, 3])), atol=1e-6,
                               rtol=0)
    with pytest.raises(ValueError, match="`reduction`"):
        StableMaxCrossEntropy(reduction="max")


def test_orthograd_update_is_orthogonal_to_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    F.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 3, (8,))).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    OrthogonalGradient().apply(TrainContext(model=model))
    for name, p in model.named_parameters():
        cos = torch.dot(p.detach().reshape(-1), p.grad.reshape(-1)) / (p.norm() * p.grad.norm())
        assert abs(float(cos.detach())) < 1e-5, name
        torch.testing.assert_close(p.grad.norm(), before[name].norm())  # renormalized to ‖g‖
    w, g = torch.tensor([3.0, 4.0]), torch.tensor([1.0, 0.0])
    torch.testing.assert_close(orthogonal_gradient(w, g, renormalize=False), g - 0.12 * w)


def test_orthograd_sgd_step_changes_weight_norm_only_at_second_order() -> None:
    torch.manual_seed(1)
    layer = nn.Linear(5, 5, bias=False)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-2)
    w0 = layer.weight.detach().clone()
    layer(torch.randn(16, 5)).pow(2).sum().backward()  # this gradient mostly shrinks the weights
    OrthogonalGradient().apply(TrainContext(model=layer))
    g = layer.weight.grad.clone()
    opt.step()
    # ‖w − ηg⊥‖² = ‖w‖² + η²‖g⊥‖² exactly, because ⟨w, g⊥⟩ = 0
    expected = w0.pow(2).sum() + 1e-4 * g.pow(2).sum()
    torch.testing.assert_close(layer.weight.detach().pow(2).sum(), expected, rtol=1e-5, atol=1e-6)
