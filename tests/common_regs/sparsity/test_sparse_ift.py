"""SparseIFT (#42): counted FLOPs of transformed layers equal the dense FLOPs; s = 0 is dense."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.sparsity.sparse_ift import SparseIFT, iso_flop_size, linear_flops, sparse_wide_widths


@pytest.mark.parametrize("transform", ["factorized", "doped", "parallel"])
@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_counted_flops_match_dense(transform: str, sparsity: float) -> None:
    d_in, d_out = 64, 48
    dense = nn.Sequential(nn.Linear(d_in, d_out))
    model = nn.Sequential(nn.Linear(d_in, d_out))
    sched = SparseIFT(transform, sparsity)
    sched.apply_transform(model)
    sched.prepare(model)
    counted = linear_flops(model)
    tolerance = {"factorized": d_in + d_out, "doped": d_in + d_out, "parallel": d_in * d_out // 2}[transform]
    assert abs(counted - linear_flops(dense)) <= tolerance
    for mask in sched.masks.values():
        assert mask.mean().item() == pytest.approx(1 - sparsity, abs=1.0 / mask.numel())


def test_closed_form_sizes_and_dense_limit() -> None:
    assert iso_flop_size("factorized", 100, 100, 0.0) == pytest.approx(50.0)
    assert iso_flop_size("factorized", 100, 100, 0.75) == pytest.approx(200.0)
    assert iso_flop_size("doped", 100, 100, 0.0) == 0.0
    assert iso_flop_size("parallel", 1, 1, 0.75) == pytest.approx(4.0)
    assert sparse_wide_widths([64, 100, 10], 0.75) == [64, 200, 10]
    # Sparse Wide: hidden layer FLOPs (1 - s) * (k h)^2 = h^2
    assert (1 - 0.75) * 200 * 200 == pytest.approx(100 * 100)


def test_doped_with_zero_sparsity_is_the_dense_layer_function() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    dense = model[0]
    sched = SparseIFT("doped", 0.0)
    sched.apply_transform(model)
    with torch.no_grad():
        model[0].sparse.weight.copy_(dense.weight)
        model[0].sparse.bias.copy_(dense.bias)
    sched.prepare(model)
    x = torch.randn(3, 8)
    torch.testing.assert_close(model(x), dense(x))
