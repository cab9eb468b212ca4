"""StableMax cross-entropy: a softmax replacement that avoids softmax collapse (grokking at the edge of stability)."""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["StableMaxCrossEntropy", "stablemax", "stablemax_cross_entropy"]


def _s(x: Tensor) -> Tensor:
    """``s(x) = x + 1`` for x ≥ 0 and ``1 / (1 − x)`` for x < 0 (C¹ at 0, positive everywhere)."""
    return torch.where(x >= 0, x + 1.0, 1.0 / (1.0 - x.clamp_max(0.0)))


def stablemax(logits: Tensor, dim: int = -1) -> Tensor:
    """``StableMaxᵢ(z) = s(zᵢ) / Σⱼ s(zⱼ)``."""
    values = _s(logits)
    return values / values.sum(dim=dim, keepdim=True)


def stablemax_cross_entropy(logits: Tensor, targets: Tensor, *, dtype: torch.dtype | None = torch.float64,
                            reduction: str = "mean") -> Tensor:
    """``−log StableMax_y(z)`` computed in ``dtype`` (float64 as in the reference code; None keeps the input dtype)."""
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"`logits` must be (B, K) and `targets` (B,), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}.")
    z = logits if dtype is None else logits.to(dtype)
    values = _s(z)
    loss = values.sum(-1).log() - values.gather(-1, targets[:, None].long()).squeeze(-1).log()
    if reduction == "mean":
        return loss.mean().to(logits.dtype)
    if reduction == "sum":
        return loss.sum().to(logits.dtype)
    if reduction == "none":
        return loss.to(logits.dtype)
    raise ValueError(f"`reduction` must be one of 'mean', 'sum', 'none', got {reduction!r}.")


@register("stablemax_cross_entropy", kind="loss", seed=32,
          fidelity="paper-equation",
          verified_by="tests/common_regs/dynamics/test_stablemax_orthograd.py"
                      "::test_stablemax_is_finite_where_float32_softmax_collapses",
          paper="Prieto, Barsbey, Mediano, Birdal, Grokking at the Edge of Numerical Stability, ICLR 2025, "
                "arXiv:2501.04697")
class StableMaxCrossEntropy(ConfigFromKeys):
    r"""Cross-entropy through StableMax instead of softmax, for training past zero training error.

    Softmax probabilities round to exactly 1 in float32 once the correct logit leads by ~100 (softmax collapse),
    so the gradient vanishes and learning stalls; StableMax grows only linearly in the logits and stays finite.

    Reference:
        Lucas Prieto, Melih Barsbey, Pedro A. M. Mediano, Tolga Birdal, "Grokking at the Edge of Numerical
        Stability", ICLR 2025, arXiv:2501.04697 (§4, Eq. for s(x)); formula checked against public
        re-implementations of the reference code (which computes the loss in float64).

    Math:
        .. math::
            s(x) = \begin{cases} x + 1 & x \ge 0\\ \frac{1}{1 - x} & x < 0\end{cases},\qquad
            \mathcal L = -\log \frac{s(z_y)}{\sum_j s(z_j)}

    Args:
        dtype: computation dtype name ("float64", "float32"). Default "float64" (reference code).
        reduction: "mean", "sum" or "none". Default "mean" (convention).
        weight: coefficient used by ``RegHooks`` when used as a loss term. Default 1.0 (convention).

    Shape:
        Inputs: logits (B, K) from ``ctx.outputs``; targets (B,) from ``ctx.extras["targets"]`` or ``ctx.batch[1]``.

    Returns:
        The loss tensor (scalar for mean/sum).

    Note:
        Not shift-invariant (unlike softmax): adding a constant to all logits changes the probabilities.

    Example:
        >>> import torch
        >>> loss = StableMaxCrossEntropy()
        >>> float(loss.forward(torch.tensor([[1e3, 0.0, 0.0]]), torch.tensor([0]))) > 0
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("dtype", "reduction", "weight")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{prieto2025grokking, title={Grokking at the Edge of Numerical Stability}, "
        "author={Prieto, Lucas and Barsbey, Melih and Mediano, Pedro A. M. and Birdal, Tolga}, "
        "booktitle={ICLR}, year={2025}}"
    )

    def __init__(self, dtype: str = "float64", reduction: str = "mean", weight: float = 1.0) -> None:
        if dtype not in ("float64", "float32", "bfloat16", "float16"):
            raise ValueError(f"`dtype` must be one of float64/float32/bfloat16/float16, got {dtype!r}.")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"`reduction` must be one of 'mean', 'sum', 'none', got {reduction!r}.")
        self.dtype, self.reduction, self.weight = dtype, reduction, float(weight)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return stablemax_cross_entropy(logits, targets, dtype=getattr(torch, self.dtype), reduction=self.reduction)

    def __call__(self, ctx: TrainContext) -> Tensor:
        targets = ctx.extras.get("targets")
        if targets is None:
            if not isinstance(ctx.batch, (tuple, list)) or len(ctx.batch) < 2:
                raise ValueError("StableMaxCrossEntropy needs targets in ctx.extras['targets'] or ctx.batch[1].")
            targets = ctx.batch[1]
        return self.forward(ctx.outputs, targets)
