"""One-shot magnitude pruning (unstructured or N:M) at a chosen step, then a fixed hard mask."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from common_regs.api import TrainContext
from common_regs.registry import register
from common_regs.sparsity._masks import DEFAULT_MODULE_TYPES, MaskSchedulerBase, check_fraction, nm_mask, topk_mask

logger = logging.getLogger(__name__)

__all__ = ["MagnitudePruning"]


@register(
    "magnitude_pruning",
    fidelity="paper-equation",
    verified_by="tests/common_regs/sparsity/test_magnitude_pruning.py",
    kind="mask_scheduler",
    paper="Han, Pool, Tran, Dally, Learning both Weights and Connections for Efficient Neural Networks, "
    "NeurIPS 2015, arXiv:1506.02626",
)
class MagnitudePruning(MaskSchedulerBase):
    r"""One-shot magnitude pruning: at ``prune_step`` keep the largest weights per layer, then train sparse.

    The baseline every sparse-training method is compared against (here: against progressive N:M and ISS-P).
    Dense before ``prune_step``; at that step each layer keeps its largest-|w| entries (an exact per-layer count,
    or the N largest of every M consecutive input weights) and the mask is frozen; pruned weights and their
    optimizer state stay zero.

    Reference:
        Han et al., "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS 2015,
        arXiv:1506.02626 (magnitude criterion, prune then retrain).

    Math:
        .. math::
            m = \mathrm{TopK}_{n - \lfloor s n \rfloor}(|W_{t_p}|) \text{ or } m = \mathrm{NM}_{N:M}(|W_{t_p}|),
            \qquad \tilde W_t = W_t \odot m \;(t \ge t_p)

    Args:
        sparsity: fraction pruned per layer (unstructured). Default 0.9 (regkit demo setting).
        n_m: ``(N, M)`` for an N:M mask instead of ``sparsity``. Default None.
        prune_step: optimizer step at which to prune (0 = at ``prepare``). Default 0.
        targets / exclude / module_types: see :class:`MaskSchedulerBase`.
    """

    config_keys: ClassVar[tuple[str, ...]] = ("sparsity", "n_m", "prune_step", "targets", "exclude", "module_types")

    def __init__(
        self,
        sparsity: float = 0.9,
        *,
        n_m: tuple[int, int] | None = None,
        prune_step: int = 0,
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        module_types: Sequence[str] = DEFAULT_MODULE_TYPES,
    ) -> None:
        super().__init__(targets=targets, exclude=exclude, module_types=module_types)
        self.sparsity = check_fraction("sparsity", sparsity)
        if n_m is not None:
            n_m = (int(n_m[0]), int(n_m[1]))
            if not 0 < n_m[0] <= n_m[1]:
                raise ValueError(f"`n_m` must be (N, M) with 0 < N <= M, got {n_m}.")
        self.n_m = n_m
        if prune_step < 0:
            raise ValueError(f"`prune_step` must be >= 0, got {prune_step}.")
        self.prune_step = prune_step
        self._hard = True

    @property
    def pruned(self) -> bool:
        return self.steps_done >= self.prune_step

    def nm_pattern(self) -> tuple[int, int] | None:
        return self.n_m if self.pruned else None

    def expected_nnz(self, name: str) -> int:
        numel = self._masks[name].numel()
        if not self.pruned:
            return numel
        if self.n_m is not None:
            return numel // self.n_m[1] * self.n_m[0]
        return numel - int(self.sparsity * numel)

    def _on_prepare(self) -> None:
        self.set_fill(0.0)
        if self.prune_step == 0:
            self._prune()

    def _update(self, ctx: TrainContext | None) -> None:
        del ctx
        if self.steps_done == self.prune_step:
            self._prune()

    def _prune(self) -> None:
        for _, mask, weight in self._items():
            if self.n_m is not None:
                mask.copy_(nm_mask(weight, *self.n_m))
            else:
                mask.copy_(topk_mask(weight.abs(), weight.numel() - int(self.sparsity * weight.numel())))
        logger.info("MagnitudePruning: pruned at step %d", self.steps_done)
