"""BetaRank (#46): closed form on a Linear layer, permutation invariance, pruned filters output zero."""

from __future__ import annotations

import torch
from torch import nn

from common_regs.sparsity.beta_rank import BetaRank, beta_rank_scores


def test_linear_closed_form() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(5, 4)
    x = torch.randn(32, 5)
    out = layer(x)
    raw = layer.weight.detach().abs().mean(1) * out.detach().std(0, unbiased=False) / x.std(unbiased=False)
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    torch.testing.assert_close(beta_rank_scores(layer, x, out), expected)


def test_scores_follow_a_filter_permutation() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    x = torch.randn(8, 3, 6, 6)
    scores = beta_rank_scores(conv, x, conv(x))
    perm = torch.randperm(6)
    permuted = nn.Conv2d(3, 6, 3, padding=1)
    with torch.no_grad():
        permuted.weight.copy_(conv.weight[perm])
        permuted.bias.copy_(conv.bias[perm])
    torch.testing.assert_close(beta_rank_scores(permuted, x, permuted(x)), scores[perm])


def test_apply_zeroes_lowest_filters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    pruner = BetaRank(prune_ratio=0.5, exclude=("2",))
    x = torch.randn(64, 6)
    pruner.apply(model, [x])
    keep = pruner.masks["0"]
    assert int(keep.sum()) == 4
    assert torch.all(model[0](x)[:, keep == 0] == 0)
    assert set(pruner.scores) == {"0"}
