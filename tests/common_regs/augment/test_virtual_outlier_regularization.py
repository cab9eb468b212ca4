"""OVOR (#36): zero beyond the energy margins, Huber branch, boundary outliers lie outside the class support."""

from __future__ import annotations

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.augment import (
    VirtualOutlierRegularizer,
    energy,
    energy_margin_loss,
    knn_distance,
    synthesize_virtual_outliers,
)


def test_zero_beyond_margins_and_huber_branches() -> None:
    assert float(energy_margin_loss(torch.tensor([-16.0]), torch.tensor([-2.0]), -15.0, -3.0)) == 0.0
    small = energy_margin_loss(torch.tensor([-14.5]), torch.tensor([-2.0]), -15.0, -3.0)  # excess 0.5: quadratic
    large = energy_margin_loss(torch.tensor([-12.0]), torch.tensor([-2.0]), -15.0, -3.0)  # excess 3: linear
    assert float(small) == pytest.approx(0.5 * 0.25) and float(large) == pytest.approx(3.0 - 0.5)
    torch.testing.assert_close(energy(torch.zeros(1, 4)), -torch.log(torch.tensor([4.0])))


def test_outliers_are_farther_from_the_class_than_its_own_points() -> None:
    torch.manual_seed(0)
    features = torch.cat([torch.randn(60, 2) * 0.3, torch.randn(60, 2) * 0.3 + 5.0])
    labels = torch.tensor([0] * 60 + [1] * 60)
    outliers = synthesize_virtual_outliers(
        features, labels, k=5, per_class=10, cov=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert outliers.shape == (20, 2)
    own = knn_distance(features[:60], features[:60], 5, exclude_self=True).median()
    assert float(knn_distance(outliers[:10], features[:60], 5).min()) > float(own)


def test_regularizer_trains_head_to_separate_energies() -> None:
    torch.manual_seed(0)
    features = torch.cat([torch.randn(40, 2) * 0.3 - 2, torch.randn(40, 2) * 0.3 + 2])
    labels = torch.tensor([0] * 40 + [1] * 40)
    head = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    term = VirtualOutlierRegularizer(head, t_id=-4.0, t_ood=-1.0, k=5, per_class=10, cov=0.5)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.03)
    ctx = TrainContext(model=head, batch=(features, labels), extras={"features": features})
    def average_loss() -> float:  # outliers are resampled on every call: average a few draws
        return sum(float(term(ctx).detach()) for _ in range(5)) / 5

    first = average_loss()
    for _ in range(50):
        optimizer.zero_grad()
        term(ctx).backward()
        optimizer.step()
    assert average_loss() < 0.4 * first
