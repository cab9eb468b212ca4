"""FTWT (#7) against the official code (selkerdawy/FTWT): heat = spatial max, get_gt_mask_ratio targets, the
predictor head Linear(softmax(GAP(x))), output gating in training, compute_mask_loss_per_input, cooldown; all
expectations worked out by hand or with plain-Python loops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.sparsity.fire_together_wire_together import (
    FireTogetherWireTogether,
    FTWTLayer,
    channel_heat,
    ftwt_mask_loss,
    heat_mass_targets,
)


def test_heat_is_the_spatial_max_not_the_l1_sum() -> None:
    act = torch.tensor([[[[0.0, 0.0], [0.0, -3.0]], [[1.0, 1.0], [1.0, 1.0]]]])  # L1: (3, 4); max |.|: (3, 1)
    assert channel_heat(act).tolist() == [[3.0, 1.0]]
    assert channel_heat(torch.tensor([[-2.0, 0.5]])).tolist() == [[2.0, 0.5]]


def test_targets_follow_the_official_mass_rule() -> None:
    heat = torch.tensor([[5.0, 3.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [9.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # shares 0.5/0.3/0.1/0.1 -> cumsum 0.5, 0.8, ... : only the first stays within 0.7 (the crossing one is off)
    # 0.25 each -> cumsum 0.25, 0.5, 0.75 > 0.7: two kept; 0.9 > 0.7 already: none kept; all-zero row: all kept
    assert heat_mass_targets(heat, 0.7).tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    # r = 1: only channels with share <= 1e-5 are off
    assert heat_mass_targets(heat, 1.0).tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]]
    # cumsum exactly at r is kept (tolerance 1e-5): 0.5 + 0.3 = 0.8
    assert heat_mass_targets(heat[:1], 0.8).tolist() == [[1, 1, 0, 0]]
    # the rule ranks by share, not by position
    assert heat_mass_targets(torch.tensor([[1.0, 5.0, 3.0, 1.0]]), 0.8).tolist() == [[0, 1, 1, 0]]


def _bce(z: float, y: float) -> float:
    p = 1.0 / (1.0 + math.exp(-z))
    return -(y * math.log(p) + (1.0 - y) * math.log(1.0 - p))


def test_layer_forward_and_loss_match_a_hand_computation() -> None:
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]], [[2.0, -2.0]]], [[[0.5, 0.0]], [[4.0, 0.0]], [[1.0, 1.0]]]])
    w = [[1.0, -2.0, 0.5], [0.0, 1.0, -1.0], [2.0, 0.0, 0.0]]
    b = [-0.7, 0.1, 0.2]
    layer = FTWTLayer(nn.Identity(), in_channels=3, out_channels=3, mass=0.75)
    with torch.no_grad():
        layer.predictor.weight.copy_(torch.tensor(w))
        layer.predictor.bias.copy_(torch.tensor(b))
    out = layer(x)
    assert out[:, 0].abs().sum() == 0 < x[:, 0].abs().sum()  # this case exercises the gate (channel 0 closed)

    total = 0.0
    for i in range(2):
        flat = [[float(v) for v in x[i, c].flatten()] for c in range(3)]
        gap = [sum(vals) / len(vals) for vals in flat]
        exps = [math.exp(g) for g in gap]
        soft = [e / sum(exps) for e in exps]
        logits = [sum(w[o][c] * soft[c] for c in range(3)) + b[o] for o in range(3)]
        assert layer.last_logits[i].tolist() == pytest.approx(logits, rel=1e-6)
        for c in range(3):  # output gated by 1[sigmoid(logit) > 1/2], also in training
            expected = [v * (1.0 if logits[c] > 0 else 0.0) for v in flat[c]]
            assert out[i, c].flatten().tolist() == pytest.approx(expected)
        heat = [max(abs(v) for v in vals) for vals in flat]
        order = sorted(range(3), key=lambda c: -heat[c])
        target, cum = [0.0] * 3, 0.0
        for c in order:
            cum += heat[c] / sum(heat)
            target[c] = 1.0 if cum - 0.75 <= 1e-5 else 0.0
        assert layer.last_targets[i].tolist() == target
        total += sum(_bce(logits[c], target[c]) for c in range(3)) / 2  # mean over the batch of 2, sum over C
    loss = FireTogetherWireTogether()(TrainContext(model=nn.Sequential(layer)))
    assert float(loss.detach()) == pytest.approx(total, rel=1e-6)


def test_loss_is_the_mean_over_layers_and_zero_after_cooldown() -> None:
    z1, y1 = torch.tensor([[0.3, -1.0]]), torch.tensor([[1.0, 0.0]])
    z2, y2 = torch.tensor([[2.0], [-0.5]]), torch.tensor([[0.0], [0.0]])
    layer1 = (_bce(0.3, 1) + _bce(-1.0, 0)) / 1
    layer2 = (_bce(2.0, 0) + _bce(-0.5, 0)) / 2
    assert float(ftwt_mask_loss([z1, z2], [y1, y2])) == pytest.approx((layer1 + layer2) / 2, rel=1e-6)

    model = nn.Sequential(FTWTLayer(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), 4, 3))
    model(torch.randn(8, 4))
    term = FireTogetherWireTogether(cooldown_epoch=2)
    assert float(term(TrainContext(model=model, epoch=1)).detach()) > 0
    assert float(term(TrainContext(model=model, epoch=2)).detach()) == 0.0
    with pytest.raises(ValueError, match="cooldown_epoch"):
        FireTogetherWireTogether(cooldown_epoch=-1)


def test_predictor_learns_a_separable_toy_and_gates_half_the_channels() -> None:
    torch.manual_seed(0)
    block = nn.Linear(2, 2)
    with torch.no_grad():  # channel 0 fires for a > 0, channel 1 for a < 0
        block.weight.copy_(torch.tensor([[4.0, 0.0], [-4.0, 0.0]]))
        block.bias.zero_()
    layer = FTWTLayer(nn.Sequential(block, nn.ReLU()), in_channels=2, out_channels=2)
    model = nn.Sequential(layer)
    loss_term = FireTogetherWireTogether()
    opt = torch.optim.Adam(layer.predictor.parameters(), lr=0.1)
    a = torch.randn(256)
    x = torch.stack([a, -a], 1)  # softmax(x)_0 = sigmoid(2a): the targets are linearly separable
    for _ in range(100):
        model(x)
        loss = loss_term(TrainContext(model=model))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = model(x)
    predicted = (out != 0).float()
    expected = torch.stack([a > 0, a < 0], 1).float()
    assert float((predicted == expected).float().mean()) > 0.95
    assert abs(layer.last_active_fraction - 0.5) < 0.05  # one of two channels computed: half the FLOPs
