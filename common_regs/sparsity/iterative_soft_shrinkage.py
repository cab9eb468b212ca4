"""ISS-P: iterative soft shrinkage of the unimportant weights, re-chosen after every optimizer step."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor

from common_regs.api import TrainContext
from common_regs.registry import register
from common_regs.schedules import Schedule, as_schedule
from common_regs.sparsity._masks import DEFAULT_MODULE_TYPES, MaskSchedulerBase, check_fraction, topk_mask

logger = logging.getLogger(__name__)

__all__ = ["IterativeSoftShrinkage", "soft_shrink_"]


def soft_shrink_(weight: Tensor, sparsity: float, ratio: float) -> Tensor:
    """Multiply the ``int(sparsity·numel)`` smallest-|w| entries of ``weight`` by ``ratio`` in place.

    Returns the kept-set mask (1 = among the largest ``numel - int(sparsity·numel)`` magnitudes). ``ratio = 0`` is
    iterative hard thresholding (IHT); the paper's ISS-P uses ``ratio`` close to 1.
    """
    keep = weight.numel() - int(sparsity * weight.numel())
    mask = topk_mask(weight.abs(), keep)
    weight.mul_(mask + (1.0 - mask) * ratio)
    return mask


@register(
    "iss_p",
    fidelity="official-code",
    verified_by="tests/common_regs/sparsity/test_iterative_soft_shrinkage.py",
    kind="mask_scheduler",
    paper="Wang, Wang, Zhang, Tao, Lai, Wang, Fu, Iterative Soft Shrinkage Learning for Efficient Image "
    "Super-Resolution, NeurIPS 2023, arXiv:2303.09650",
    seed=58,
)
class IterativeSoftShrinkage(MaskSchedulerBase):
    r"""Iterative soft shrinkage (ISS-P): shrink, don't zero, the currently unimportant weights every step.

    After every optimizer step, per layer, the bottom ``sparsity`` fraction by |w| is multiplied by
    ``shrink_ratio``; the set is re-chosen from the current magnitudes each time, so weights can leave and
    re-enter it (better trainability than hard pruning). At ``hard_prune_step`` the current bottom set is zeroed
    and frozen (hard mask) for the rest of training. Use it as a soft alternative to magnitude pruning.

    Reference:
        Wang et al., "Iterative Soft Shrinkage Learning for Efficient Image Super-Resolution", NeurIPS 2023,
        arXiv:2303.09650; mechanism as in ``_iht`` of ``basicsr/pruner/ist_pruner.py`` of the official code
        (``Jiamian-Wang/Iterative-Soft-Shrinkage-SR``, L1 criterion, local per-layer comparison).

    Math:
        .. math::
            m_t = \mathrm{TopK}_{n - \lfloor s_t n \rfloor}(|W_t|), \qquad
            W_t \leftarrow W_t \odot \big(m_t + (1 - m_t)\,\alpha\big)

        with ``s_t`` = ``sparsity`` at step t, ``α`` = ``shrink_ratio``; for ``t >= hard_prune_step``:
        ``W ← W ⊙ m`` with ``m`` frozen.

    Args:
        sparsity: fraction of each layer shrunk; a number or a schedule of the step. Default 0.9 (the code's
            example scripts prune 0.9-0.99).
        shrink_ratio: α, the factor applied to unimportant weights. Default 0.95 (source: code example ``ist_ratio``).
        hard_prune_step: step after which the mask is frozen and hard; None = never. Default None.
        targets / exclude / module_types: see :class:`MaskSchedulerBase`.

    Note:
        The code applies a constant pruning ratio; pass a schedule (e.g. ``Linear(0, 0.9, T)``) for a ramp.
        Before ``hard_prune_step`` the mask only *reports* the kept set: the forward pass uses the raw weights.
    """

    config_keys: ClassVar[tuple[str, ...]] = (
        "sparsity", "shrink_ratio", "hard_prune_step", "targets", "exclude", "module_types"
    )

    def __init__(
        self,
        sparsity: float | Schedule | dict[str, Any] = 0.9,
        shrink_ratio: float = 0.95,
        *,
        hard_prune_step: int | None = None,
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        module_types: Sequence[str] = DEFAULT_MODULE_TYPES,
    ) -> None:
        super().__init__(targets=targets, exclude=exclude, module_types=module_types)
        self._schedule = as_schedule(sparsity)
        self.sparsity = sparsity.get_config_dict() if isinstance(sparsity, Schedule) else sparsity
        check_fraction("sparsity", self._schedule(0))
        self.shrink_ratio = check_fraction("shrink_ratio", shrink_ratio, closed_high=True)
        if hard_prune_step is not None and hard_prune_step < 0:
            raise ValueError(f"`hard_prune_step` must be >= 0 or None, got {hard_prune_step}.")
        self.hard_prune_step = hard_prune_step
        self._hard = False
        self._frozen_sparsity: float | None = None

    def current_sparsity(self) -> float:
        if self._frozen_sparsity is not None:
            return self._frozen_sparsity
        return check_fraction("sparsity", self._schedule(self.steps_done))

    def expected_nnz(self, name: str) -> int:
        numel = self._masks[name].numel()
        return numel - int(self.current_sparsity() * numel)

    def _on_prepare(self) -> None:
        self.set_fill(1.0)
        sparsity = self.current_sparsity()
        for _, mask, weight in self._items():
            mask.copy_(topk_mask(weight.abs(), weight.numel() - int(sparsity * weight.numel())))

    def _update(self, ctx: TrainContext | None) -> None:
        del ctx
        if self._hard:
            return
        sparsity = self.current_sparsity()
        if self.hard_prune_step is not None and self.steps_done >= self.hard_prune_step:
            for _, mask, weight in self._items():
                mask.copy_(topk_mask(weight.abs(), weight.numel() - int(sparsity * weight.numel())))
            self._hard = True
            self._frozen_sparsity = sparsity
            self.set_fill(0.0)
            logger.info("IterativeSoftShrinkage: hard prune at step %d (sparsity %.3f)", self.steps_done, sparsity)
            return
        for _, mask, weight in self._items():
            mask.copy_(soft_shrink_(weight, sparsity, self.shrink_ratio))

    def _extra_state(self) -> dict[str, Any]:
        return {"frozen_sparsity": self._frozen_sparsity}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self._frozen_sparsity = state.get("frozen_sparsity")
