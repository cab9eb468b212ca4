"""CutMix (#10): label weight = 1 − pasted-area ratio (exact pixel count), rows sum to 1, seeded determinism, 1-D."""

from __future__ import annotations

import math

import pytest
import torch

from common_regs.augment import CutMix, cutmix_box, mix_labels


def _batch(b: int = 6, h: int = 8, w: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(1, b + 1, dtype=torch.float32)[:, None, None, None].expand(b, 3, h, w).clone()
    return x, torch.arange(b)


@pytest.mark.parametrize("seed", range(8))
def test_label_weight_equals_one_minus_pasted_area(seed: int) -> None:
    x, y = _batch()
    mixed, soft = CutMix(num_classes=6, seed=seed)((x, y))
    for i in range(6):
        own = float((mixed[i] == i + 1).float().mean())  # pixels still from sample i
        partner = (i - 1) % 6
        pasted = float((mixed[i] == partner + 1).float().mean())
        assert soft[i, i] == pytest.approx(own, abs=1e-6)
        assert soft[i, partner] == pytest.approx(pasted, abs=1e-6)
    torch.testing.assert_close(soft.sum(1), torch.ones(6))
    assert float(soft.diagonal().min()) < 1.0  # a box was pasted: with no mixing every equality above holds too


def test_deterministic_under_a_seed_and_box_rule() -> None:
    x, y = _batch()
    a, b = CutMix(6, seed=3)((x, y)), CutMix(6, seed=3)((x, y))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    (y0, y1), (x0, x1) = cutmix_box((8, 10), 0.36, torch.Generator().manual_seed(0))
    assert x1 - x0 <= 2 * int(0.5 * math.sqrt(0.64) * 10) and y1 - y0 <= 2 * int(0.5 * math.sqrt(0.64) * 8)


def test_sequence_batches_mix_a_segment_and_soft_labels_pass_through() -> None:
    x = torch.arange(1, 5, dtype=torch.float32)[:, None].expand(4, 20).clone()
    cutmix = CutMix(num_classes=4, seed=1)
    mixed, soft = cutmix((x, torch.arange(4)))
    for i in range(4):
        assert soft[i, i] == pytest.approx(float((mixed[i] == i + 1).float().mean()))
    soft_in = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    torch.testing.assert_close(mix_labels(soft_in, 0.25, 2), 0.25 * soft_in + 0.75 * soft_in.roll(1, 0))


def test_probability_zero_and_errors() -> None:
    x, y = _batch()
    mixed, soft = CutMix(6, prob=0.0, seed=0)((x, y))
    assert torch.equal(mixed, x) and torch.equal(soft, torch.eye(6))
    with pytest.raises(ValueError, match="alpha"):
        CutMix(3, alpha=0.0)
    with pytest.raises(ValueError, match="inputs"):
        CutMix(3)((torch.zeros(2), torch.zeros(2)))
