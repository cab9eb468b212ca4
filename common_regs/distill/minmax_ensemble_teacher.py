"""Heterogeneous ensemble teacher: per-query min-max normalised teacher scores, weighted mean, scaled."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.distill._utils import check_positive, minmax_per_row
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["MinMaxEnsembleTeacher", "minmax_ensemble_scores"]


def minmax_ensemble_scores(
    teacher_scores: Sequence[Tensor] | Tensor,
    weights: Sequence[float] | None = None,
    *,
    scale: float = 30.0,
    mask: Tensor | None = None,
    tie_value: float = 0.5,
) -> Tensor:
    """``scale · Σ_t w_t · minmax_row(S_t) / Σ_t w_t`` for teacher score matrices ``S_t`` of shape (Q, C)."""
    stacked = torch.stack(list(teacher_scores)) if not isinstance(teacher_scores, Tensor) else teacher_scores
    if stacked.ndim != 3:
        raise ValueError(f"teacher scores must be T matrices of shape (Q, C), got a stack of {tuple(stacked.shape)}.")
    count = stacked.shape[0]
    w = torch.ones(count) if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
    if w.numel() != count:
        raise ValueError(f"`weights` has {w.numel()} entries for {count} teachers.")
    if bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"`weights` must be non-negative with a positive sum, got {w.tolist()}.")
    full_mask = None if mask is None else mask.expand_as(stacked[0])
    normalised = torch.stack([minmax_per_row(s.float(), full_mask, tie_value) for s in stacked])
    w = (w / w.sum()).to(normalised.device)
    return scale * torch.einsum("t,tqc->qc", w, normalised)


@register(
    "minmax_ensemble_teacher",
    fidelity="official-code",
    verified_by="tests/common_regs/distill/test_minmax_ensemble_teacher.py",
    kind="target_provider",
    paper="Geng, Ru, Yang, Towards Competitive Search Relevance for Inference-Free Learned Sparse Retrievers, "
    "2024, arXiv:2411.04403",
    seed=39,
)
class MinMaxEnsembleTeacher(ConfigFromKeys):
    r"""Teacher scores for distillation from several heterogeneous teachers (dense + sparse/lexical).

    Teachers score on different scales (cosine in [-1, 1], BM25 in [0, 40+]); normalising each teacher's
    candidate scores per query to [0, 1] makes them comparable before averaging. The averaged score is scaled
    (default 30) so that ``softmax(score / T)`` is peaked enough to distil with KL (``DistillLoss("kl")``).

    Reference:
        Geng, Ru, Yang, "Towards Competitive Search Relevance for Inference-Free Learned Sparse Retrievers", 2024,
        arXiv:2411.04403 (§ heterogeneous ensemble knowledge distillation); per the regkit reference notes, which
        read the authors' code (``opensearch-sparse-model-tuning-sample``, ``score_scale`` = 30, T = 1).

    Math:
        .. math::
            \hat S_{t,q,c} = \frac{S_{t,q,c} - \min_{c'} S_{t,q,c'}}{\max_{c'} S_{t,q,c'} - \min_{c'}
            S_{t,q,c'}},\qquad
            \mathrm{target}_{q,c} = s\,\frac{\sum_t w_t \hat S_{t,q,c}}{\sum_t w_t}

        with s ↔ ``scale``, w ↔ ``weights``. If a teacher's valid candidates of query q all tie (max = min), its
        row is set to ``tie_value``: a per-row constant, which shifts the averaged row by a constant and so leaves
        ``softmax(target_q / T)`` (KL targets) and all score margins (MarginMSE) unchanged, whatever its value.

    Args:
        teachers: callables ``teacher(ctx) -> (Q, C)`` scores; None = read ``ctx.extras["teacher_scores"]`` (a
            sequence of (Q, C) tensors, or a (T, Q, C) tensor). Default None.
        weights: one non-negative weight per teacher; None = equal weights. Default None (source: paper, mean).
        scale: s. Default 30.0 (source: authors' code ``score_scale``).
        tie_value: value of a tied row in [0, 1]. Default 0.5 (regkit choice; provably irrelevant to KL/margins).

    Shape:
        teacher scores (T, Q, C); optional ``ctx.extras["candidate_mask"]`` (Q, C) bool marks real candidates
        (padding excluded from min/max and set to 0).

    Returns:
        ``targets(ctx)``: (Q, C) ensemble scores in [0, scale].

    Note:
        Teacher scores are detached. Padded candidates get 0; give the student the same mask (e.g. -inf logits)
        so they carry no probability.

    Example:
        >>> import torch
        >>> dense = torch.tensor([[0.9, 0.5, 0.1]]); bm25 = torch.tensor([[12.0, 30.0, 3.0]])
        >>> minmax_ensemble_scores([dense, bm25], scale=30.0)
        tensor([[20.0000, 22.5000,  0.0000]])
    """

    config_keys: ClassVar[tuple[str, ...]] = ("weights", "scale", "tie_value")
    runtime_keys: ClassVar[tuple[str, ...]] = ("teachers",)
    citation: ClassVar[str] = (
        "@article{geng2024competitive, title={Towards Competitive Search Relevance for Inference-Free Learned Sparse "
        "Retrievers}, author={Geng, Zhichao and Ru, Dongyu and Yang, Yang}, journal={arXiv:2411.04403}, year={2024}}"
    )

    def __init__(
        self,
        teachers: Sequence[Callable[[TrainContext], Tensor]] | None = None,
        weights: Sequence[float] | None = None,
        scale: float = 30.0,
        tie_value: float = 0.5,
    ) -> None:
        self.teachers = list(teachers) if teachers is not None else None
        self.weights = [float(w) for w in weights] if weights is not None else None
        if self.weights is not None and self.teachers is not None and len(self.weights) != len(self.teachers):
            raise ValueError(f"`weights` has {len(self.weights)} entries for {len(self.teachers)} `teachers`.")
        self.scale = check_positive("scale", scale)
        if not 0.0 <= tie_value <= 1.0:
            raise ValueError(f"`tie_value` must be in [0, 1], got {tie_value}.")
        self.tie_value = float(tie_value)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"teachers": [lambda ctx: ctx.outputs, lambda ctx: -ctx.outputs], "weights": [1.0, 2.0]}

    def teacher_scores(self, ctx: TrainContext) -> Tensor:
        if self.teachers is not None:
            return torch.stack([teacher(ctx).detach() for teacher in self.teachers])
        scores = ctx.extras.get("teacher_scores")
        if scores is None:
            raise ValueError("`MinMaxEnsembleTeacher` needs `teachers` or `ctx.extras['teacher_scores']`.")
        if isinstance(scores, Mapping):
            scores = list(scores.values())
        return (scores if isinstance(scores, Tensor) else torch.stack(list(scores))).detach()

    def targets(self, ctx: TrainContext) -> Tensor:
        return minmax_ensemble_scores(
            self.teacher_scores(ctx),
            self.weights,
            scale=self.scale,
            mask=ctx.extras.get("candidate_mask"),
            tie_value=self.tie_value,
        )
