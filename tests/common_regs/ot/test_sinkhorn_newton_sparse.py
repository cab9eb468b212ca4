from __future__ import annotations

import numpy as np
import pytest
import torch

from common_regs.ot import Sinkhorn, SinkhornNewtonSparse
from common_regs.ot._utils import dual_objective, log_plan
from common_regs.ot.sinkhorn import sinkhorn
from common_regs.ot.sinkhorn_newton_sparse import sinkhorn_newton_sparse, sparsified_hessian

ot = pytest.importorskip("ot", reason="POT is the reference implementation for these checks")


def _problem(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    y = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    return torch.full((n,), 1.0 / n, dtype=torch.float64), torch.cdist(x, y) ** 2


def test_sns_reaches_sinkhorn_plan_in_fewer_iterations() -> None:
    w, cost = _problem()
    eps = 0.003
    plain = sinkhorn(w, w, cost, eps, max_iter=50_000, tol=1e-9)
    sns = sinkhorn_newton_sparse(w, w, cost, eps, sinkhorn_iters=20, density=0.1, tol=1e-9)
    assert plain.converged and sns.converged
    torch.testing.assert_close(sns.plan, plain.plan, atol=1e-9, rtol=0)
    assert sns.n_iter * 5 < plain.n_iter, (sns.n_iter, plain.n_iter)
    reference = ot.sinkhorn(w.numpy(), w.numpy(), cost.numpy(), eps, method="sinkhorn_log", numItermax=100_000,
                            stopThr=1e-12)
    np.testing.assert_allclose(sns.plan.numpy(), reference, atol=1e-8)


def test_sparsified_hessian_is_the_exact_negative_hessian_at_full_density() -> None:
    w, cost = _problem(n=5)
    eta = 4.0
    x, y = torch.randn(5, dtype=torch.float64) * 0.1, torch.randn(5, dtype=torch.float64) * 0.1
    plan = torch.exp(log_plan(cost, x, y, eta))
    exact = torch.autograd.functional.hessian(lambda z: dual_objective(cost, z[:5], z[5:], w, w, eta),
                                              torch.cat([x, y]))
    np.testing.assert_allclose(sparsified_hessian(plan, eta, 1.0).toarray(), -exact.numpy(), atol=1e-12)
    sparse = sparsified_hessian(plan, eta, 0.2).toarray()
    assert np.linalg.eigvalsh(sparse).min() > -1e-12  # diagonally dominant ⇒ PSD
    assert np.count_nonzero(sparse[:5, 5:]) == 5


def test_marginals_and_classes() -> None:
    w, cost = _problem(n=20)
    res = SinkhornNewtonSparse(eps=0.01, density=0.2)(w, w, cost)
    assert res.errors[-1] <= 1e-9
    torch.testing.assert_close(res.plan.sum(0), w, atol=1e-9, rtol=0)
    assert Sinkhorn(eps=0.05)(w, w, cost).converged
    with pytest.raises(ValueError, match="`density`"):
        SinkhornNewtonSparse(density=0.0)
    with pytest.raises(ValueError, match="equal mass"):
        sinkhorn(w, 2 * w, cost, 0.1)
    with pytest.raises(ValueError, match="`cost` must have shape"):
        sinkhorn(w, w, cost[:3], 0.1)
