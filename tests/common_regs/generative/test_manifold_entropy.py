from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.generative.manifold_entropy import (
    ManifoldEntropy,
    disomap_loss,
    dlle_loss,
    kl_entropy,
    mee_entropy,
    nearest_sq_distance,
)


def _gaussian(d: int, n: int, m: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.5 + torch.eye(d, dtype=torch.float64)
    cov = a @ a.T
    chol = torch.linalg.cholesky(cov)
    reference = torch.randn(n, d, generator=g, dtype=torch.float64) @ chol.T
    queries = torch.randn(m, d, generator=g, dtype=torch.float64) @ chol.T
    entropy = 0.5 * math.log((2 * math.pi * math.e) ** d * float(torch.linalg.det(cov)))
    return queries, reference, entropy


@pytest.mark.parametrize("d", [2, 3])
def test_nearest_neighbour_entropy_of_a_gaussian_matches_the_closed_form(d: int) -> None:
    queries, reference, entropy = _gaussian(d, 8000, 3000)
    assert float(kl_entropy(queries, reference)) == pytest.approx(entropy, abs=0.06)


def test_mee_statistic_is_kl_plus_a_nonnegative_scale_free_bias() -> None:
    """log-mean ≥ mean-log (Jensen); the gap does not depend on the covariance, and for a Gaussian it approaches the
    asymptotic value (d/2)logΓ(1+2/d) − d/2 − (d²/4)log(1−2/d) + γ (nρᵈV_d p ~ Exp(1), E e^{Q/d} = (1−2/d)^{−d/2})."""
    d = 6
    queries, reference, _ = _gaussian(d, 8000, 4000)
    gap = float(mee_entropy(queries, reference) - kl_entropy(queries, reference))
    predicted = d / 2 * math.lgamma(1 + 2 / d) - d / 2 - d * d / 4 * math.log(1 - 2 / d) + 0.5772156649015329
    assert gap > 0
    assert gap == pytest.approx(predicted, abs=0.25)  # heavy-tailed mean of ρ²: 0.68–0.96 over seeds 0–4
    scale = 3.0  # H(cX) = H(X) + d log c exactly, for both estimators
    q, r = queries[:200], reference[:500]
    for estimator in (kl_entropy, mee_entropy):
        shifted = float(estimator(scale * q + 1.0, scale * r + 1.0))
        assert shifted - float(estimator(q, r)) == pytest.approx(d * math.log(scale), abs=1e-9)


def test_entropy_term_value_buffer_and_direction() -> None:
    term = ManifoldEntropy(code_dim=2, buffer_size=5)
    term.load_state_dict({"buffer": torch.zeros(5, 2)})
    codes = torch.tensor([[1.0, 1.0], [2.0, 0.0]], requires_grad=True)
    loss = term.forward(codes)
    # nearest buffer code is 0 for both: mean over samples of ‖z‖²/d = (1 + 2) / 2
    assert float(loss.detach()) == pytest.approx(-math.log(1.5))
    (grad,) = torch.autograd.grad(loss, codes)
    assert float((grad * codes.detach()).sum()) < 0  # descending moves codes away from their nearest neighbours
    torch.testing.assert_close(term.buffer[-2:], codes.detach())  # FIFO: newest at the end, size kept
    assert term.buffer.shape == (5, 2)
    spread = ManifoldEntropy(code_dim=2, buffer_size=5)
    spread.load_state_dict({"buffer": torch.zeros(5, 2)})
    # more spread → lower loss (higher entropy)
    assert float(spread.forward(3 * codes.detach())) < float(loss.detach())
    state = term.state_dict()
    fresh = ManifoldEntropy(code_dim=2, buffer_size=5)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(TrainContext(model=nn.Identity(), outputs=codes.detach())),
                               term(TrainContext(model=nn.Identity(), extras={"codes": codes.detach()})))


def test_dlle_and_disomap_vanish_for_consistent_linear_encoders() -> None:
    encoder = nn.Linear(4, 3, bias=False).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    assert float(dlle_loss(encoder, x, x)) == 0.0
    x_fake = torch.randn(6, 4, dtype=torch.float64)
    alpha = torch.randn(6, dtype=torch.float64)
    assert float(disomap_loss(encoder, x, x_fake, alpha, torch.zeros(6, 3, dtype=torch.float64))) < 1e-25
    bent = nn.Sequential(nn.Linear(4, 3), nn.Tanh()).double()  # a non-linear encoder is penalized
    assert float(disomap_loss(bent, x, x_fake, alpha, torch.zeros(6, 3, dtype=torch.float64))) > 1e-4


def test_validation() -> None:
    with pytest.raises(ValueError, match="codes"):
        ManifoldEntropy(code_dim=3).forward(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="reference"):
        nearest_sq_distance(torch.zeros(2, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="buffer_size"):
        ManifoldEntropy(buffer_size=0)
