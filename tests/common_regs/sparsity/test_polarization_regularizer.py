"""PolarizationRegularizer (#5): zero for constant gates, gradient toward the nearer of {0, 1}, toy sparsity."""

from __future__ import annotations

import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.sparsity.polarization_regularizer import ConsensusGate, PolarizationRegularizer, polarization_terms


def test_polarization_is_zero_for_constant_gates() -> None:
    gates = torch.tensor([[1.0, 0.0, 1.0]] * 5)
    _, polar = polarization_terms(gates, 0.5)
    assert float(polar) == 0.0


def test_gradient_pushes_toward_nearer_pole() -> None:
    mean_gate = torch.tensor([0.8, 0.3], requires_grad=True)
    gates = mean_gate.expand(4, 2)
    _, polar = polarization_terms(gates, 0.5)
    polar.backward()
    assert mean_gate.grad[0] < 0 < mean_gate.grad[1]  # descent raises 0.8 → 1 and lowers 0.3 → 0


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(6, 8)
        self.gate = ConsensusGate(6, 8, init_bias=0.5)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.layer(x)) * self.gate(x))


def test_toy_run_reaches_target_density_with_constant_gates() -> None:
    torch.manual_seed(0)
    model = _Gated()
    reg = PolarizationRegularizer(sparsity=0.5, sparsity_weight=5.0, polarization_weight=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.randn(64, 6)
    y = x[:, :1]
    for _ in range(200):
        out = model(x)
        loss = ((out - y) ** 2).mean() + reg(TrainContext(model=model, outputs=out))
        opt.zero_grad()
        loss.backward()
        opt.step()
    gates = model.gate(x).detach()
    assert abs(float(gates.mean()) - 0.5) <= 0.125
    assert reg.last_components["polarization"] < 0.5  # of at most 8 · 0.25 = 2 for 8 gates
    mask = model.gate.consensus_mask(x)
    assert set(mask.tolist()) <= {0.0, 1.0}
