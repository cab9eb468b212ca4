"""AAER: regularize single-step adversarial training with its abnormal adversarial examples (loss went *down*)."""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs._batch import batch_inputs, batch_labels
from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["AAER", "aaer_regularizer", "squared_l2_mean"]


def squared_l2_mean(a: Tensor, b: Tensor) -> Tensor:
    """``mean_i ‖a_i - b_i‖²`` (the official ``l2_square``)."""
    return (a - b).pow(2).reshape(len(a), -1).sum(1).mean()


def aaer_regularizer(
    loss_before: Tensor,
    loss_after: Tensor,
    out_before: Tensor,
    out_after: Tensor,
    *,
    lambda1: float = 1.0,
    lambda2: float = 4.0,
    lambda3: float = 1.5,
) -> tuple[Tensor, Tensor]:
    """(regularizer, abnormal mask); 0 when the batch has no abnormal or no normal example (official code)."""
    abnormal = loss_before.detach() > loss_after.detach()
    normal = ~abnormal
    count = int(abnormal.sum())
    if count == 0 or int(normal.sum()) == 0:
        return out_after.sum() * 0.0, abnormal
    gap = (loss_before - loss_after)[abnormal].mean()
    variation = squared_l2_mean(out_before[abnormal].detach(), out_after[abnormal])
    reference = squared_l2_mean(out_before[normal].detach(), out_after[normal]).detach()
    reg = lambda1 * count / len(abnormal) * (lambda2 * gap + lambda3 * F.relu(variation - reference))
    return reg, abnormal


@register(
    "aaer",
    fidelity="official-code",
    verified_by="tests/common_regs/augment/test_abnormal_adversarial_regularization.py",
    kind="loss",
    paper="Lin, Yu, Liu, Eliminating Catastrophic Overfitting Via Abnormal Adversarial Examples "
    "Regularization, NeurIPS 2023, arXiv:2404.08154",
    seed=69,
)
class AAER(ConfigFromKeys):
    r"""Single-step (FGSM) adversarial training loss plus the abnormal-adversarial-example regularizer.

    During single-step adversarial training some adversarial examples *lower* the loss (abnormal AEs); their
    number and output variation explode right before catastrophic overfitting. AAER penalises their count, loss
    decrease and output variation (in excess of the normal examples'), which keeps FGSM training robust.

    Reference:
        Lin, Yu, Liu, "Eliminating Catastrophic Overfitting Via Abnormal Adversarial Examples Regularization",
        NeurIPS 2023, arXiv:2404.08154 (listed as CVPR 2024 in the seed list). Checked against the official
        ``train_aaer.py``: random init U(-2ε, 2ε) without projection (``--clamp 0``), one signed-gradient step of
        α = ε, AE abnormal iff L(x+δ₀) > L(x+δ); the loss-gap term is built from *detached* losses there (it shifts
        the loss value but has no gradient), kept here unless ``differentiable_gap``. The step-size warm-up over the
        first 5 epochs is not applied.

    Math:
        .. math::
            \delta = \delta_0 + \alpha\,\mathrm{sign}\nabla_{\delta_0} L(x+\delta_0),\ \delta_0\sim
            \mathcal U(-2\epsilon, 2\epsilon),\quad A = \{i: L_i(x+\delta_0) > L_i(x+\delta)\},\\
            L = \mathrm{CE}(f(x+\delta), y) + \lambda_1\frac{|A|}{n}\Big(\lambda_2\,\mathrm{mean}_{A}
            [L(x+\delta_0)
            - L(x+\delta)] + \lambda_3\big[V_A - \mathrm{sg}(V_{\bar A})\big]_+\Big),\
            V_S = \mathrm{mean}_{i\in S}\lVert f(x_i+\delta_{0,i}) - f(x_i+\delta_i)\rVert^2

    Args:
        epsilon: ε (input units). Default 8/255 (source: official ``--epsilon 8`` on [0, 1] images).
        step_size: α; None = ε. Default None (source: official ``--alpha 1.0`` × ε).
        lambda1: λ₁. Default 1.0 (source: official code).
        lambda2: λ₂. Default 4.0 (source: official code).
        lambda3: λ₃. Default 1.5 (source: official code).
        differentiable_gap: let the λ₂ term carry gradient through L(x+δ). Default False (source: official code).

    Shape:
        inputs (B, *), labels (B,), logits (B, C).

    Returns:
        scalar total loss (adversarial CE + regularizer); ``last_components`` holds the parts and the abnormal count.

    Note:
        Use as the whole training loss (task loss 0). The regularizer is 0 when a batch has no abnormal AE.

    Example:
        >>> import torch
        >>> loss_before, loss_after = torch.tensor([1.0, 0.5]), torch.tensor([2.0, 3.0])
        >>> reg, abnormal = aaer_regularizer(loss_before, loss_after, torch.zeros(2, 3), torch.ones(2, 3))
        >>> float(reg), abnormal.tolist()
        (0.0, [False, False])
    """

    config_keys: ClassVar[tuple[str, ...]] = (
        "epsilon",
        "step_size",
        "lambda1",
        "lambda2",
        "lambda3",
        "differentiable_gap",
    )
    citation: ClassVar[str] = (
        "@inproceedings{lin2023aaer, title={Eliminating Catastrophic Overfitting Via Abnormal Adversarial Examples "
        "Regularization}, author={Lin, Runqi and Yu, Chaojian and Liu, Tongliang}, booktitle={NeurIPS}, "
        "year={2023}}"
    )

    def __init__(
        self,
        epsilon: float = 8 / 255,
        step_size: float | None = None,
        lambda1: float = 1.0,
        lambda2: float = 4.0,
        lambda3: float = 1.5,
        differentiable_gap: bool = False,
    ) -> None:
        if epsilon <= 0:
            raise ValueError(f"`epsilon` must be > 0, got {epsilon}.")
        if step_size is not None and step_size <= 0:
            raise ValueError(f"`step_size` must be > 0 or None, got {step_size}.")
        for name, value in (("lambda1", lambda1), ("lambda2", lambda2), ("lambda3", lambda3)):
            if value < 0:
                raise ValueError(f"`{name}` must be >= 0, got {value}.")
        self.epsilon, self.step_size = float(epsilon), step_size
        self.lambda1, self.lambda2, self.lambda3 = float(lambda1), float(lambda2), float(lambda3)
        self.differentiable_gap = bool(differentiable_gap)
        self.last_components: dict[str, float] = {}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        alpha = self.epsilon if self.step_size is None else float(self.step_size)
        delta = ((torch.rand_like(x) * 2 - 1) * 2 * self.epsilon).requires_grad_(True)
        out_before = model(x + delta)
        loss_before = F.cross_entropy(out_before, y, reduction="none")
        (grad,) = torch.autograd.grad(loss_before.mean(), delta)
        delta = (delta + alpha * grad.sign()).detach()
        out_after = model(x + delta)
        loss_after = F.cross_entropy(out_after, y, reduction="none")
        after_for_gap = loss_after if self.differentiable_gap else loss_after.detach()
        reg, abnormal = aaer_regularizer(
            loss_before.detach(),
            after_for_gap,
            out_before.detach(),
            out_after,
            lambda1=self.lambda1,
            lambda2=self.lambda2,
            lambda3=self.lambda3,
        )
        ce = loss_after.mean()
        self.last_components = {
            "adversarial_ce": float(ce.detach()),
            "regularizer": float(reg.detach()),
            "abnormal": float(abnormal.sum()),
        }
        return ce + reg

    def __call__(self, ctx: TrainContext) -> Tensor:
        return self.loss(ctx.model, batch_inputs(ctx), batch_labels(ctx))
