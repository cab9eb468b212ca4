"""Tail token drop (#30): prefix-shaped masks, first token always kept, E[k] = (k_min + K) / 2."""

from __future__ import annotations

import pytest
import torch

from common_regs.stochastic import TailTokenDrop, prefix_mask


def test_mask_is_a_prefix_with_first_token_kept() -> None:
    drop = TailTokenDrop()
    tokens = torch.randn(64, 10, 3) + 5.0
    out = drop(tokens, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out != 0, prefix_mask(10, drop.last_kept).bool()[..., None].expand_as(out))
    assert bool((drop.last_kept >= 1).all())


def test_expected_kept_length() -> None:
    drop = TailTokenDrop(k_min=4)
    assert drop.expected_kept(16) == pytest.approx(10.0)
    kept = torch.cat([drop.sample(16, 100, torch.Generator().manual_seed(i)) for i in range(50)]).double()
    assert float(kept.mean()) == pytest.approx(10.0, abs=0.2)
    assert int(kept.min()) == 4 and int(kept.max()) == 16
