from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.lowrank.regularized_mask_tuning import RegularizedMaskTuning, gradient_dropout, kl_to_reference


def test_ste_gradient_is_upstream_times_frozen_weight() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(5, 3, bias=False)
    w = layer.weight.detach().clone()
    x, t = torch.randn(7, 5), torch.randn(7, 3)
    w_eff = w.clone().requires_grad_(True)
    ((x @ w_eff.T - t) ** 2).sum().backward()
    RegularizedMaskTuning().prepare(nn.Sequential(layer))
    ((layer(x) - t) ** 2).sum().backward()
    torch.testing.assert_close(layer.parametrizations.weight.original0.grad, w_eff.grad * w)


def test_masked_fraction_bookkeeping_and_frozen_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    rmt = RegularizedMaskTuning(include=["0"])
    rmt.prepare(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["0.parametrizations.weight.original0"]
    with torch.no_grad():
        rmt.mask_scores()[0][:, :2] = -1.0  # mask out 8 of 16 weights
    assert rmt.masked_fraction() == 0.5
    w = model[0].weight.detach()
    assert (w[:, :2] == 0).all() and (w[:, 2:] == model[0].parametrizations.weight[0].frozen[:, 2:]).all()


def test_gradient_dropout_identity_when_signs_agree() -> None:
    g1 = torch.tensor([1.0, -2.0, 0.5, 0.0])
    g2 = torch.tensor([3.0, -1.0, 0.5, 0.0])
    for seed in range(5):
        out = gradient_dropout(g1, g2, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(out, g1 + g2)


def test_gradient_dropout_keeps_one_sign_per_conflicting_entry() -> None:
    g1 = torch.full((20000,), 3.0)
    g2 = torch.full((20000,), -1.0)  # P = ½(1 + 2/4) = 0.75: keep the +3 with prob 0.75, the −1 otherwise
    out = gradient_dropout(g1, g2, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= {3.0, -1.0}
    assert abs(float((out == 3.0).float().mean()) - 0.75) < 0.02


def test_backward_trains_masks_against_kl_reference() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    reference = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    reference.load_state_dict(model.state_dict())
    rmt = RegularizedMaskTuning(init_score=1e-2, threshold=5e-3)
    rmt.prepare(model)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    optimizer = torch.optim.SGD(rmt.trainable_parameters(), lr=0.5)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        optimizer.zero_grad()
        logits = model(x)
        rmt.backward(nn.functional.cross_entropy(logits, y), kl_to_reference(logits, reference(x)), generator)
        optimizer.step()
    assert 0.0 < rmt.masked_fraction() < 0.5
    with pytest.raises(ValueError, match="init_score"):
        RegularizedMaskTuning(threshold=0.1, init_score=0.05)
