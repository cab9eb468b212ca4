"""SaRA: progressive sparse fine-tuning of the smallest weights, with a nuclear-norm low-rank constraint."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from common_regs.api import TrainContext
from common_regs.registry import register
from common_regs.sparsity._masks import (
    DEFAULT_MODULE_TYPES,
    MaskSchedulerBase,
    check_fraction,
    topk_mask,
    zero_optimizer_state,
)

logger = logging.getLogger(__name__)

__all__ = ["SaRA", "SaRANuclearNorm", "smallest_weights_mask"]


def smallest_weights_mask(weight: Tensor, *, threshold: float | None, fraction: float | None) -> Tensor:
    """1 where a weight is trainable: ``|W| < threshold`` (code) or exactly the ``fraction`` smallest |W|."""
    if threshold is not None:
        return (weight.detach().abs() < threshold).to(weight.dtype)
    count = int((fraction or 0.0) * weight.numel())
    return topk_mask(-weight.detach().abs(), count)


class SaRANuclearNorm:
    """LossTerm ``‖W ⊙ M‖_*`` on one randomly chosen eligible matrix per call (SaRA's low-rank constraint)."""

    hook_kind: ClassVar[str] = "loss"
    registry_name: ClassVar[str] = "sara_nuclear_norm"

    def __init__(self, owner: SaRA, weight: float) -> None:
        self.owner, self.weight = owner, weight

    def __call__(self, ctx: TrainContext) -> Tensor:
        del ctx
        eligible = self.owner.low_rank_targets()
        if not eligible:
            raise ValueError(
                f"SaRA nuclear norm: no 2-D target with min dimension > `min_dim`={self.owner.min_dim}; lower it."
            )
        name = self.owner.rng.choice(eligible)
        return torch.linalg.matrix_norm(self.owner.effective(name) * self.owner.masks[name], ord="nuc")


@register(
    "sara",
    fidelity="official-code",
    verified_by="tests/common_regs/sparsity/test_sara.py",
    kind="mask_scheduler",
    paper="Hu, Zhang, Liu, Luo, Xu, Wang, Ma, SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive "
    "Sparse Low-Rank Adaptation, 2024, arXiv:2409.06633",
    seed=15,
)
class SaRA(MaskSchedulerBase):
    r"""Fine-tune only the smallest-magnitude ("ineffective") weights of a pretrained model; freeze the rest.

    The mask marks the *trainable* entries (``semantics = "freeze"``): gradients of the other entries are zeroed
    by a tensor hook, their optimizer state is zeroed and their values are restored bit-exactly after each step
    (so weight decay cannot move them). At ``progressive_step`` the trainable set is re-selected on the current
    weights (progressive parameter adjustment). :meth:`nuclear_term` returns the low-rank LossTerm
    ``λ_rank ‖W ⊙ M‖_*`` on one random eligible matrix per step. Use to adapt a pretrained tower to a shifted
    task with a small, sparse parameter budget.

    Reference:
        Hu et al., "SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive Sparse Low-Rank Adaptation",
        2024, arXiv:2409.06633; mechanism as in ``optim/adamw.py`` of ``sjtuplayer/SaRA`` (``|W| < threshold``
        mask, re-selection at ``progressive_iter``, nuclear norm of ``param*mask`` on a random matrix with
        min dim > 64).

    Math:
        .. math::
            M = \mathbb{1}[|W_0| < \theta], \qquad W_{t+1} = W_t - \eta\, u_t \odot M,
            \qquad L = L_{task} + \lambda_{rank} \lVert W \odot M \rVert_*

    Args:
        trainable_fraction: fraction of smallest |w| per weight made trainable (exact count). Default 0.1
            (source: paper abstract, "smallest 10-20%").
        threshold: absolute θ instead of a fraction (the official code's form). Default None.
        progressive_step: step at which the trainable set is re-selected; None = never. Default None.
        nuclear_weight: λ_rank for :meth:`nuclear_term`. Default 0.0 (code default ``lambda_rank=0``).
        min_dim: matrices with min dimension > ``min_dim`` get the nuclear term. Default 64 (code).
        seed: seed of the random matrix choice. Default 0.
        targets / exclude / module_types: see :class:`MaskSchedulerBase`.
    """

    semantics: ClassVar[str] = "freeze"
    config_keys: ClassVar[tuple[str, ...]] = (
        "trainable_fraction",
        "threshold",
        "progressive_step",
        "nuclear_weight",
        "min_dim",
        "seed",
        "targets",
        "exclude",
        "module_types",
    )

    def __init__(
        self,
        trainable_fraction: float | None = 0.1,
        *,
        threshold: float | None = None,
        progressive_step: int | None = None,
        nuclear_weight: float = 0.0,
        min_dim: int = 64,
        seed: int = 0,
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        module_types: Sequence[str] = DEFAULT_MODULE_TYPES,
    ) -> None:
        super().__init__(targets=targets, exclude=exclude, module_types=module_types)
        if threshold is not None:
            if threshold <= 0:
                raise ValueError(f"`threshold` must be > 0, got {threshold}.")
            trainable_fraction = None
        elif trainable_fraction is None:
            raise ValueError("SaRA needs `trainable_fraction` or `threshold`.")
        else:
            check_fraction("trainable_fraction", trainable_fraction, closed_high=True)
        if progressive_step is not None and progressive_step < 1:
            raise ValueError(f"`progressive_step` must be >= 1 or None, got {progressive_step}.")
        if nuclear_weight < 0:
            raise ValueError(f"`nuclear_weight` must be >= 0, got {nuclear_weight}.")
        self.trainable_fraction, self.threshold = trainable_fraction, threshold
        self.progressive_step, self.nuclear_weight, self.min_dim, self.seed = (
            progressive_step,
            float(nuclear_weight),
            min_dim,
            seed,
        )
        self.exact_density = threshold is None
        self.rng = random.Random(seed)
        self._snapshots: dict[str, Tensor] = {}
        self._hard = False

    def nuclear_term(self) -> SaRANuclearNorm:
        """The LossTerm ``‖W ⊙ M‖_*`` with weight ``nuclear_weight``; pass it to ``RegHooks`` with this scheduler."""
        return SaRANuclearNorm(self, self.nuclear_weight)

    def low_rank_targets(self) -> list[str]:
        return [n for n, m in self._masks.items() if m.ndim == 2 and min(m.shape) > self.min_dim]

    def expected_nnz(self, name: str) -> int:
        if self.trainable_fraction is None:
            return int(self._masks[name].sum())
        return int(self.trainable_fraction * self._masks[name].numel())

    def trainable_count(self) -> int:
        return int(sum(int(m.sum()) for m in self._masks.values()))

    def _select(self) -> None:
        for name, mask, weight in self._items():
            mask.copy_(smallest_weights_mask(weight, threshold=self.threshold, fraction=self.trainable_fraction))
            self._snapshots[name] = weight.detach().clone()

    def _on_prepare(self) -> None:
        self.set_fill(1.0)
        self._select()
        for _, mask, weight in self._items():
            weight.register_hook(lambda grad, mask=mask: grad * mask)
        logger.info("SaRA: %d trainable entries", self.trainable_count())

    def _update(self, ctx: TrainContext | None) -> None:
        del ctx
        for name, mask, weight in self._items():
            weight.copy_(torch.where(mask.bool(), weight, self._snapshots[name]))
            zero_optimizer_state(self.optimizer, weight, mask)
        if self.progressive_step is not None and self.steps_done == self.progressive_step:
            self._select()
            for _, mask, weight in self._items():
                zero_optimizer_state(self.optimizer, weight, mask)
            logger.info("SaRA: re-selected trainable entries at step %d", self.steps_done)

    def _extra_state(self) -> dict[str, Any]:
        return {"snapshots": {k: v.clone() for k, v in self._snapshots.items()}, "rng": self.rng.getstate()}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self._snapshots = {k: v.clone() for k, v in state["snapshots"].items()}
        self.rng.setstate(state["rng"])
