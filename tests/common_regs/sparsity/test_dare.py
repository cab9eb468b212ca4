"""DARE/DAREx (#62): unbiasedness, variance, q-bias, PEFT equivalence, AdamR against the official update."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from common_regs.sparsity.dare import DARE, AdamR, dare_delta, output_change_score


def test_mean_and_variance_of_rescaled_delta() -> None:
    delta = torch.full((200_000,), 0.5)
    out = dare_delta(delta, 0.9, generator=torch.Generator().manual_seed(0))
    assert float(out.mean()) == pytest.approx(0.5, rel=0.03)
    assert float(out.var()) == pytest.approx(0.25 * 0.9 / 0.1, rel=0.03)
    biased = dare_delta(delta, 0.9, q=0.2, generator=torch.Generator().manual_seed(0))
    assert float(biased.mean() - delta.mean()) == pytest.approx(((1 - 0.9) / 0.2 - 1) * 0.5, rel=0.05)


def test_equals_peft_random_pruning() -> None:
    merge_utils = pytest.importorskip("peft.utils.merge_utils", reason="peft not installed: no reference to compare")
    delta = torch.randn(64, 32)
    torch.manual_seed(3)
    expected = merge_utils.prune(delta, density=0.3, method="random", rescale=True)
    torch.manual_seed(3)
    torch.testing.assert_close(dare_delta(delta, 0.7), expected)


def test_apply_and_select_q() -> None:
    torch.manual_seed(0)
    base = nn.Linear(16, 4)
    tuned = nn.Linear(16, 4)
    tuned.load_state_dict({k: v + 0.01 * torch.randn_like(v) for k, v in base.state_dict().items()})
    pruned = DARE(drop_rate=0.5, seed=0).apply(nn.Linear(16, 4).requires_grad_(False), base)
    del pruned
    model = nn.Linear(16, 4)
    model.load_state_dict(tuned.state_dict())
    DARE(drop_rate=0.75).apply(model, base)
    delta_after = model.weight.detach() - base.weight.detach()
    kept = delta_after != 0
    torch.testing.assert_close(delta_after[kept], 4 * (tuned.weight.detach() - base.weight.detach())[kept])
    x = torch.randn(64, 16)
    best, scores = DARE(drop_rate=0.75).select_q(tuned, base, output_change_score(x, tuned), [0.05, 0.25, 1.0, 20.0])
    assert best in scores and scores[best] == max(scores.values())
    assert scores[20.0] < scores[best]


def _official_adamr(theta, anchor, grads, lr, wd, betas=(0.9, 0.999), eps=1e-8, l1=False):
    """AdamR.step of github.com/vengdeng/DAREx (AdamR.py) in plain Python floats, one list per parameter."""
    beta1, beta2 = betas
    theta = [list(t) for t in theta]
    m = [[0.0] * len(t) for t in theta]
    v = [[0.0] * len(t) for t in theta]
    for step, grad in enumerate(grads, start=1):
        v_hat_sum, count = 0.0, 0
        for i, g_row in enumerate(grad):
            for j, g in enumerate(g_row):
                m[i][j] = beta1 * m[i][j] + (1 - beta1) * g
                v[i][j] = beta2 * v[i][j] + (1 - beta2) * g * g
                v_hat_sum += v[i][j] / (1 - beta2**step)
                count += 1
        scale = math.sqrt(v_hat_sum / count) or 1.0
        for i in range(len(theta)):
            for j in range(len(theta[i])):
                d = theta[i][j] - anchor[i][j]
                theta[i][j] -= wd * lr / scale * ((d > 0) - (d < 0) if l1 else d)
                v_hat = v[i][j] / (1 - beta2**step)
                theta[i][j] -= lr / (1 - beta1**step) * m[i][j] / (math.sqrt(v_hat) + eps)
    return theta


@pytest.mark.parametrize("l1", [False, True])
def test_adamr_two_steps_match_hand_computed_official_update(l1: bool) -> None:
    theta = [[0.5, -1.0, 2.0], [0.3]]
    anchor = [[0.0, 0.0, 1.0], [-0.2]]
    grads = [[[0.1, -0.4, 0.0], [2.0]], [[-0.3, 0.2, 0.5], [0.0]]]
    # wd · lr / sqrt(mean v̂) is made O(0.1) so that the decay moves the weights far more than the tolerance.
    lr, wd = 0.1, 0.5
    expected = _official_adamr(theta, anchor, grads, lr, wd, l1=l1)
    params = [nn.Parameter(torch.tensor(t, dtype=torch.float64)) for t in theta]
    opt = AdamR(params, anchor=[torch.tensor(a, dtype=torch.float64) for a in anchor], lr=lr, weight_decay=wd, l1=l1)
    for grad in grads:
        for p, g in zip(params, grad, strict=True):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), torch.tensor(e, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    without_decay = _official_adamr(theta, anchor, grads, lr, 0.0)
    assert abs(expected[0][0] - without_decay[0][0]) > 1e-3  # the decay term is really exercised


def test_adamr_without_decay_is_adam_and_anchor_defaults_to_initial_weights() -> None:
    torch.manual_seed(0)
    model, reference = nn.Linear(4, 3), nn.Linear(4, 3)
    reference.load_state_dict(model.state_dict())
    opt, adam = AdamR(model.parameters(), lr=1e-2, weight_decay=0.0), torch.optim.Adam(reference.parameters(), lr=1e-2)
    x = torch.randn(8, 4)
    for _ in range(5):
        for net, o in ((model, opt), (reference, adam)):
            o.zero_grad()
            net(x).pow(2).sum().backward()
            o.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    start = nn.Linear(4, 3)
    decayed = AdamR(start.parameters(), lr=0.1, weight_decay=1.0)
    initial = start.weight.detach().clone()
    with torch.no_grad():
        start.weight.add_(1.0)
    start.weight.grad, start.bias.grad = torch.zeros_like(start.weight), torch.zeros_like(start.bias)
    decayed.step()  # zero gradient: v̂ = 0, scale 1, the delta shrinks by (1 - λη) and Adam does not move it
    torch.testing.assert_close(start.weight.detach() - initial, torch.full_like(initial, 0.9), rtol=0, atol=1e-6)
