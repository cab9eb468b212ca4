"""IterativeSoftShrinkage (#58): bottom set scaled by exactly the ratio, re-entry possible, ratio 0 = IHT."""

from __future__ import annotations

import torch
from torch import nn

from common_regs.sparsity.iterative_soft_shrinkage import IterativeSoftShrinkage, soft_shrink_


def test_one_call_scales_the_bottom_set_by_the_ratio() -> None:
    w = torch.tensor([0.5, -0.1, 2.0, -0.3, 0.05, 1.0])
    out = w.clone()
    mask = soft_shrink_(out, sparsity=0.5, ratio=0.9)
    assert mask.tolist() == [1, 0, 1, 0, 0, 1]
    torch.testing.assert_close(out, torch.tensor([0.5, -0.09, 2.0, -0.27, 0.045, 1.0]))


def test_ratio_zero_is_iterative_hard_thresholding() -> None:
    w = torch.randn(100)
    out = w.clone()
    soft_shrink_(out, 0.7, 0.0)
    assert int((out == 0).sum()) == 70
    assert torch.equal(out[out != 0], w[out != 0])


def test_weights_can_re_enter_the_kept_set() -> None:
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.9, 0.1, 0.05]]))
    sched = IterativeSoftShrinkage(sparsity=0.5, shrink_ratio=0.95)
    sched.prepare(nn.Sequential(layer))
    sched.step()
    assert sched.masks["0.weight"].tolist() == [[1, 1, 0, 0]]
    with torch.no_grad():  # the optimizer grows a shrunk weight past a kept one
        sched.original("0.weight")[0, 2] = 2.0
    sched.step()
    assert sched.masks["0.weight"].tolist() == [[1, 0, 1, 0]]
    assert not sched.is_hard
