"""DropPos (#57): smoothing rows sum to 1 and become one-hot as σ → 0, mask counts, loss = CE at σ = 0."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common_regs.api import TrainContext
from common_regs.stochastic import DropPos, drop_pos_loss, drop_pos_masks, position_smoothing


def test_smoothing_is_row_stochastic_and_sharpens() -> None:
    smooth = position_smoothing(3, 4, sigma=1.0)
    torch.testing.assert_close(smooth.sum(1), torch.ones(12))
    assert bool((smooth.argmax(1) == torch.arange(12)).all())
    torch.testing.assert_close(position_smoothing(3, 4, sigma=1e-3), torch.eye(12))
    assert torch.equal(position_smoothing(2, 2, 0.0), torch.eye(4))
    near, far = float(smooth[5, 6]), float(smooth[5, 7])
    assert near > far > 0


def test_masks_have_official_counts() -> None:
    ids_keep, mask_pos = drop_pos_masks(4, 16, 0.75, 0.75, torch.Generator().manual_seed(0))
    assert ids_keep.shape == (4, 4) and all(len(set(r.tolist())) == 4 for r in ids_keep)
    assert mask_pos.sum(1).tolist() == [3.0] * 4


def test_loss_is_masked_cross_entropy_at_zero_sigma_and_sigma_decays() -> None:
    torch.manual_seed(0)
    pretext = DropPos(grid_size=(2, 3), mask_ratio=0.5, pos_mask_ratio=0.5, sigma=1.0, total_epochs=10)
    ids_keep, mask_pos = pretext.sample(2, torch.Generator().manual_seed(1))
    logits = torch.randn(2, 3, 6)
    value = drop_pos_loss(logits, ids_keep, mask_pos, torch.eye(6))
    ce = F.cross_entropy(logits.reshape(-1, 6), ids_keep.reshape(-1), reduction="none")
    torch.testing.assert_close(value, (ce * mask_pos.reshape(-1)).sum() / mask_pos.sum())
    assert pretext.sigma_at(0) == 1.0 and pretext.sigma_at(5) == pytest.approx(0.5) and pretext.sigma_at(10) == 0.0
    ctx = TrainContext(
        model=torch.nn.Identity(), outputs=logits, epoch=10, extras={"ids_keep": ids_keep, "mask_pos": mask_pos}
    )
    torch.testing.assert_close(pretext(ctx), value)
