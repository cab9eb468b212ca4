"""Shared math of the distillation family: soft-target cross-entropy, tempered KL and per-row min-max scaling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["check_positive", "minmax_per_row", "soft_cross_entropy", "tempered_kl"]


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Validate ``value > 0`` (``>= 0`` with ``allow_zero``) and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"`{name}` must be {'>= 0' if allow_zero else '> 0'}, got {value}.")
    return float(value)


def soft_cross_entropy(logits: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    """``mean_i -Σ_k target_ik · log softmax(logits_i / T)_k``; gradient ``(p - target)/(T·B)``."""
    if logits.shape != target.shape:
        raise ValueError(f"`logits` {tuple(logits.shape)} and `target` {tuple(target.shape)} must have one shape.")
    log_probs = F.log_softmax(logits / temperature, dim=-1)
    return -(target * log_probs).sum(-1).mean()


def tempered_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``mean_i KL(softmax(t_i/T) ‖ softmax(s_i/T))`` (zero iff the rows agree up to a per-row shift)."""
    teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    student = F.log_softmax(student_logits / temperature, dim=-1)
    return F.kl_div(
        student.reshape(-1, student.shape[-1]),
        teacher.reshape(-1, teacher.shape[-1]),
        reduction="batchmean",
        log_target=True,
    )


def minmax_per_row(scores: Tensor, mask: Tensor | None = None, tie_value: float = 0.5) -> Tensor:
    """Scale each row to [0, 1]: ``(s - min_row) / (max_row - min_row)`` over the valid entries of the row.

    A row whose valid entries all tie (max == min) carries no preference; every valid entry is set to
    ``tie_value``. Invalid entries (``mask`` False) are excluded from min/max and set to 0.
    """
    if scores.ndim < 1:
        raise ValueError(f"`scores` must have at least one dimension, got shape {tuple(scores.shape)}.")
    valid = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.to(torch.bool)
    if valid.shape != scores.shape:
        raise ValueError(f"`mask` {tuple(valid.shape)} must match `scores` {tuple(scores.shape)}.")
    high = torch.where(valid, scores, scores.new_tensor(float("-inf"))).amax(-1, keepdim=True)
    low = torch.where(valid, scores, scores.new_tensor(float("inf"))).amin(-1, keepdim=True)
    span = high - low
    tied = ~(span > 0)
    scaled = (scores - low) / torch.where(tied, torch.ones_like(span), span)
    scaled = torch.where(tied, torch.full_like(scaled, tie_value), scaled)
    return torch.where(valid, scaled, torch.zeros_like(scaled))
