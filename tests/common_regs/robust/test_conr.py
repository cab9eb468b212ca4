"""ConR (#14): zero when predictions equal labels, brute-force equality, permutation invariance, pushing weight."""

from __future__ import annotations

import math

import torch

from common_regs.api import TrainContext
from common_regs.robust import ConR, conr_loss


def _brute_force(z: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor, w: float, tau: float, e: float) -> float:
    z = torch.nn.functional.normalize(z, dim=1)
    total = 0.0
    for i in range(len(y)):
        pos = [j for j in range(len(y)) if j != i and abs(y[i] - y[j]) <= w]
        neg = [k for k in range(len(y)) if abs(y[i] - y[k]) > w and abs(y_hat[i] - y_hat[k]) <= w]
        if not pos or not neg:
            continue
        s = lambda a, b: float(z[a] @ z[b]) / tau  # noqa: E731
        denominator = sum(math.exp(s(i, k)) for k in pos) + sum(
            math.exp(e * abs(float(y[i] - y[k]))) * math.exp(s(i, k)) for k in neg
        )
        total += -sum(s(i, j) - math.log(denominator) for j in pos) / len(pos)
    return total / len(y)


def test_zero_when_predictions_equal_labels() -> None:
    y = torch.tensor([0.0, 0.3, 2.0, 2.5, 6.0])
    assert float(conr_loss(torch.randn(5, 4), y, y)) == 0.0


def test_matches_brute_force_and_is_permutation_invariant() -> None:
    torch.manual_seed(0)
    z = torch.randn(8, 3)
    y = torch.tensor([0.0, 0.5, 3.0, 3.4, 0.2, 3.1, 7.0, 0.9])
    y_hat = torch.tensor([0.1, 0.4, 0.6, 3.0, 0.3, 0.5, 6.5, 1.0])
    value = float(conr_loss(z, y, y_hat, window=1.0, temperature=0.5, pushing=0.1))
    assert value > 0
    assert abs(value - _brute_force(z, y, y_hat, 1.0, 0.5, 0.1)) < 1e-4
    perm = torch.randperm(8)
    assert abs(float(conr_loss(z[perm], y[perm], y_hat[perm], temperature=0.5, pushing=0.1)) - value) < 1e-5


def test_pushing_weight_increases_the_loss_and_class_wiring() -> None:
    torch.manual_seed(1)
    z, y = torch.randn(6, 3), torch.tensor([0.0, 0.5, 3.0, 3.5, 6.0, 6.2])
    y_hat = torch.zeros(6)
    assert float(conr_loss(z, y, y_hat, pushing=0.5)) > float(conr_loss(z, y, y_hat, pushing=0.0))
    ctx = TrainContext(model=torch.nn.Identity(), batch=(None, y), outputs=y_hat, extras={"features": z})
    torch.testing.assert_close(ConR()(ctx), conr_loss(z, y, y_hat))
