from __future__ import annotations

import numpy as np
import pytest
import torch

from common_regs.ot import SparsityConstrainedOT
from common_regs.ot.sparsity_constrained_ot import sparse_simplex_conjugate

ot = pytest.importorskip("ot", reason="POT is the reference implementation for these checks")


@pytest.fixture
def problem() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return np.full(6, 1 / 6), rng.random((6, 6))


def test_k1_is_a_hard_assignment_matching_pot_and_emd(problem: tuple[np.ndarray, np.ndarray]) -> None:
    w, cost = problem
    res = SparsityConstrainedOT(max_nz=1, gamma=0.01)(torch.tensor(w), torch.tensor(w), torch.tensor(cost))
    assert (res.plan > 0).sum(0).tolist() == [1] * 6
    pot = ot.smooth.smooth_ot_dual(w, w, cost, 0.01, reg_type="sparsity_constrained", max_nz=1)
    np.testing.assert_allclose(res.plan.numpy(), pot, atol=1e-8)
    np.testing.assert_allclose(res.plan.numpy(), ot.emd(w, w, cost), atol=1e-4)  # permutation plan


def test_k2_column_sparsity_and_agreement(problem: tuple[np.ndarray, np.ndarray]) -> None:
    w, cost = problem
    res = SparsityConstrainedOT(max_nz=2, gamma=0.1)(torch.tensor(w), torch.tensor(w), torch.tensor(cost))
    assert int((res.plan > 0).sum(0).max()) <= 2
    assert res.errors[-1] < 1e-3
    pot = ot.smooth.smooth_ot_dual(w, w, cost, 0.1, reg_type="sparsity_constrained", max_nz=2)
    np.testing.assert_allclose(res.plan.numpy(), pot, atol=1e-8)


def test_k_equal_n_is_quadratic_ot(problem: tuple[np.ndarray, np.ndarray]) -> None:
    w, cost = problem
    res = SparsityConstrainedOT(max_nz=6, gamma=1.0)(torch.tensor(w), torch.tensor(w), torch.tensor(cost))
    np.testing.assert_allclose(res.plan.numpy(), ot.smooth.smooth_ot_dual(w, w, cost, 1.0, reg_type="l2"),
                               atol=1e-8)


def test_conjugate_gradient_matches_autograd() -> None:
    scores = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    values, grad = sparse_simplex_conjugate(scores, 2, 0.5)
    (auto,) = torch.autograd.grad(values.sum(), scores)
    torch.testing.assert_close(grad, auto)
    assert int((grad > 0).sum(0).max()) <= 2
    with pytest.raises(ValueError, match="`max_nz`"):
        SparsityConstrainedOT(max_nz=0)
