"""GroupEnvelopeProx (#35): k-support norm identities, exact prox (vs. numerical optimization), k-group output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn

from common_regs.sparsity.group_envelope_prox import (
    GroupEnvelopeProx,
    k_support_norm_sq,
    prox_k_support_sq,
    sparse_envelope_prox,
)


def test_k_support_norm_limits() -> None:
    v = torch.randn(9, dtype=torch.float64)
    torch.testing.assert_close(k_support_norm_sq(v, 1), v.abs().sum() ** 2)
    torch.testing.assert_close(k_support_norm_sq(v, 9), (v**2).sum())
    sparse = torch.tensor([0.0, 3.0, 0.0, -4.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(k_support_norm_sq(sparse, 2), torch.tensor(25.0, dtype=torch.float64))


@pytest.mark.parametrize(("k", "beta"), [(1, 0.5), (2, 1.0), (3, 3.0)])
def test_prox_minimizes_its_objective(k: int, beta: float) -> None:
    torch.manual_seed(k)
    v = torch.randn(6, dtype=torch.float64)
    q = prox_k_support_sq(v, k, beta)

    def objective(x: np.ndarray) -> float:
        return 0.5 * float(((x - v.numpy()) ** 2).sum()) + float(k_support_norm_sq(torch.from_numpy(x), k)) / (
            2 * beta
        )

    best = min(
        (
            minimize(objective, x0, method="Powell", options={"xtol": 1e-10, "ftol": 1e-12})
            for x0 in (v.numpy(), 0 * v.numpy())
        ),
        key=lambda r: r.fun,
    )
    assert objective(q.numpy()) <= best.fun + 1e-8


def test_gap_prox_identity_and_hard_limit() -> None:
    v = torch.tensor([3.0, -1.0, 0.5, 2.0])
    torch.testing.assert_close(sparse_envelope_prox(v, 2, 0.0), v)
    torch.testing.assert_close(sparse_envelope_prox(v, 2, 1.0), torch.tensor([3.0, 0.0, 0.0, 2.0]))
    out = sparse_envelope_prox(v, 2, 0.95)
    assert int((out != 0).sum()) <= 3  # strong step: (nearly) k-sparse


def test_scheduler_keeps_at_most_k_groups_at_full_strength() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10))
    sched = GroupEnvelopeProx(k=3, prox_step=1.0)
    sched.prepare(model)
    sched.step()
    alive = (model[0].weight.detach().norm(dim=1) > 0).sum()
    assert int(alive) == 3
    assert torch.equal(sched.masks["0.weight"], (model[0].weight.detach() != 0).float())
