"""Ordered truncation primitive: distributions, prefix masks, per-sample draws, expected kept length."""

from __future__ import annotations

import pytest
import torch

from common_regs.stochastic import OrderedTruncation, prefix_mask, truncation_probabilities


def test_probabilities_of_each_sampler() -> None:
    torch.testing.assert_close(
        truncation_probabilities(4, "uniform", k_min=3), torch.tensor([0, 0, 0.5, 0.5]).double()
    )
    geometric = truncation_probabilities(3, "geometric", p=0.5)
    torch.testing.assert_close(geometric, torch.tensor([4.0, 2.0, 1.0]).double() / 7)
    with pytest.raises(ValueError, match="sampler"):
        truncation_probabilities(3, "beta")  # type: ignore[arg-type]


def test_prefix_mask_and_per_sample_forward() -> None:
    assert prefix_mask(4, torch.tensor([1, 3])).tolist() == [[1, 0, 0, 0], [1, 1, 1, 0]]
    layer = OrderedTruncation(dim=1, sampler="uniform", per_sample=True)
    x = torch.ones(50, 6, 2)
    out = layer(x, generator=torch.Generator().manual_seed(0))
    kept = (out[:, :, 0] != 0).sum(1)
    assert torch.equal(kept, layer.last_kept)
    assert torch.equal(out[:, :, 0], prefix_mask(6, layer.last_kept))  # prefix-shaped rows


def test_expected_kept_length_matches_monte_carlo() -> None:
    layer = OrderedTruncation(sampler="geometric", p=0.3)
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([layer.sample(10, generator=generator) for _ in range(20000)]).double()
    assert float(draws.mean()) == pytest.approx(layer.expected_kept(10), abs=0.05)
