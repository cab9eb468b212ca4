from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.quant.elastic_quantization import ElasticQuantization, fake_quantize, kurtosis, skewness


def test_moment_closed_forms() -> None:
    generator = torch.Generator().manual_seed(0)
    uniform = torch.rand(400_000, generator=generator, dtype=torch.float64)
    gauss = torch.randn(400_000, generator=generator, dtype=torch.float64)
    assert abs(float(kurtosis(uniform)) - 1.8) < 0.01
    assert abs(float(kurtosis(gauss)) - 3.0) < 0.05
    symmetric = torch.cat([gauss, -gauss])
    assert abs(float(skewness(symmetric))) < 1e-9


def test_fake_quantize_levels_and_error() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 50)
    for bits in (2, 4, 8):
        step = 2 * w.abs().amax(1) / (2**bits - 1)
        q = fake_quantize(w, step, bits)
        for row, delta in zip(q, step, strict=True):
            assert row.unique().numel() <= 2**bits
            torch.testing.assert_close(row / delta, (row / delta).round(), atol=1e-4, rtol=0)
        inside = w.abs() <= (2 ** (bits - 1) - 1) * step[:, None]
        assert ((q - w).abs()[inside] <= step[:, None].expand_as(w)[inside] / 2 + 1e-6).all()


def test_sandwich_loss_trains_all_bit_widths() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    eq = ElasticQuantization(bit_list=(2, 4, 8))
    eq.prepare(model)
    x, y = torch.randn(128, 8), torch.randint(0, 3, (128,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)

    def losses() -> list[float]:
        out = []
        with torch.no_grad():
            for b in (2, 4, 8):
                eq.set_bits(b)
                out.append(float(nn.functional.cross_entropy(model(x), y)))
        eq.set_bits(8)
        return out

    start = losses()
    for _ in range(40):
        optimizer.zero_grad()
        loss = eq.sandwich_loss(lambda: model(x), y, num_subnets=3, generator=generator)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    end = losses()
    assert all(e < s for s, e in zip(start, end, strict=True))
    assert float(eq.weight_distribution_regularization().detach()) >= 0
    with pytest.raises(ValueError, match="bits"):
        eq.set_bits(3)
