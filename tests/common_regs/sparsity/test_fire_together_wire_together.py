"""FTWT (#7): heat-mass targets on hand-made heatmaps; predictors learn a separable toy; eval gating skips channels."""

from __future__ import annotations

import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.sparsity.fire_together_wire_together import FireTogetherWireTogether, FTWTLayer, heat_mass_targets


def test_targets_take_the_smallest_k_reaching_the_mass() -> None:
    heat = torch.tensor([[5.0, 3.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    targets = heat_mass_targets(heat, 0.7)  # row 0: 5/10 < 0.7 <= 8/10 → k=2; row 1: 3/4 ≥ 0.7 → k=3
    assert targets[0].tolist() == [1, 1, 0, 0]
    assert int(targets[1].sum()) == 3
    assert heat_mass_targets(heat, 1.0)[0].tolist() == [1, 1, 1, 1]


def test_predictor_learns_a_separable_toy_and_eval_gates() -> None:
    torch.manual_seed(0)
    block = nn.Linear(4, 2)
    with torch.no_grad():  # channel 0 fires for x0 > 0, channel 1 for x0 < 0
        block.weight.copy_(torch.tensor([[4.0, 0, 0, 0], [-4.0, 0, 0, 0]]))
        block.bias.zero_()
    layer = FTWTLayer(nn.Sequential(block, nn.ReLU()), in_channels=4, out_channels=2, mass=0.9)
    model = nn.Sequential(layer)
    loss_term = FireTogetherWireTogether()
    opt = torch.optim.Adam(layer.predictor.parameters(), lr=0.1)
    x = torch.randn(256, 4)
    for _ in range(80):
        model(x)
        loss = loss_term(TrainContext(model=model))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = model(x)
    predicted = (out != 0).float()
    expected = torch.stack([x[:, 0] > 0, x[:, 0] < 0], 1).float()
    assert float((predicted == expected).float().mean()) > 0.95
    assert abs(layer.last_active_fraction - 0.5) < 0.05  # one of two channels computed: half the FLOPs
