"""Progressive gradient flow for N:M sparsity (decaying mask factor, structure decay, SR-STE option)."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.registry import register
from common_regs.sparsity._masks import DEFAULT_MODULE_TYPES, MaskSchedulerBase, nm_mask

logger = logging.getLogger(__name__)

__all__ = ["NMSparsity", "mask_decay_factor", "structure_decay_schedule"]

DecayType = Literal["step", "linear", "exp"]


def mask_decay_factor(decay: DecayType, coef: float, t: int) -> float:
    """The value pruned weights are multiplied by, ``t`` steps after sparse training started.

    ``step``: 0; ``linear``: ``max(0, 1 - coef·t)``; ``exp``: ``exp(-coef·t)`` (``LinearDecay`` /
    ``ExponentialDecay`` in Bambhaniya et al.'s ``sparse_functions.py``).
    """
    if decay == "step":
        return 0.0
    if decay == "linear":
        return max(0.0, 1.0 - coef * t)
    if decay == "exp":
        return math.exp(-coef * t)
    raise ValueError(f"`decay` must be one of ('step', 'linear', 'exp'), got {decay!r}.")


def structure_decay_schedule(
    n: int, m: int, dense_steps: int, total_steps: int, fine_tune_steps: int
) -> list[tuple[int, int]]:
    """(start step, N) frames walking from ``(m-1):m`` down to ``n:m`` over equal frames (SDGF).

    ``log2(m/n)`` frames of equal length cover the sparse phase ``[dense_steps, total_steps - fine_tune_steps)``;
    frame ``i`` uses ``N = m - 1`` for ``i = 0`` and ``m / 2**i`` after, e.g. 1:16 → 15, 8, 4, 2, 1 (the code's
    ``structure_decay_config``, with steps in place of epochs).
    """
    frames = int(math.log2(m / n))
    if frames < 1 or m / n != 2**frames:
        raise ValueError(f"structure decay needs `m`/`n` to be a power of two >= 2, got n={n}, m={m}.")
    sparse_steps = total_steps - dense_steps - fine_tune_steps
    if sparse_steps < frames:
        raise ValueError(
            f"structure decay needs at least {frames} sparse steps, got `total_steps`={total_steps} - "
            f"`dense_steps`={dense_steps} - `fine_tune_steps`={fine_tune_steps} = {sparse_steps}."
        )
    size = sparse_steps / frames
    return [(dense_steps + int(i * size), m - 1 if i == 0 else int(m / 2**i)) for i in range(frames + 1)]


@register(
    "nm_sparsity",
    fidelity="official-code",
    verified_by="tests/common_regs/sparsity/test_nm_sparsity.py",
    kind="mask_scheduler",
    paper="Bambhaniya, Yazdanbakhsh, Subramanian, Kao, Agrawal, Madhu, Krishna, Progressive Gradient Flow for "
    "Robust N:M Sparsity Training in Transformers, 2024, arXiv:2402.04744",
    seed=56,
)
class NMSparsity(MaskSchedulerBase):
    r"""N:M sparse training with progressive gradient flow to the pruned weights (decaying mask, structure decay).

    Keeps dense "shadow" weights; the forward pass uses ``W ⊙ (m + (1 - m) d_t)`` with the magnitude N:M mask ``m``
    recomputed from the current weights before every forward, and the backward pass hands the dense gradient to
    ``W`` (straight-through). ``d_t`` decays from 1 to 0 so gradient flow to pruned weights fades progressively
    (MDGF); the structure-decay option (SDGF) walks the pattern from (M-1):M to N:M. ``srste=True`` gives the
    SR-STE baseline instead (hard N:M forward, gradient ``g + λ_W (1 - m) ⊙ W``). Use for 2:4-style sparsity of
    MLP towers and encoder linears; call :meth:`squash` after training to bake the final N:M weights.

    Reference:
        Bambhaniya et al., "Progressive Gradient Flow for Robust N:M Sparsity Training in Transformers", 2024,
        arXiv:2402.04744; decay and structure schedules as in the official code
        ``abhibambhaniya/progressive_gradient_flow_nm_sparsity`` (``timm/sparse_pruning/sparse_functions.py``).
        SR-STE: Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch", ICLR 2021,
        arXiv:2102.04010.

    Math:
        .. math::
            \tilde W_t = W_t \odot (m_t + (1 - m_t)\, d_t), \qquad m_t = \mathrm{NM}_{N_t:M}(|W_t|),
            \qquad \frac{\partial L}{\partial W} := \frac{\partial L}{\partial \tilde W}
            \;(+\, \lambda_W (1 - m_t) \odot W_t \text{ with SR-STE})

        with ``t = step - dense_steps``, ``d_t = max(0, 1 - decay_coef·t)`` (linear), ``exp(-decay_coef·t)`` (exp)
        or 0 (step); ``d_t = 0`` during the last ``fine_tune_steps`` steps and the model is dense (``m = 1``)
        during the first ``dense_steps``.

    Args:
        n: kept weights per group. Default 2 (2:4, the hardware pattern; paper also uses 1:4 ... 1:32).
        m: group size. Default 4.
        decay: ``"linear"``, ``"exp"`` or ``"step"`` (plain STE). Default ``"linear"`` (paper's MDGF-Linear).
        decay_coef: slope / rate of the decay per step. Default 0.01 (source: ``LinearDecay`` default in the code;
            the paper tunes it per model).
        structure_decay: walk (M-1):M → N:M over equal frames (SDGF). Default False.
        dense_steps: dense warm-up steps. Default 0.
        fine_tune_steps: final steps with a binary mask. Default 0.
        total_steps: total training steps (needed for structure decay and fine-tuning). Default None.
        srste: use SR-STE instead of the decaying mask. Default False.
        srste_decay: SR-STE ``λ_W``. Default 2e-4 (source: code default ``decay = 0.0002``).
        targets / exclude / module_types: which weights get N:M masks (see :class:`MaskSchedulerBase`).

    Shape:
        Target weights (O, I) or (O, I, *k) with I divisible by ``m``.

    Note:
        Masks are recomputed after each optimizer step, i.e. before each forward pass, which is when the paper's
        code recomputes them. The pruned raw weights are *not* zero (that is the method); the N:M pattern holds for
        the effective weight once ``d_t = 0``. ``squash()`` removes the parametrization and always leaves exact
        ``n``:``m`` weights: when training stopped before the hard pattern (``d_t > 0``, a structure-decay frame
        above ``n``, or the dense phase) it prunes the rest itself and warns if that moved the effective weights by
        more than 1 % (relative Frobenius norm); :meth:`final_step` says when the hard pattern starts.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(8, 8))
        >>> sched = NMSparsity(n=2, m=4, decay="step")
        >>> sched.prepare(model)
        >>> int((model[0].weight != 0).sum())
        32
    """

    straight_through: ClassVar[bool] = True
    config_keys: ClassVar[tuple[str, ...]] = (
        "n",
        "m",
        "decay",
        "decay_coef",
        "structure_decay",
        "dense_steps",
        "fine_tune_steps",
        "total_steps",
        "srste",
        "srste_decay",
        "targets",
        "exclude",
        "module_types",
    )

    def __init__(
        self,
        n: int = 2,
        m: int = 4,
        *,
        decay: DecayType = "linear",
        decay_coef: float = 0.01,
        structure_decay: bool = False,
        dense_steps: int = 0,
        fine_tune_steps: int = 0,
        total_steps: int | None = None,
        srste: bool = False,
        srste_decay: float = 2e-4,
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        module_types: Sequence[str] = DEFAULT_MODULE_TYPES,
    ) -> None:
        super().__init__(targets=targets, exclude=exclude, module_types=module_types)
        if not 0 < n <= m:
            raise ValueError(f"N:M sparsity needs 0 < `n` <= `m`, got n={n}, m={m}.")
        mask_decay_factor(decay, 0.0, 0)  # validates `decay`
        if decay_coef < 0:
            raise ValueError(f"`decay_coef` must be >= 0, got {decay_coef}.")
        if dense_steps < 0 or fine_tune_steps < 0:
            raise ValueError(
                f"`dense_steps` and `fine_tune_steps` must be >= 0, got {dense_steps}, {fine_tune_steps}."
            )
        if (structure_decay or fine_tune_steps) and total_steps is None:
            raise ValueError("`total_steps` is required with `structure_decay=True` or `fine_tune_steps` > 0.")
        if srste_decay < 0:
            raise ValueError(f"`srste_decay` must be >= 0, got {srste_decay}.")
        self.n, self.m = n, m
        self.decay, self.decay_coef = decay, float(decay_coef)
        self.structure_decay = structure_decay
        self.dense_steps, self.fine_tune_steps, self.total_steps = dense_steps, fine_tune_steps, total_steps
        self.srste, self.srste_decay = srste, float(srste_decay)
        self._srste_decay = self.srste_decay if srste else 0.0
        self._frames = (
            structure_decay_schedule(n, m, dense_steps, total_steps, fine_tune_steps)
            if structure_decay and total_steps is not None
            else None
        )
        self._hard = False  # dense shadow weights are kept (straight-through)

    def current_n(self, step: int) -> int:
        """N of the pattern used by forward pass number ``step`` (0-based)."""
        if self._frames is None:
            return self.n
        n = self._frames[0][1]
        for start, frame_n in self._frames:
            if step >= start:
                n = frame_n
        return n

    def current_fill(self, step: int) -> float:
        """``d_t`` used by forward pass number ``step`` (1 while dense)."""
        if step < self.dense_steps:
            return 1.0
        if self.srste:
            return 0.0
        if self.total_steps is not None and self.fine_tune_steps and step >= self.total_steps - self.fine_tune_steps:
            return 0.0
        return mask_decay_factor(self.decay, self.decay_coef, step - self.dense_steps)

    def final_step(self) -> int | None:
        """First step whose forward pass uses the hard ``n``:``m`` pattern (``d_t = 0``); None if it never does."""
        candidates = []
        if self.fine_tune_steps and self.total_steps is not None:
            candidates.append(self.total_steps - self.fine_tune_steps)
        if self.srste or self.decay == "step":
            candidates.append(self.dense_steps)
        elif self.decay == "linear" and self.decay_coef > 0:
            t = math.ceil(1.0 / self.decay_coef)
            candidates.append(self.dense_steps + t + (mask_decay_factor("linear", self.decay_coef, t) > 0))
        if not candidates:
            return None
        last_frame = self._frames[-1][0] if self._frames is not None else 0
        return max(min(candidates), last_frame, self.dense_steps)

    def squash(self) -> nn.Module:
        """Bake exact ``n``:``m`` weights into plain parameters (pruning now what the decay has not yet removed)."""
        self._check_prepared()
        before = {name: self.effective(name).detach().clone() for name in self._masks}
        with torch.no_grad():
            for _, mask, weight in self._items():
                mask.copy_(nm_mask(weight, self.n, self.m))
        self.set_fill(0.0)
        change = sum(float(((self.effective(name).detach() - old) ** 2).sum()) for name, old in before.items())
        moved = math.sqrt(change / max(sum(float((old**2).sum()) for old in before.values()), 1e-30))
        if moved > 0.01:
            final = self.final_step()
            when = "never (set `fine_tune_steps`)" if final is None else f"at step {final}"
            warnings.warn(
                f"NMSparsity.squash: training stopped at step {self.steps_done}, before the hard {self.n}:{self.m} "
                f"pattern (it starts {when}; d_t={self.current_fill(self.steps_done):.3g}); squash pruned the rest "
                f"itself, which moved the effective weights by {moved:.1%}. Train until `final_step()`, raise "
                "`decay_coef`, or set `fine_tune_steps`.",
                stacklevel=2,
            )
        return super().squash()

    def nm_pattern(self) -> tuple[int, int] | None:
        if self.steps_done < self.dense_steps:
            return None
        return self.current_n(self.steps_done), self.m

    def expected_nnz(self, name: str) -> int:
        pattern = self.nm_pattern()
        numel = self._masks[name].numel()
        return numel if pattern is None else numel // pattern[1] * pattern[0]

    def _on_prepare(self) -> None:
        for _, _, weight in self._items():
            nm_mask(weight, self.n, self.m)  # validates divisibility up front, with the layer's shape
        self._refresh()

    def _update(self, ctx: TrainContext | None) -> None:
        del ctx
        self._refresh()

    def _refresh(self) -> None:
        step = self.steps_done
        for _, mask, weight in self._items():
            if step < self.dense_steps:
                mask.fill_(1.0)
            else:
                mask.copy_(nm_mask(weight, self.current_n(step), self.m))
        self.set_fill(self.current_fill(step))
