"""Regularized mask tuning (R-AMT): learn binary masks over frozen pretrained weights, with gradient dropout."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs.lowrank._base import ParametrizedReparam, WeightParametrization
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["RegularizedMaskTuning", "binarize_ste", "gradient_dropout", "kl_to_reference"]


def binarize_ste(scores: Tensor, threshold: float) -> Tensor:
    """``1[scores > threshold]`` forward, identity gradient backward (the official ``Binarizer``)."""
    hard = (scores > threshold).to(scores.dtype)
    return hard + scores - scores.detach()


def gradient_dropout(task_grad: Tensor, reg_grad: Tensor, generator: torch.Generator | None = None, *,
                     strength: float = 1.0, eps: float = 1e-8) -> Tensor:
    """Gradient-dropout regularity of R-AMT: keep or drop each task-gradient entry by its agreement with the KL one.

    ``P = ½(1 + sgn(g_a)(g_a + g_b)/(|g_a| + |g_b| + ε))``, ``U ~ Uniform(0, 1)`` per entry and the result
    ``((1 − λ) + λ·1[P > U]) · g_a``: ``g_b`` only sets the keep probability and is never added. Where the signs
    agree ``P ≈ 1`` (kept); where they conflict ``P = |g_a| / (|g_a| + |g_b| + ε)``. Official
    ``graddrop_backward_and_update`` of ``wuw2019/R-AMT`` ``code/trainers/masktuning.py``; here ``U`` is drawn by
    ``torch.rand`` with ``generator`` on the CPU.
    """
    if task_grad.shape != reg_grad.shape:
        raise ValueError(f"`task_grad` {tuple(task_grad.shape)} and `reg_grad` {tuple(reg_grad.shape)} differ.")
    purity = 0.5 * (torch.sign(task_grad) * (task_grad + reg_grad) / (task_grad.abs() + reg_grad.abs() + eps) + 1.0)
    uniform = torch.rand(purity.shape, generator=generator, dtype=purity.dtype).to(purity.device)
    return ((1.0 - strength) + strength * (purity > uniform).to(task_grad.dtype)) * task_grad


def kl_to_reference(logits: Tensor, reference_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T² · KL(softmax(reference/T) ‖ softmax(logits/T))``, batch mean; the reference is detached.

    The official ``KLLoss`` (``code/trainers/masktuning.py``) returns the soft-target cross-entropy
    ``−T² Σ softmax(ref/T) log softmax(logits/T)``, which differs from this by the reference's entropy, a
    constant: both have one gradient, and only the gradient enters :func:`gradient_dropout`.
    """
    scaled = logits / temperature
    reference = reference_logits.detach() / temperature
    return temperature**2 * F.kl_div(scaled.log_softmax(-1), reference.log_softmax(-1), log_target=True,
                                     reduction="batchmean")


class _MaskedWeight(WeightParametrization):
    trainable = (True,)

    def __init__(self, init_score: float, threshold: float) -> None:
        super().__init__()
        self.init_score, self.threshold = init_score, threshold

    def initial_originals(self, weight: Tensor) -> tuple[Tensor, ...]:
        self.register_buffer("frozen", weight.detach().clone())
        return (torch.full_like(weight, self.init_score),)

    def forward(self, scores: Tensor) -> Tensor:
        return self.frozen * binarize_ste(scores, self.threshold)


@register("regularized_mask_tuning", kind="reparam", seed=8,
          fidelity="official-code",
          verified_by="tests/common_regs/lowrank/test_regularized_mask_tuning.py::test_backward_matches_official",
          paper="Zheng, Wu, Feng, Zhu, Liu, Zhao, Zha, Chen, Shen, Regularized Mask Tuning: Uncovering Hidden "
                "Knowledge in Pre-trained Vision-Language Models, ICCV 2023, arXiv:2307.15049")
class RegularizedMaskTuning(ParametrizedReparam):
    r"""Learn a binary mask over frozen pretrained weights of selected layers; regularize mask updates.

    The weights stay frozen; real-valued scores M are binarized by a hard threshold, and the masked weight
    W ⊙ 1[M > α] is used in the forward pass (straight-through gradient). Gradient dropout keeps each entry of the
    task gradient with a probability set by its sign agreement with the gradient of a KL term to the original
    model, so updates that would forget the pretrained knowledge are dropped stochastically.

    Reference:
        Zheng et al., "Regularized Mask Tuning: Uncovering Hidden Knowledge in Pre-trained Vision-Language Models",
        ICCV 2023, arXiv:2307.15049. Follows the official code ``wuw2019/R-AMT``: ``code/modules/masklayers.py``
        (``Binarizer``, ``ElementWiseLinear``: ``mask_real`` filled with ``mask_scale``, ``1[mask_real > threshold]``,
        identity backward), ``code/trainers/masktuning.py`` (``MaskTuning.forward_backward``: task loss = CE +
        ``LOSS_WEIGHT · Σ_l RegLoss(mask_l, 2)``; ``graddrop_backward_and_update``; ``KLLoss``),
        ``code/loss/reg_loss.py`` (``RegLoss``: the L2 norm ``‖M_l‖₂``) and ``code/configs/trainers/MASK/vit_b16.yaml``
        (``SCALE 1e-2``, ``THRESHOLD 5e-3``, ``MASK_LOSS True``, ``LOSS_WEIGHT 1e-4``, ``GDR_LAMBDA 1``; ``GDR_T 1``
        from ``train.py``).

    Math:
        .. math::
            W' = W \odot \mathbb{1}[M > \alpha],\quad \frac{\partial L}{\partial M} := \frac{\partial L}
            {\partial W'} \odot W,\quad L_a = L_{ce} + \beta \sum_l \lVert M_l \rVert_2,\quad
            L_b = T^2\,\mathrm{KL}(p_0^{T}\,\|\,p_M^{T})

        .. math::
            P = \tfrac12\Big(1 + \frac{\mathrm{sgn}(g_a)(g_a + g_b)}{|g_a| + |g_b| + \epsilon}\Big),\quad
            \nabla \leftarrow \big((1-\lambda) + \lambda\,\mathbb{1}[P > U]\big)\,g_a,\quad U \sim \mathcal U(0, 1)

        with g_a = ∇L_a, g_b = ∇L_b per entry, ε = 1e-8; g_b is never added to the update.

    Args:
        threshold: α. Default 5e-3 (source: official ``vit_b16.yaml`` ``MASK.THRESHOLD``).
        init_score: initial M (> α, so the mask starts all-ones and the model equals the pretrained one). Default
            1e-2 (source: official ``MASK.INIT '1s'`` with ``MASK.SCALE 1e-2``).
        gdr_lambda: λ, the drop strength (1 = dropped entries become 0, λ < 1 shrinks them to (1 − λ) g_a).
            Default 1.0 (source: official ``MASK.GDR_LAMBDA``).
        mask_norm_weight: β of the ``Σ_l ‖M_l‖₂`` penalty added to the task loss. Default 1e-4 (source: official
            ``vit_b16.yaml`` ``MASK.LOSS_WEIGHT``); 0 switches it off.
        module_types: module types to mask. Default ("linear",) (the official ViT-B/16 run masks the attention
            in/out projections and the patch-embedding conv; select them with ``include``).
        include: fnmatch patterns of the "important" layers to mask (the paper picks attention layers); None = all.
        exclude: fnmatch patterns to skip. Default None.
        freeze_base: freeze every other model parameter. Default True (official: only ``mask_real`` is trained).

    Shape:
        weight (any) → trainable scores M of the same shape; buffer ``frozen`` = W.

    Returns:
        ``prepare(model)`` returns the model; ``backward(task, kl)`` writes the gradients.

    Note:
        :meth:`backward` applies the rule to every trainable parameter that the KL term reaches (the official code
        applies it to every parameter of the masked encoder); a parameter the KL term does not reach gets its plain
        task gradient. Use :func:`kl_to_reference` with the frozen pretrained model's logits as the KL term.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 3)); x = torch.randn(2, 4); before = model(x)
        >>> rmt = RegularizedMaskTuning(); _ = rmt.prepare(model)
        >>> torch.equal(model(x), before), rmt.masked_fraction()
        (True, 0.0)
    """

    config_keys: ClassVar[tuple[str, ...]] = (
        "threshold", "init_score", "gdr_lambda", "mask_norm_weight", "module_types", "include", "exclude",
        "freeze_base",
    )
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{zheng2023rmt, title={Regularized Mask Tuning: Uncovering Hidden Knowledge in Pre-trained "
        "Vision-Language Models}, author={Zheng, Kecheng and Wu, Wei and Feng, Ruili and Zhu, Kai and Liu, Jiawei "
        "and Zhao, Deli and Zha, Zheng-Jun and Chen, Wei and Shen, Yujun}, booktitle={ICCV}, year={2023}}"
    )

    def __init__(self, threshold: float = 5e-3, init_score: float = 1e-2, gdr_lambda: float = 1.0,
                 mask_norm_weight: float = 1e-4, *, module_types: Sequence[str] = ("linear",),
                 include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                 freeze_base: bool = True) -> None:
        super().__init__(module_types=module_types, include=include, exclude=exclude, freeze_base=freeze_base)
        if not init_score > threshold:
            raise ValueError(f"`init_score` must be > `threshold` ({threshold}) so the mask starts all-ones, "
                             f"got {init_score}.")
        if not 0.0 <= gdr_lambda <= 1.0:
            raise ValueError(f"`gdr_lambda` must be in [0, 1], got {gdr_lambda}.")
        if not mask_norm_weight >= 0.0:
            raise ValueError(f"`mask_norm_weight` must be >= 0, got {mask_norm_weight}.")
        self.threshold, self.init_score = float(threshold), float(init_score)
        self.gdr_lambda, self.mask_norm_weight = float(gdr_lambda), float(mask_norm_weight)

    def make_parametrization(self, name: str, module: nn.Module, weight: Tensor) -> WeightParametrization:
        return _MaskedWeight(self.init_score, self.threshold)

    def mask_scores(self) -> list[Tensor]:
        self._require_prepared()
        return [site.module.parametrizations[site.tensor_name].original0 if site.stash is None else site.stash[0][0]
                for site in self.sites]

    def mask_norm(self) -> Tensor:
        """``Σ_l ‖M_l‖₂`` over the masked layers (official ``RegLoss(mask_real, 2)`` summed)."""
        return torch.stack([scores.reshape(-1).norm(2) for scores in self.mask_scores()]).sum()

    @torch.no_grad()
    def masked_fraction(self) -> float:
        """Fraction of masked-out (zeroed) weights over all masked layers."""
        scores = self.mask_scores()
        total = sum(s.numel() for s in scores)
        return sum(int((s <= self.threshold).sum()) for s in scores) / total

    def backward(self, task_loss: Tensor, reg_loss: Tensor, generator: torch.Generator | None = None) -> None:
        """Accumulate gradients: gradient dropout of ``∇(task + β Σ‖M‖₂)`` guided by ``∇ reg_loss`` (the KL term)."""
        self._require_prepared()
        model = self.model
        if model is None:
            raise ValueError("RegularizedMaskTuning is not prepared; call `prepare(model)` first.")
        if self.mask_norm_weight > 0:
            task_loss = task_loss + self.mask_norm_weight * self.mask_norm()
        params = [p for p in model.parameters() if p.requires_grad]
        task_grads = torch.autograd.grad(task_loss, params, retain_graph=True, allow_unused=True)
        reg_grads = torch.autograd.grad(reg_loss, params, allow_unused=True)
        for param, g_task, g_reg in zip(params, task_grads, reg_grads, strict=True):
            if g_task is None:
                continue
            grad = g_task if g_reg is None else gradient_dropout(g_task, g_reg, generator, strength=self.gdr_lambda)
            param.grad = grad if param.grad is None else param.grad + grad
