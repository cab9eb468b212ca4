"""MaskSparsity (#16): unmasked γ gradients untouched; with zero task gradient, masked γ decays by s·lr per step."""

from __future__ import annotations

import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.sparsity.mask_sparsity import MaskSparsity, global_bn_prune_masks


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.9, -0.05, 0.5, 0.02]))
        model[3].weight.copy_(torch.tensor([-0.01, 0.7, 0.3, -0.8]))
    return model


def test_global_ranking_marks_smallest_gammas() -> None:
    masks = global_bn_prune_masks(_model(), 0.375)  # 3 of 8 channels
    assert masks["1.weight"].tolist() == [0, 1, 0, 1]
    assert masks["3.weight"].tolist() == [1, 0, 0, 0]


def test_only_masked_gradients_change() -> None:
    model = _model()
    reg = MaskSparsity(sparsity=0.375, strength=0.1)
    model(torch.randn(8, 4)).sum().backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    reg.apply(TrainContext(model=model))
    gamma = model[1].weight
    expected = before["1.weight"] + 0.1 * torch.sign(gamma.detach()) * torch.tensor([0.0, 1.0, 0.0, 1.0])
    torch.testing.assert_close(gamma.grad, expected)
    torch.testing.assert_close(model[0].weight.grad, before["0.weight"])


def test_zero_task_gradient_gives_linear_decay() -> None:
    model = _model()
    reg = MaskSparsity(sparsity=0.375, strength=0.01)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    start = model[1].weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        reg.apply(TrainContext(model=model))
        opt.step()
    # |γ| of the masked channel 3 (0.02) shrinks by s·lr = 0.005 per step
    torch.testing.assert_close(model[1].weight.detach()[3], start[3] - 3 * 0.005)
    torch.testing.assert_close(model[1].weight.detach()[0], start[0])
