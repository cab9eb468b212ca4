"""MagnitudePruning: dense before the prune step, exact top-k / N:M after."""

from __future__ import annotations

import torch
from torch import nn

from common_regs.sparsity.magnitude_pruning import MagnitudePruning


def test_prunes_smallest_at_the_step_and_not_before() -> None:
    layer = nn.Linear(5, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -2.0, 0.1, 1.0, -0.05]]))
    sched = MagnitudePruning(sparsity=0.6, prune_step=1)
    sched.prepare(nn.Sequential(layer))
    assert int((layer.weight != 0).sum()) == 5
    sched.step()
    assert sched.masks["0.weight"].tolist() == [[0, 1, 0, 1, 0]]
    assert layer.weight.tolist() == [[0.0, -2.0, 0.0, 1.0, -0.0]]


def test_nm_variant() -> None:
    sched = MagnitudePruning(n_m=(2, 4))
    sched.prepare(nn.Sequential(nn.Linear(8, 3)))
    assert torch.equal(sched.masks["0.weight"].reshape(-1, 4).sum(1), torch.full((6,), 2.0))
