"""Regularized mask tuning (#8): STE mask, mask bookkeeping, and the official ``wuw2019/R-AMT`` gradient dropout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from common_regs.lowrank.regularized_mask_tuning import RegularizedMaskTuning, gradient_dropout, kl_to_reference


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def test_backward_matches_official() -> None:
    """``graddrop_backward_and_update`` with loss_a = CE + β Σ‖M‖₂ and loss_b = KL to the unmasked model, by hand."""
    torch.manual_seed(9)  # a case where two of the six entries conflict enough to be dropped
    layer = nn.Linear(3, 2, bias=False).double()
    w = layer.weight.detach().numpy().copy()
    rmt = RegularizedMaskTuning(gdr_lambda=0.6, mask_norm_weight=1e-4)
    rmt.prepare(nn.Sequential(layer))
    scores = np.array([[0.012, 0.002, 0.009], [0.004, 0.015, 0.007]])
    with torch.no_grad():
        rmt.mask_scores()[0].copy_(torch.from_numpy(scores))
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    labels = y.tolist()
    logits = layer(x)
    reference = x @ torch.from_numpy(w).T
    rmt.backward(nn.functional.cross_entropy(logits, y), kl_to_reference(logits, reference),
                 torch.Generator().manual_seed(3))
    got = rmt.mask_scores()[0].grad

    xs, n = x.numpy(), 5
    mask = [[1.0 if scores[o, i] > 5e-3 else 0.0 for i in range(3)] for o in range(2)]
    z = [[sum(w[o, i] * mask[o][i] * xs[b, i] for i in range(3)) for o in range(2)] for b in range(n)]
    r = [[sum(w[o, i] * xs[b, i] for i in range(3)) for o in range(2)] for b in range(n)]
    p = [_softmax(row) for row in z]
    q = [_softmax(row) for row in r]
    norm = math.sqrt(sum(scores[o, i] ** 2 for o in range(2) for i in range(3)))
    uniform = torch.rand((2, 3), generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    expected = np.zeros((2, 3))
    kept = dropped = 0
    for o in range(2):
        for i in range(3):
            # STE: ∂L/∂M = ∂L/∂W' · W; ∂CE/∂z = (p − onehot)/B; ∂KL(q‖p)/∂z = (p − q)/B.
            g_a = sum((p[b][o] - (labels[b] == o)) / n * xs[b, i] for b in range(n)) * w[o, i]
            g_a += 1e-4 * scores[o, i] / norm
            g_b = sum((p[b][o] - q[b][o]) / n * xs[b, i] for b in range(n)) * w[o, i]
            sign = 1.0 if g_a > 0 else -1.0 if g_a < 0 else 0.0
            keep_probability = (sign * (g_a + g_b) / (abs(g_a) + abs(g_b) + 1e-8) + 1) / 2
            keep = keep_probability > uniform[o, i]
            kept, dropped = kept + keep, dropped + (not keep)
            expected[o, i] = ((1 - 0.6) + 0.6 * keep) * g_a
    assert kept and dropped  # both branches of the rule are exercised on this case
    torch.testing.assert_close(got, torch.from_numpy(expected), rtol=1e-9, atol=1e-14)


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


def test_gradient_dropout_keeps_the_task_gradient_when_signs_agree() -> None:
    g1 = torch.tensor([1.0, -2.0, 0.5, 0.0])
    g2 = torch.tensor([3.0, -1.0, 0.5, 0.0])
    for seed in range(5):
        out = gradient_dropout(g1, g2, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(out, g1)  # the KL gradient only votes; it is never added


def test_gradient_dropout_keep_probability_on_conflicts() -> None:
    g1 = torch.full((20000,), 3.0)
    g2 = torch.full((20000,), -1.0)  # P = ½(1 + 2/4) = 0.75: keep the 3 with probability 0.75, else 0
    out = gradient_dropout(g1, g2, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) == {0.0, 3.0}
    assert abs(float((out == 3.0).float().mean()) - 0.75) < 0.02
    weak = gradient_dropout(-g1 / 3, -g2 * 3, torch.Generator().manual_seed(0))  # g_a = −1, g_b = 3: P = 0.25
    assert abs(float((weak == -1.0).float().mean()) - 0.25) < 0.02
    shrunk = gradient_dropout(g1, g2, torch.Generator().manual_seed(0), strength=0.5)
    assert set(shrunk.unique().tolist()) == {1.5, 3.0}  # λ = 0.5: a dropped entry keeps (1 − λ) of g_a


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
    with pytest.raises(ValueError, match="gdr_lambda"):
        RegularizedMaskTuning(gdr_lambda=1.5)
