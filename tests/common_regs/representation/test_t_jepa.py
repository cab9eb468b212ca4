"""T-JEPA (#44): EMA algebra, disjoint masks, zero loss on equal latents, collapse monitor."""

from __future__ import annotations

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.representation import TJEPA, RegularizationTokens, ema_update, feature_masks, jepa_loss


def test_ema_algebra() -> None:
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = 0.9 * target.weight.detach() + 0.1 * online.weight.detach()
    ema_update(target, online, 0.9)
    torch.testing.assert_close(target.weight.detach(), expected)


def test_masks_are_disjoint_for_many_draws() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        context, target = feature_masks(7, 0.6, 0.4, generator)
        assert not set(context.tolist()) & set(target.tolist()) and len(target) >= 1
    with pytest.raises(ValueError, match="features"):
        feature_masks(1, 0.5, 0.5)


def test_loss_collapse_score_and_tokens() -> None:
    h = torch.randn(4, 3, 5)
    assert float(jepa_loss(h, h)) == 0.0
    assert float(jepa_loss(h + 1.0, h)) == pytest.approx(5.0)
    assert TJEPA.collapse_score(torch.ones(10, 4)) == 0.0 and TJEPA.collapse_score(torch.randn(100, 4)) > 0.5
    assert RegularizationTokens(2, 5)(torch.randn(3, 4, 5)).shape == (3, 6, 5)
    ctx = TrainContext(model=torch.nn.Identity(), outputs={"predictions": h + 1.0, "targets": h})
    assert float(TJEPA()(ctx)) == pytest.approx(5.0)
