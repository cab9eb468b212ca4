"""Min-max ensemble teacher (#39): per-query [0, 1] rows, weights, scale, tie rule, mask, provider wiring."""

from __future__ import annotations

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.distill import MinMaxEnsembleTeacher, minmax_ensemble_scores
from common_regs.distill._utils import minmax_per_row


def test_each_teacher_row_maps_to_unit_interval() -> None:
    scores = torch.randn(5, 7) * 10 + 3
    scaled = minmax_per_row(scores)
    torch.testing.assert_close(scaled.amin(1), torch.zeros(5))
    torch.testing.assert_close(scaled.amax(1), torch.ones(5))
    assert torch.equal(scaled.argsort(1), scores.argsort(1))  # order preserved


def test_hand_case_with_weights_and_scale() -> None:
    dense = torch.tensor([[0.9, 0.5, 0.1]])  # → [1, 0.5, 0]
    bm25 = torch.tensor([[12.0, 30.0, 3.0]])  # → [1/3, 1, 0]
    out = minmax_ensemble_scores([dense, bm25], weights=[3.0, 1.0], scale=30.0)
    expected = 30.0 * (0.75 * torch.tensor([1.0, 0.5, 0.0]) + 0.25 * torch.tensor([1 / 3, 1.0, 0.0]))
    torch.testing.assert_close(out, expected[None])


def test_all_tied_query_gets_tie_value_and_leaves_kl_targets_unchanged() -> None:
    tied = torch.tensor([[2.0, 2.0, 2.0], [1.0, 5.0, 3.0]])
    other = torch.tensor([[0.1, 0.7, 0.3], [0.2, 0.1, 0.9]])
    assert minmax_per_row(tied, tie_value=0.5)[0].tolist() == [0.5, 0.5, 0.5]
    a = minmax_ensemble_scores([tied, other], tie_value=0.0)
    b = minmax_ensemble_scores([tied, other], tie_value=1.0)
    torch.testing.assert_close(torch.softmax(a, -1), torch.softmax(b, -1))  # per-row constant: KL target unchanged
    torch.testing.assert_close(a[:, :, None] - a[:, None], b[:, :, None] - b[:, None])  # margins unchanged
    single = torch.tensor([[4.0, float("nan")]])
    assert minmax_per_row(single, mask=torch.tensor([[True, False]])).tolist() == [[0.5, 0.0]]  # one valid candidate


def test_mask_excludes_padding_from_min_and_max() -> None:
    scores = torch.tensor([[1.0, 3.0, 100.0]])
    out = minmax_per_row(scores, mask=torch.tensor([[True, True, False]]))
    assert out.tolist() == [[0.0, 1.0, 0.0]]


def test_target_provider_reads_extras_or_calls_teachers() -> None:
    scores = torch.tensor([[[0.0, 1.0]], [[5.0, 4.0]]])
    ctx = TrainContext(model=torch.nn.Identity(), extras={"teacher_scores": scores})
    torch.testing.assert_close(MinMaxEnsembleTeacher().targets(ctx), torch.tensor([[15.0, 15.0]]))
    provider = MinMaxEnsembleTeacher(teachers=[lambda c: scores[0], lambda c: scores[1]], weights=[1.0, 0.0])
    torch.testing.assert_close(provider.targets(TrainContext(model=torch.nn.Identity())), torch.tensor([[0.0, 30.0]]))
    with pytest.raises(ValueError, match="weights"):
        minmax_ensemble_scores(scores, weights=[1.0])
    with pytest.raises(ValueError, match="teacher_scores"):
        MinMaxEnsembleTeacher().targets(TrainContext(model=torch.nn.Identity()))
