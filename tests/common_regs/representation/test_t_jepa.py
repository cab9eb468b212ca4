"""T-JEPA (#44): official mask collator statistics, MSE loss, scheduled EMA, [REG] tokens, collapse monitor."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.representation import TJEPA, RegularizationTokens, ema_update, feature_masks, jepa_loss
from common_regs.representation.t_jepa import ema_momentum


def test_ema_algebra_and_official_linear_momentum_schedule() -> None:
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = 0.9 * target.weight.detach() + 0.1 * online.weight.detach()
    ema_update(target, online, 0.9)
    torch.testing.assert_close(target.weight.detach(), expected)
    # m_i = 0.996 + i·(1 − 0.996)/N (run.py `momentum_scheduler` with ipe_scale 1)
    assert ema_momentum(0, 100) == pytest.approx(0.996)
    assert ema_momentum(50, 100) == pytest.approx(0.998)
    assert ema_momentum(100, 100) == pytest.approx(1.0)
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = 0.998 * target.weight.detach() + 0.002 * online.weight.detach()
    assert TJEPA().update_target(target, online, 50, 100) == pytest.approx(0.998)
    torch.testing.assert_close(target.weight.detach(), expected)


def test_masks_are_disjoint_and_shaped_like_the_official_collator() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        context, targets = feature_masks(10, 3, num_preds=4, generator=generator)
        assert context.shape[0] == 3 and targets.shape[:2] == (4, 3)
        # D = 10, shares 0.2–0.4 ⇒ 2..4 features each
        assert 2 <= context.shape[1] <= 4 and 2 <= targets.shape[2] <= 4
        for row in range(3):
            assert len(set(context[row].tolist())) == context.shape[1]
            for pred in range(4):
                assert not set(context[row].tolist()) & set(targets[pred, row].tolist())
    with pytest.raises(ValueError, match="features"):
        feature_masks(1)
    with pytest.raises(ValueError, match="min_context_share"):
        feature_masks(4, min_context_share=0.1, max_context_share=0.2)


def test_mask_sizes_follow_the_official_rounding_and_redraw_rule() -> None:
    # n = n_min + round((n_max − n_min)·u): D = 10, shares 0.2–0.4 ⇒ n ∈ {2, 3, 4} with P = 1/4, 1/2, 1/4.
    generator = torch.Generator().manual_seed(1)
    draws = 4000
    sizes = Counter(feature_masks(10, 1, num_preds=1, generator=generator)[0].shape[1] for _ in range(draws))
    for n, p in ((2, 0.25), (3, 0.5), (4, 0.25)):
        assert abs(sizes[n] / draws - p) < 4 * (p * (1 - p) / draws) ** 0.5
    # D = 5, shares 0.4–0.8 ⇒ n ∈ {2, 3, 4} each, redrawn until n_c + n_t ≤ 5: only (2, 2), (2, 3), (3, 2) remain,
    # with prior weights 1/16, 1/8, 1/8 ⇒ probabilities 0.2, 0.4, 0.4.
    pairs = Counter()
    for _ in range(draws):
        context, targets = feature_masks(5, 1, min_context_share=0.4, max_context_share=0.8, min_target_share=0.4,
                                         max_target_share=0.8, num_preds=1, generator=generator)
        pairs[(context.shape[1], targets.shape[2])] += 1
    assert set(pairs) == {(2, 2), (2, 3), (3, 2)}
    for pair, p in (((2, 2), 0.2), ((2, 3), 0.4), ((3, 2), 0.4)):
        assert abs(pairs[pair] / draws - p) < 4 * (p * (1 - p) / draws) ** 0.5


def test_loss_is_mse_over_every_entry() -> None:
    predictions = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    # (1 + 4 + 9 + 16) / 4 = 7.5 (torch.nn.MSELoss in the official trainer, not a sum over the latent width)
    assert float(jepa_loss(predictions, torch.zeros_like(predictions))) == pytest.approx(7.5)
    h = torch.randn(4, 3, 5)
    assert float(jepa_loss(h, h)) == 0.0
    ctx = TrainContext(model=torch.nn.Identity(), outputs={"predictions": h + 1.0, "targets": h})
    assert float(TJEPA()(ctx)) == pytest.approx(1.0)
    target = torch.randn(2, 3, requires_grad=True)
    jepa_loss(torch.randn(2, 3, requires_grad=True), target).backward()
    assert target.grad is None


def test_regularization_tokens_are_prepended_and_collapse_score() -> None:
    tokens = RegularizationTokens(2, 5)
    sequence = torch.randn(3, 4, 5)
    out = tokens(sequence)
    assert out.shape == (3, 6, 5)
    torch.testing.assert_close(out[:, 2:], sequence)
    torch.testing.assert_close(out[1, :2], tokens.tokens.detach())
    assert TJEPA.collapse_score(torch.ones(10, 4)) == 0.0 and TJEPA.collapse_score(torch.randn(100, 4)) > 0.5
