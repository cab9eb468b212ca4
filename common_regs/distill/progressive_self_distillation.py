"""PS-KD: progressive self-knowledge distillation with a per-sample store of last-epoch predictions."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs._batch import batch_labels, logits_of
from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.distill._utils import soft_cross_entropy
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["ProgressiveSelfDistillation", "pskd_alpha", "pskd_targets"]


def pskd_alpha(alpha_final: float, epoch: int, total_epochs: int) -> float:
    """``α_t = α_T · min(1, (epoch + 1) / E)`` (official ``main.py``: ``alpha_T * ((epoch + 1) / end_epoch)``)."""
    return alpha_final * min(1.0, (epoch + 1) / total_epochs)


def pskd_targets(labels: Tensor, past: Tensor, alpha: float) -> Tensor:
    """``ỹ = (1 - α) · onehot(y) + α · p_{t-1}``: a convex mix, so each row sums to 1 when ``past`` does."""
    onehot = F.one_hot(labels.long(), past.shape[-1]).to(past.dtype)
    return (1.0 - alpha) * onehot + alpha * past


@register(
    "ps_kd",
    fidelity="official-code",
    verified_by="tests/common_regs/distill/test_progressive_self_distillation.py",
    kind="target_provider",
    paper="Kim, Ji, Yoon, Hwang, Self-Knowledge Distillation with Progressive Refinement of Targets, ICCV 2021, "
    "arXiv:2006.12000",
    seed=25,
)
class ProgressiveSelfDistillation(ConfigFromKeys):
    r"""Soft targets mixing the label with the model's own prediction of the previous epoch (PS-KD).

    The model is its own teacher: the target of sample i at epoch t mixes its one-hot label with the softmax the
    model gave i at epoch t-1, with a weight α_t growing linearly to α_T. It softens hard labels progressively,
    which regularizes and calibrates classifiers (and tolerates some label noise). Needs dataset indices
    (``ctx.sample_indices``). Pair with :class:`~common_regs.distill.distill_loss.DistillLoss` (``"soft_ce"``),
    which replaces the cross-entropy.

    Reference:
        Kim, Ji, Yoon, Hwang, "Self-Knowledge Distillation with Progressive Refinement of Targets", ICCV 2021,
        arXiv:2006.12000 (Eq. 5-7). Checked against the official code (``lgcnsai/PS-KD-Pytorch``, ``main.py``:
        the α_t update and the one-hot initialisation at epoch 0; ``loss/pskd_loss.py``: batch mean of per-sample
        sums).

    Math:
        .. math::
            \alpha_t = \alpha_T\,\min(1, (t+1)/E),\qquad
            \tilde y_i = (1-\alpha_t)\,\mathrm{onehot}(y_i) + \alpha_t\, p^{(t-1)}_i,\qquad
            L = -\tfrac1B\sum_i \sum_k \tilde y_{ik}\log\mathrm{softmax}(z_i)_k

        with α_T ↔ ``alpha_final``, E ↔ ``total_epochs``; p^{(t-1)}_i is the stored (detached) softmax of sample i,
        one-hot until the sample has been seen. ∂L/∂z_i = (p_i - ỹ_i)/B, and α = 0 gives the cross-entropy.

    Args:
        num_samples: dataset size N (rows of the store).
        num_classes: number of classes C.
        alpha_final: α_T. Default 0.8 (source: official README command, ``--alpha_T 0.8``).
        total_epochs: E, the epoch count of the α ramp. Default 300 (source: official CIFAR-100 schedule).

    Shape:
        store (N, C); ``targets`` reads logits (B, C), labels (B,), indices (B,) and returns (B, C).

    Returns:
        ``targets(ctx)``: the soft targets ỹ (B, C) for the batch; ``loss(logits, targets)``: scalar soft CE.

    Note:
        ``targets`` reads the store *then* writes the current detached softmax for the batch indices, so the next
        epoch sees this epoch's predictions (as in the official loop). Indices outside [0, N) raise; duplicate
        indices in one batch keep the last write.

    Example:
        >>> import torch
        >>> from common_regs.api import TrainContext
        >>> pskd = ProgressiveSelfDistillation(num_samples=4, num_classes=3, alpha_final=0.8, total_epochs=2)
        >>> ctx = TrainContext(model=torch.nn.Identity(), batch=(None, torch.tensor([0, 2])),
        ...                    outputs=torch.zeros(2, 3), epoch=1, sample_indices=torch.tensor([0, 1]))
        >>> pskd.targets(ctx).sum(-1)
        tensor([1., 1.])
    """

    config_keys: ClassVar[tuple[str, ...]] = ("num_samples", "num_classes", "alpha_final", "total_epochs")
    citation: ClassVar[str] = (
        "@inproceedings{kim2021pskd, title={Self-Knowledge Distillation with Progressive Refinement of Targets}, "
        "author={Kim, Kyungyul and Ji, ByeongMoon and Yoon, Doyoung and Hwang, Sangheum}, booktitle={ICCV}, "
        "year={2021}}"
    )

    def __init__(self, num_samples: int, num_classes: int, alpha_final: float = 0.8, total_epochs: int = 300) -> None:
        for name, value in (
            ("num_samples", num_samples),
            ("num_classes", num_classes),
            ("total_epochs", total_epochs),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if not 0.0 <= alpha_final <= 1.0:
            raise ValueError(f"`alpha_final` must be in [0, 1], got {alpha_final}.")
        self.num_samples, self.num_classes = num_samples, num_classes
        self.alpha_final, self.total_epochs = float(alpha_final), total_epochs
        self.store = torch.zeros(num_samples, num_classes)
        self.seen = torch.zeros(num_samples, dtype=torch.bool)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"num_samples": 4, "num_classes": 3}

    def alpha(self, epoch: int) -> float:
        return pskd_alpha(self.alpha_final, epoch, self.total_epochs)

    def targets(self, ctx: TrainContext) -> Tensor:
        if ctx.sample_indices is None:
            raise ValueError("`ProgressiveSelfDistillation` needs `ctx.sample_indices` (dataset row of each sample).")
        logits, labels = logits_of(ctx), batch_labels(ctx)
        indices = ctx.sample_indices.long().cpu()
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[-1]} classes, `num_classes` is {self.num_classes}.")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_samples):
            raise ValueError(f"`sample_indices` must lie in [0, {self.num_samples}), got {indices.tolist()[:8]}...")
        onehot = F.one_hot(labels.long().cpu(), self.num_classes).float()
        past = torch.where(self.seen[indices, None], self.store[indices], onehot)
        soft = pskd_targets(labels.cpu(), past, self.alpha(ctx.epoch))
        self.store[indices] = F.softmax(logits.detach().float().cpu(), dim=-1)
        self.seen[indices] = True
        return soft.to(device=logits.device, dtype=logits.dtype)

    @staticmethod
    def loss(logits: Tensor, targets: Tensor) -> Tensor:
        return soft_cross_entropy(logits, targets)

    def state_dict(self) -> dict[str, Any]:
        return {"store": self.store.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.store, self.seen = state["store"].clone(), state["seen"].clone()
