"""MaskSparsity: pruning-aware sparse regularization, an L1 sub-gradient on the BN scales of to-be-pruned channels."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register
from common_regs.sparsity._masks import check_fraction

logger = logging.getLogger(__name__)

__all__ = ["MaskSparsity", "global_bn_prune_masks", "masked_sparsity_grad"]

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def masked_sparsity_grad(gamma: Tensor, mask: Tensor, strength: float, norm: Literal["l1", "l2"] = "l1") -> Tensor:
    """The regularizer's gradient on γ: ``s·sign(γ)⊙m`` (L1) or ``s·γ⊙m`` (L2); ``m = 1`` marks to-be-pruned."""
    if norm == "l1":
        return strength * torch.sign(gamma) * mask
    if norm == "l2":
        return strength * gamma * mask
    raise ValueError(f"`norm` must be 'l1' or 'l2', got {norm!r}.")


def global_bn_prune_masks(model: nn.Module, sparsity: float) -> dict[str, Tensor]:
    """Masks (1 = to be pruned) of the globally smallest-|γ| ``sparsity`` fraction of all BN channels."""
    layers = {f"{n}.weight": m.weight for n, m in model.named_modules() if isinstance(m, _BN_TYPES) and m.affine}
    if not layers:
        raise ValueError("MaskSparsity needs affine BatchNorm layers; the model has none.")
    scores = torch.cat([g.detach().abs().flatten() for g in layers.values()])
    count = int(sparsity * scores.numel())
    pruned = torch.zeros_like(scores)
    if count:
        pruned[torch.topk(scores, count, largest=False).indices] = 1.0
    masks, offset = {}, 0
    for name, gamma in layers.items():
        masks[name] = pruned[offset : offset + gamma.numel()].view_as(gamma).clone()
        offset += gamma.numel()
    return masks


@register(
    "mask_sparsity",
    fidelity="official-code",
    verified_by="tests/common_regs/sparsity/test_mask_sparsity.py",
    kind="grad_transform",
    paper="Jiang, Wang, Tang, Zhao, Pruning-aware Sparse Regularization for Network Pruning, Machine Intelligence "
    "Research 2023, arXiv:2201.06776",
    seed=16,
)
class MaskSparsity(ConfigFromKeys):
    r"""Pruning-aware sparse regularization: sparsify only the BN channels that pruning will remove.

    Network slimming puts an L1 penalty on *every* BN scale γ; MaskSparsity applies it only to the channels a
    pruning mask selects (here: the globally smallest-|γ| ``sparsity`` fraction, computed once on the first call,
    i.e. from the pretrained model, or a mask you pass), so the kept channels train unregularized. After training,
    the masked channels have γ ≈ 0 and are removed (prune + fine-tune). Use on BN-based towers/CNNs.

    Reference:
        Jiang, Wang, Tang, Zhao, "Pruning-aware Sparse Regularization for Network Pruning", Machine Intelligence
        Research 2023, arXiv:2201.06776; update as in ``netslim/sparse.py`` of ``CASIA-IVA-Lab/MaskSparsity``.

    Math:
        .. math::
            \nabla_{\gamma_c} \mathrel{+}= s\,\mathrm{sign}(\gamma_c)\, m_c \quad (\text{L1}),\qquad
            \nabla_{\gamma_c} \mathrel{+}= s\,\gamma_c\, m_c \quad (\text{L2})

        with ``m_c = 1`` for to-be-pruned channels; applied between backward and the optimizer step.

    Args:
        sparsity: fraction of all BN channels marked for pruning (global ranking). Default 0.5 (regkit default).
        strength: s. Default 2e-4 (source: ImageNet mask file ``lambda_0.0002_th-0.001`` of the official code).
        norm: ``"l1"`` or ``"l2"``. Default ``"l1"``.
        masks: explicit ``{bn_weight_fqn: mask}`` (1 = prune); default: computed from the model on first use.

    Note:
        The code's smooth-L1 variant is not provided.
    """

    config_keys: ClassVar[tuple[str, ...]] = ("sparsity", "strength", "norm")
    runtime_keys: ClassVar[tuple[str, ...]] = ("masks",)

    def __init__(
        self,
        sparsity: float = 0.5,
        strength: float = 2e-4,
        norm: Literal["l1", "l2"] = "l1",
        masks: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.sparsity = check_fraction("sparsity", sparsity)
        if strength < 0:
            raise ValueError(f"`strength` must be >= 0, got {strength}.")
        if norm not in ("l1", "l2"):
            raise ValueError(f"`norm` must be 'l1' or 'l2', got {norm!r}.")
        self.strength, self.norm = float(strength), norm
        self.prune_masks: dict[str, Tensor] | None = dict(masks) if masks is not None else None

    def prepare(self, model: nn.Module) -> None:
        """Compute the masks from ``model``'s current BN scales (done automatically on the first ``apply``)."""
        self.prune_masks = global_bn_prune_masks(model, self.sparsity)
        total = sum(int(m.sum()) for m in self.prune_masks.values())
        logger.info("MaskSparsity: %d BN channels marked for pruning (sparsity=%.3f)", total, self.sparsity)

    def apply(self, ctx: TrainContext) -> None:
        if self.prune_masks is None:
            self.prepare(ctx.model)
        masks = self.prune_masks or {}
        parameters = dict(ctx.model.named_parameters())
        for name, mask in masks.items():
            if name not in parameters:
                raise ValueError(f"MaskSparsity mask {name!r} names no parameter of the model.")
            gamma = parameters[name]
            extra = masked_sparsity_grad(gamma.detach(), mask.to(gamma.device), self.strength, self.norm)
            gamma.grad = extra if gamma.grad is None else gamma.grad + extra

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {k: v.clone() for k, v in (self.prune_masks or {}).items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.prune_masks = {k: v.clone() for k, v in state["masks"].items()} or None
