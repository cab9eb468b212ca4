"""Shared helper of the parameter-anchor regularizers (cross initialization, adapt-then-unlearn repulsion)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["squared_distance"]


def squared_distance(params: Sequence[Tensor], anchors: Sequence[Tensor]) -> Tensor:
    """``Σ_k ‖θ_k − θ̂_k‖²`` over matching tensors (anchors are treated as constants)."""
    if len(params) != len(anchors):
        raise ValueError(f"`params` and `anchors` must have equal length, got {len(params)} and {len(anchors)}.")
    total = params[0].new_zeros(())
    for p, a in zip(params, anchors, strict=True):
        if p.shape != a.shape:
            raise ValueError(f"parameter shape {tuple(p.shape)} does not match its anchor {tuple(a.shape)}.")
        total = total + (p - a.detach()).pow(2).sum()
    return total
