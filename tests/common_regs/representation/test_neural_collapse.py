"""Neural-collapse metrics (#9): zero at exact collapse onto a simplex ETF, positive with within-class noise."""

from __future__ import annotations

import pytest
import torch

from common_regs.representation import neural_collapse_metrics


def _simplex(c: int) -> torch.Tensor:
    return torch.eye(c) - 1.0 / c  # centred simplex ETF rows


def test_exact_collapse_onto_a_simplex_etf_gives_zero_metrics() -> None:
    means = _simplex(4) * 3.0
    features = means.repeat_interleave(5, 0)
    labels = torch.arange(4).repeat_interleave(5)
    metrics = neural_collapse_metrics(features, labels, classifier=means * 0.5)
    for key in ("nc1", "nc2_norm", "nc2_angle", "nc3"):
        assert metrics[key] == pytest.approx(0.0, abs=1e-9)


def test_nc1_grows_with_within_class_noise() -> None:
    torch.manual_seed(0)
    means = _simplex(3) * 3.0
    labels = torch.arange(3).repeat_interleave(20)
    low = neural_collapse_metrics(means[labels] + 0.1 * torch.randn(60, 3), labels)["nc1"]
    high = neural_collapse_metrics(means[labels] + 1.0 * torch.randn(60, 3), labels)["nc1"]
    assert 0 < low < high
    with pytest.raises(ValueError, match="classes"):
        neural_collapse_metrics(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
