"""EATA (#51): only samples with entropy below E₀ are selected, weights exp(E₀ - E), redundancy, Fisher anchor."""

from __future__ import annotations

import math

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.robust import EATA, configure_norm_adaptation, eata_selection, fisher_diagonal, softmax_entropy


def test_selects_exactly_the_samples_below_the_entropy_margin() -> None:
    torch.manual_seed(0)
    logits = torch.randn(64, 5) * 3
    margin = 0.4 * math.log(5)
    reliable, _ = eata_selection(logits, margin, 0.05, None)
    assert torch.equal(reliable, softmax_entropy(logits) < margin)
    eata = EATA(num_classes=5)
    eata(TrainContext(model=torch.nn.Identity(), outputs=logits))
    assert torch.equal(eata.last_selected, reliable)


def test_loss_value_weights_and_zero_when_nothing_selected() -> None:
    logits = torch.tensor([[6.0, 0.0, 0.0], [3.0, 0.0, 0.0]], requires_grad=True)
    eata = EATA(num_classes=3, entropy_margin=0.8)
    loss = eata.entropy_loss(logits)
    entropy = softmax_entropy(logits.detach())
    weights = torch.exp(0.8 - entropy)
    assert bool((weights > 1).all())
    torch.testing.assert_close(loss, (weights * entropy).mean())
    none = torch.zeros(2, 3, requires_grad=True)
    empty = EATA(num_classes=3, entropy_margin=0.1).entropy_loss(none)
    empty.backward()
    assert float(empty.detach()) == 0.0 and float(none.grad.abs().sum()) == 0.0


def test_redundant_samples_are_filtered_after_the_first_batch() -> None:
    eata = EATA(num_classes=3, entropy_margin=1.0, redundancy_margin=0.5)
    logits = torch.tensor([[8.0, 0.0, 0.0]])
    eata.entropy_loss(logits)
    eata.entropy_loss(torch.tensor([[8.0, 0.0, 0.0], [0.0, 8.0, 0.0]]))
    assert eata.last_selected.tolist() == [False, True]  # same prediction as p̄ is redundant


def test_fisher_anchor_is_zero_at_source_and_matches_closed_form() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3))
    params = configure_norm_adaptation(model)
    assert len(params) == 2 and all(p.requires_grad for p in params)
    fishers = fisher_diagonal(model, [torch.randn(8, 4) for _ in range(2)])
    assert set(fishers) == {"1.weight", "1.bias"}
    eata = EATA(num_classes=3, fisher_weight=10.0, fishers=fishers)
    assert float(eata.anchor_loss(model).detach()) == 0.0
    with torch.no_grad():
        model[1].weight.add_(0.5)
    expected = 10.0 * float((fishers["1.weight"][0] * 0.25).sum())
    assert float(eata.anchor_loss(model).detach()) == pytest.approx(expected, rel=1e-5)
