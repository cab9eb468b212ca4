"""Filter design helpers (#66): orthogonal filters, orthonormal DCT bank, unit Gabor filters, receptive field."""

from __future__ import annotations

import pytest
import torch

from common_regs.representation import FilterInit, dct_bank, gabor_bank, receptive_field


def test_orthogonal_and_kaiming_initialisation() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
    FilterInit("orthogonal", gain=2.0).apply(model)
    for conv in (model[0], model[2]):
        w = conv.weight.reshape(8, -1)
        torch.testing.assert_close(w @ w.T, 4.0 * torch.eye(8), atol=1e-5, rtol=1e-5)
        assert float(conv.bias.detach().abs().sum()) == 0.0
    FilterInit("kaiming").apply(model)
    assert float(model[2].weight.detach().std()) == pytest.approx((2 / (8 * 9)) ** 0.5, rel=0.25)


def test_dct_bank_is_orthonormal_and_gabor_filters_unit_norm() -> None:
    bank = dct_bank(4).reshape(16, 16)
    torch.testing.assert_close(bank @ bank.T, torch.eye(16), atol=1e-5, rtol=1e-5)
    gabor = gabor_bank(6, 7)
    torch.testing.assert_close(gabor.reshape(6, -1).norm(dim=1), torch.ones(6))
    conv = torch.nn.Conv2d(1, 4, 5)
    FilterInit("gabor").apply(conv)
    assert not torch.equal(conv.weight[0], conv.weight[1])


def test_receptive_field_and_errors() -> None:
    assert receptive_field([3, 3, 3]) == 7
    assert receptive_field([3, 3], strides=[2, 1]) == 7
    assert receptive_field([3], dilations=[4]) == 9
    with pytest.raises(ValueError, match="scheme"):
        FilterInit("wavelet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Conv2d"):
        FilterInit().apply(torch.nn.Linear(2, 2))
