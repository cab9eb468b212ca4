"""PS-KD (#25): α schedule, α = 0 is CE, ∂L/∂z = (p - ỹ)/B, store updates only seen rows, RegHooks wiring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common_regs.api import TrainContext
from common_regs.distill import DistillLoss, ProgressiveSelfDistillation, pskd_alpha, pskd_targets
from common_regs.training import RegHooks


def _ctx(logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, epoch: int) -> TrainContext:
    return TrainContext(
        model=torch.nn.Identity(), batch=(None, labels), outputs=logits, epoch=epoch, sample_indices=indices
    )


def test_alpha_schedule_matches_official_formula() -> None:
    assert [pskd_alpha(0.8, e, 4) for e in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert pskd_alpha(0.8, 10, 4) == pytest.approx(0.8)  # capped at α_T


def test_alpha_zero_gives_cross_entropy_value_and_gradient() -> None:
    torch.manual_seed(0)
    z = torch.randn(5, 4, requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2])
    target = pskd_targets(y, torch.softmax(torch.randn(5, 4), -1), alpha=0.0)
    loss = ProgressiveSelfDistillation.loss(z, target)
    (grad,) = torch.autograd.grad(loss, z)
    z2 = z.detach().clone().requires_grad_(True)
    reference = F.cross_entropy(z2, y)
    reference.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, z2.grad)


def test_gradient_is_p_minus_soft_target_over_batch() -> None:
    torch.manual_seed(1)
    z = torch.randn(3, 5, requires_grad=True)
    target = pskd_targets(torch.tensor([4, 0, 2]), torch.softmax(torch.randn(3, 5), -1), alpha=0.6)
    torch.testing.assert_close(target.sum(-1), torch.ones(3))
    ProgressiveSelfDistillation.loss(z, target).backward()
    torch.testing.assert_close(z.grad, (torch.softmax(z.detach(), -1) - target) / 3)


def test_store_holds_last_epoch_predictions_and_only_touches_batch_rows() -> None:
    pskd = ProgressiveSelfDistillation(num_samples=6, num_classes=3, alpha_final=1.0, total_epochs=1)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    labels, indices = torch.tensor([0, 2]), torch.tensor([1, 4])
    first = pskd.targets(_ctx(logits, labels, indices, epoch=0))
    torch.testing.assert_close(first, F.one_hot(labels, 3).float())  # unseen rows: one-hot, whatever α
    assert pskd.seen.tolist() == [False, True, False, False, True, False]
    torch.testing.assert_close(pskd.store[[1, 4]], torch.softmax(logits, -1))
    assert float(pskd.store[[0, 2, 3, 5]].abs().sum()) == 0.0
    second = pskd.targets(_ctx(torch.zeros(2, 3), labels, indices, epoch=1))  # α = 1: last epoch's softmax
    torch.testing.assert_close(second, torch.softmax(logits, -1))


def test_state_dict_round_trip_and_bad_indices() -> None:
    pskd = ProgressiveSelfDistillation(num_samples=3, num_classes=2)
    pskd.targets(_ctx(torch.randn(2, 2), torch.tensor([0, 1]), torch.tensor([0, 2]), epoch=0))
    clone = ProgressiveSelfDistillation(num_samples=3, num_classes=2)
    clone.load_state_dict(pskd.state_dict())
    assert torch.equal(clone.store, pskd.store) and torch.equal(clone.seen, pskd.seen)
    with pytest.raises(ValueError, match="sample_indices"):
        pskd.targets(_ctx(torch.randn(1, 2), torch.tensor([0]), torch.tensor([3]), epoch=0))
    with pytest.raises(ValueError, match="alpha_final"):
        ProgressiveSelfDistillation(3, 2, alpha_final=1.5)


def test_reghooks_pskd_with_distill_loss_equals_cross_entropy_at_epoch_zero() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    hooks = RegHooks([ProgressiveSelfDistillation(8, 3, total_epochs=2), DistillLoss("soft_ce")], model, optimizer)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    loss = hooks.step(
        (x, y), lambda b: model(b[0]), lambda out, b: out.sum() * 0.0, epoch=0, sample_indices=torch.arange(5)
    )
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y).detach())
