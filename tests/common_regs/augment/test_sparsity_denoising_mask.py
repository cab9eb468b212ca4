"""MID (#34): mask rate, identity at ρ = 0 without noise, noise bank refit from residuals."""

from __future__ import annotations

import pytest
import torch

from common_regs.augment import SparsityDenoisingMask


def test_mask_rate_and_masked_entries_are_zero() -> None:
    mid = SparsityDenoisingMask(mask_ratio=0.3, noise_std=0.0, seed=0)
    x = torch.rand(200, 50) + 1.0
    x_in, target, mask = mid(x)
    assert float(1 - mask.mean()) == pytest.approx(0.3, abs=0.01)
    assert torch.equal(x_in[mask == 0], torch.zeros(int((mask == 0).sum())))
    assert torch.equal(target, x) and torch.equal(x_in[mask == 1], x[mask == 1])


def test_refit_samples_stored_residuals_up_to_sign() -> None:
    mid = SparsityDenoisingMask(mask_ratio=0.0, seed=1)
    noisy = torch.randn(5, 4)
    denoised = noisy - torch.arange(5, dtype=torch.float32)[:, None].expand(5, 4)  # residual rows r_j = j
    mid.refit(noisy, denoised)
    x = torch.zeros(64, 4)
    x_in, _, _ = mid(x)
    values = set(x_in[:, 0].round().tolist())
    assert values <= {float(v) for v in range(-4, 5)} and len(values) > 3
    torch.testing.assert_close(x_in, x_in[:, :1].expand_as(x_in))  # whole residual rows
    with pytest.raises(ValueError, match="bank"):
        mid(torch.zeros(2, 3))
