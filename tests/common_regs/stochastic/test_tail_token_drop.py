"""Tail token drop (#30): official One-D-Piece cut (one k ~ U{1..K} per batch, tail removed) and the mask variant."""

from __future__ import annotations

import pytest
import torch

from common_regs.stochastic import TailTokenDrop, prefix_mask


def test_official_default_keeps_a_uniform_prefix_shared_by_the_batch() -> None:
    tokens = torch.randn(3, 5, 2)
    drop = TailTokenDrop()
    generator = torch.Generator().manual_seed(0)
    counts = [0] * 6
    for _ in range(5000):
        out = drop(tokens, generator=generator)
        k = int(drop.last_kept)
        assert torch.equal(out, tokens[:, :k])  # tail removed for every row at the same k
        counts[k] += 1
    # OneDPiece.apply_tail_token_drop: torch.randint(1, K + 1) -> P(k) = 1/5 for k = 1..5, never 0.
    # 5000 draws: mean count 1000, sd sqrt(5000 · 0.2 · 0.8) ≈ 28.3; 142 is 5 sd (a truncated geometric(0.1)
    # would put 1221 on k = 1, outside).
    assert counts[0] == 0
    assert all(abs(count - 1000) < 142 for count in counts[1:]), counts
    assert drop.expected_kept(5) == pytest.approx(3.0)
    drop.eval()
    assert drop(tokens) is tokens


def test_last_axis_cut_as_in_the_official_b_c_1_k_layout() -> None:
    z = torch.randn(2, 12, 1, 8)
    drop = TailTokenDrop(dim=-1)
    out = drop(z, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, z[..., : int(drop.last_kept)])


def test_mask_mode_per_sample_prefix_with_first_token_kept() -> None:
    drop = TailTokenDrop(per_sample=True, mode="mask")
    tokens = torch.randn(64, 10, 3) + 5.0
    out = drop(tokens, generator=torch.Generator().manual_seed(0))
    assert out.shape == tokens.shape
    assert torch.equal(out != 0, prefix_mask(10, drop.last_kept).bool()[..., None].expand_as(out))
    assert bool((drop.last_kept >= 1).all()) and len(drop.last_kept.unique()) > 1


def test_expected_kept_length_with_k_min() -> None:
    drop = TailTokenDrop(k_min=4, per_sample=True, mode="mask")
    assert drop.expected_kept(16) == pytest.approx((4 + 16) / 2)
    kept = torch.cat([drop.sample(16, 100, torch.Generator().manual_seed(i)) for i in range(50)]).double()
    assert float(kept.mean()) == pytest.approx(10.0, abs=0.2)
    assert int(kept.min()) == 4 and int(kept.max()) == 16


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="per_sample"):
        TailTokenDrop(per_sample=True)
    with pytest.raises(ValueError, match="`mode`"):
        TailTokenDrop(mode="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch axis"):
        TailTokenDrop(dim=0)(torch.randn(4, 3))
