"""Nested dropout (#3): sampled k follows p(k), P(dim kept) non-increasing with dim 1 always kept, σ → ∞ uniform."""

from __future__ import annotations

import torch

from common_regs.robust import NestedDropout, best_prefix
from common_regs.stochastic import truncation_probabilities


def test_sampled_histogram_matches_half_gaussian() -> None:
    layer = NestedDropout(sigma=4.0)
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([layer.sample(10, generator=generator) for _ in range(20000)])
    empirical = torch.bincount(draws - 1, minlength=10).double() / len(draws)
    expected = torch.exp(-((torch.arange(1, 11) / 4.0) ** 2)).double()
    torch.testing.assert_close(empirical, expected / expected.sum(), atol=0.01, rtol=0)


def test_keep_probability_is_non_increasing_and_uniform_limit() -> None:
    keep = NestedDropout(sigma=3.0).keep_probability(12)
    assert float(keep[0]) == 1.0 and bool((keep.diff() <= 0).all())
    wide = truncation_probabilities(8, "half_gaussian", sigma=1e6)
    torch.testing.assert_close(wide, torch.full((8,), 1 / 8, dtype=torch.float64))


def test_forward_is_a_prefix_in_training_and_identity_in_eval() -> None:
    layer = NestedDropout(sigma=2.0)
    x = torch.randn(4, 9)
    out = layer(x)
    k = int(layer.last_kept)
    assert torch.equal(out[:, :k], x[:, :k]) and float(out[:, k:].abs().sum()) == 0.0
    assert torch.equal(layer.eval()(x), x)


def test_leading_dims_get_more_gradient_and_best_prefix() -> None:
    torch.manual_seed(0)
    layer = NestedDropout(sigma=3.0)
    features = torch.randn(16, 8, requires_grad=True)
    for _ in range(200):
        layer(features).pow(2).sum().backward()
    mass = features.grad.abs().sum(0)
    assert float(mass[:2].sum()) > float(mass[-2:].sum())
    w = torch.zeros(2, 4)
    w[0, 0], w[1, 0] = 1.0, -1.0
    feats = torch.tensor([[1.0, 5.0, 0.0, 0.0], [-1.0, 5.0, 0.0, 0.0]])
    best, accuracies = best_prefix(feats, torch.tensor([0, 1]), w)
    assert best == 1 and accuracies[0] == 1.0
