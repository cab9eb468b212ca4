"""SORSA's orthonormality regularizer on the trainable singular vectors."""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.lowrank.sorsa import _SorsaWeight
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["SorsaOrthonormalPenalty", "orthonormality_penalty", "sorsa_factors"]


def orthonormality_penalty(pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Mean over all factor matrices of ``‖A Aᵀ − I‖_F`` and ``‖Bᵀ B − I‖_F`` (not squared).

    ``pairs`` holds one ``(A, B)`` per adapter with A (r, in) and B (out, r). Returns 0 for an empty list.
    """
    terms = []
    for a, b in pairs:
        eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
        terms.append(torch.linalg.matrix_norm(a @ a.T - eye))
        terms.append(torch.linalg.matrix_norm(b.T @ b - eye))
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).mean()


def sorsa_factors(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """``(A, B)`` of every unmerged SORSA parametrization inside ``model``."""
    pairs = []
    for module in model.modules():
        plists = getattr(module, "parametrizations", None)
        if plists is None:
            continue
        for plist in plists.values():
            if any(isinstance(p, _SorsaWeight) for p in plist):
                pairs.append((plist.original0, plist.original2))
    return pairs


@register("sorsa_orthonormal", kind="loss", seed=60,
          fidelity="official-code",
          verified_by="tests/common_regs/lowrank/test_sorsa.py",
          paper="Cao, SORSA: Singular Values and Orthonormal Regularized Singular Vectors Adaptation of Large "
                "Language Models, 2024, arXiv:2409.00055")
class SorsaOrthonormalPenalty(ConfigFromKeys):
    r"""Orthonormality regularizer of SORSA: keeps the trainable singular vectors orthonormal.

    Add it next to a :class:`~common_regs.lowrank.sorsa.SORSA` reparametrization; it finds every SORSA adapter of
    ``ctx.model`` by itself. At SORSA's SVD initialization it is exactly 0.

    Reference:
        Yang Cao, "SORSA: Singular Values and Orthonormal Regularized Singular Vectors Adaptation of Large Language
        Models", 2024, arXiv:2409.00055 (§3; official ``calc_ortho`` in ``sorsalib/src/sorsa/layer.py``).

    Math:
        .. math::
            \mathcal{R} = \frac{1}{2L}\sum_{l=1}^{L}\big(\|A_lA_l^\top - I\|_F + \|B_l^\top B_l - I\|_F\big)

        The trainer adds γ·R with γ = ``weight``.

    Args:
        weight: γ. Default 4e-4 (source: official ``scripts/train_sorsa.sh``, ``--gamma 4e-4``; how the official
            trainers scale γ with the learning rate differs between its two scripts and is not reproduced).

    Shape:
        A (r, in), B (out, r) per adapter; output scalar.

    Returns:
        ``term(ctx)`` returns the scalar R (unweighted; ``RegHooks`` multiplies by ``weight``).

    Note:
        Merged adapters are skipped (there is nothing to regularize). With no SORSA adapter it returns 0.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from common_regs.api import TrainContext
        >>> from common_regs.lowrank.sorsa import SORSA
        >>> model = nn.Sequential(nn.Linear(8, 6)); _ = SORSA(rank=3).prepare(model)
        >>> float(SorsaOrthonormalPenalty()(TrainContext(model=model)).detach()) < 1e-5
        True
    """

    hook_kind: ClassVar[str] = "loss"
    config_keys: ClassVar[tuple[str, ...]] = ("weight",)
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@article{cao2024sorsa, title={SORSA: Singular Values and Orthonormal Regularized Singular Vectors Adaptation "
        "of Large Language Models}, author={Cao, Yang}, journal={arXiv:2409.00055}, year={2024}}"
    )

    def __init__(self, weight: float = 4e-4) -> None:
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, got {weight}.")
        self.weight = float(weight)

    def __call__(self, ctx: TrainContext) -> Tensor:
        return orthonormality_penalty(sorsa_factors(ctx.model))

    def state_dict(self) -> dict[str, float]:
        return {"weight": self.weight}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.weight = float(state["weight"])
