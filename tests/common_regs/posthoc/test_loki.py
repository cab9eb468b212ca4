from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.posthoc.loki import Loki, frechet_scores, graph_distances


def _path(n: int) -> torch.Tensor:
    adjacency = torch.zeros(n, n)
    idx = torch.arange(n - 1)
    adjacency[idx, idx + 1] = 1
    return adjacency


def test_discrete_metric_equals_argmax() -> None:
    torch.manual_seed(0)
    probs = torch.randn(50, 6).softmax(-1)
    discrete = 1.0 - torch.eye(6)
    scores = frechet_scores(probs, discrete, torch.arange(6))
    assert torch.equal(scores.argmax(-1), probs.argmax(-1))


def test_path_graph_predicts_unobserved_middle_class() -> None:
    d = graph_distances(_path(5))
    assert d[0, 4] == 4
    observed = torch.tensor([0, 4])
    assert int(frechet_scores(torch.tensor([[0.5, 0.5]]), d, observed).argmax()) == 2
    # weighted Fréchet mean on a path: argmin_y 0.75·y² + 0.25·(4 − y)² = 1
    assert int(frechet_scores(torch.tensor([[0.75, 0.25]]), d, observed).argmax()) == 1


def test_apply_wraps_a_classifier() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    wrapped = Loki(graph_distances(_path(5)), observed=[0, 4]).apply(model)
    out = wrapped(torch.randn(4, 3))
    assert out.shape == (4, 5)
    with pytest.raises(ValueError, match="symmetric"):
        Loki(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="disconnected"):
        graph_distances(torch.zeros(3, 3))
