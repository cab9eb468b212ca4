"""GG priors (#12) against the official Space code (gg_init, backslash, DeepShape, rf8), worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from common_regs.api import TrainContext
from common_regs.generative import GeneralizedGaussianPrior
from common_regs.generative.generalized_gaussian_prior import (
    backslash_,
    deepshape_,
    estimate_gg_shape,
    generalized_gaussian_,
    gg_scale_for_std,
    rf8_,
)


def _table_shape(values: list[float]) -> float:
    """ν in {0.10, …, 3.00} nearest in ρ(ν) = Γ(1/ν)Γ(3/ν)/Γ(2/ν)² to n Σw² / (Σ|w|)²."""
    rho = len(values) * sum(v * v for v in values) / sum(abs(v) for v in values) ** 2
    best, best_gap = 0.0, math.inf
    for i in range(291):
        nu = round(0.1 + 0.01 * i, 2)
        gap = abs(rho - math.gamma(1 / nu) * math.gamma(3 / nu) / math.gamma(2 / nu) ** 2)
        if gap < best_gap:
            best, best_gap = nu, gap
    return best


@pytest.mark.parametrize("beta", [1.0, 1.5, 2.0])
def test_gg_sampler_matches_scipy_gennorm(beta: float) -> None:
    w = generalized_gaussian_(torch.empty(50_000, dtype=torch.float64), beta, 0.5, torch.Generator().manual_seed(0))
    alpha = gg_scale_for_std(beta, 0.5)
    assert stats.kstest(w.numpy(), stats.gennorm(beta, scale=alpha).cdf).pvalue > 0.01
    assert float(w.std()) == pytest.approx(0.5, rel=0.02)


def test_gg_init_uses_xi_over_fan_out_and_zeroes_biases() -> None:
    layer = nn.Linear(50, 1000).double()
    GeneralizedGaussianPrior(beta=1.2, xi=2.0).initialize(layer, torch.Generator().manual_seed(0))
    alpha = math.sqrt(2.0 / 1000 * math.gamma(1 / 1.2) / math.gamma(3 / 1.2))  # official gg_init, n = shape[0]
    w = layer.weight.detach().flatten().numpy()
    assert stats.kstest(w, stats.gennorm(1.2, scale=alpha).cdf).pvalue > 0.01
    assert float(np.std(w)) == pytest.approx(math.sqrt(2.0 / 1000), rel=0.02)
    assert torch.equal(layer.bias.detach(), torch.zeros(1000, dtype=torch.float64))


def test_shape_estimate_and_backslash_step_by_hand() -> None:
    values = [0.3, -0.05, 0.0, 1.2, -0.7, 0.01]
    assert estimate_gg_shape([torch.tensor(values)]) == _table_shape(values)
    nu = _table_shape(values)
    p = torch.tensor(values, dtype=torch.float64)
    assert backslash_([p], rdo=2.0, clip=1.0) == nu
    for got, w in zip(p.tolist(), values, strict=True):
        sign = (w > 0) - (w < 0)
        assert got == pytest.approx(w - 2.0 * nu / 6 * sign * (abs(w) + 1.0) ** (nu - 1), abs=1e-12)


def test_rate_term_gradient_equals_the_official_step() -> None:
    layer = nn.Linear(3, 2).double()
    prior = GeneralizedGaussianPrior(rdo=5.0, include=("weight",))
    w = layer.weight.detach().flatten().tolist()
    nu = _table_shape(w)
    value = prior(TrainContext(model=layer))
    (grad,) = torch.autograd.grad(value, layer.weight)
    assert float(value.detach()) == pytest.approx(5.0 / 6 * sum((abs(v) + 1) ** nu for v in w), rel=1e-12)
    for g, v in zip(grad.flatten().tolist(), w, strict=True):
        assert g == pytest.approx(5.0 * nu / 6 * math.copysign(1, v) * (abs(v) + 1) ** (nu - 1), rel=1e-12)
    before, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    prior.step(layer)
    torch.testing.assert_close(layer.weight.detach(), before - grad)
    assert torch.equal(layer.bias.detach(), bias)  # untouched by `include=("weight",)`


def _deepshape_reference(values: list[float], shape_scale: float, std_scale: float, adj_minnum: int,
                         bits: int) -> list[float]:
    step = 2**bits
    codes = [round(v * step) for v in values]
    counts: dict[int, int] = {}
    for c in codes:
        counts[c] = counts.get(c, 0) + 1
    c_max = min(c for c, k in counts.items() if k <= adj_minnum and c > 0)
    cut = [v for v in values if abs(v) <= c_max / step]
    nu = _table_shape(cut)
    std = math.sqrt(sum(v * v for v in cut) / len(cut))
    alpha = math.sqrt(math.gamma(1 / nu) / math.gamma(3 / nu)) * std * step
    mu = int(sum(cut) / len(cut) * step)
    idx = sorted((i for i, c in enumerate(codes) if mu - c_max <= c <= mu + c_max), key=lambda i: (codes[i], i))
    xs = list(range(mu - c_max, mu + c_max + 1))
    dens = [math.exp(-((abs(x - mu) / (alpha * std_scale)) ** (nu * shape_scale))) for x in xs]
    quota = [int(len(idx) * d / sum(dens)) for d in dens]
    new = list(codes)
    pos = 0
    for x, q in zip(xs, quota, strict=True):
        for i in idx[pos:pos + q]:
            new[i] = x
        pos += q
    return [c / step for c in new]


def test_deepshape_matches_a_hand_loop() -> None:
    rng = np.random.default_rng(0)
    values = (rng.laplace(scale=0.6, size=400)).tolist()
    p = torch.tensor(values, dtype=torch.float64).reshape(20, 20)
    q = torch.zeros(3, dtype=torch.float64)  # a second tensor: codes are pooled over all parameters
    deepshape_([p, q], shape_scale=0.8, std_scale=0.6, adj_minnum=6, bits=3)
    expected = _deepshape_reference(values + [0.0, 0.0, 0.0], 0.8, 0.6, 6, 3)
    np.testing.assert_allclose(torch.cat([p.flatten(), q]).numpy(), expected, atol=1e-12)
    assert float(p.std()) < float(np.std(values))  # narrower target (std_scale 0.6)


def test_rf8_keeps_two_leading_powers_of_two_by_hand() -> None:
    p = torch.tensor([0.75, 1.03, -0.3, 3.0, 0.0, 5.5])
    rf8_([p])
    # 0.75 = 1 - 0.25 (e1 - e2 = 2); 1.03 -> 1 (residual 2^-5: gap 5 > 4); -0.3 -> -0.25 - 0.0625;
    # 3 = 4 - 1; 0 stays 0; 5.5 -> 4 + 2 (round(log2 5.5) = 2, residual 1.5 -> 2^1).
    torch.testing.assert_close(p, torch.tensor([0.75, 1.0, -0.3125, 3.0, 0.0, 6.0]))
