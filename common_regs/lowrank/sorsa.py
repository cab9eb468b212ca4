"""SORSA: trainable principal singular factors over a frozen residual, with an orthonormality regularizer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn

from common_regs.lowrank._base import ParametrizedReparam, WeightParametrization
from common_regs.lowrank._utils import svd, validate_rank
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["SORSA", "sorsa_weight"]


def sorsa_weight(residual: Tensor, a: Tensor, s: Tensor, b: Tensor, scale: float) -> Tensor:
    """``W = W_res + scale · (B · diag(S)) · A`` (matrix view)."""
    return residual + scale * ((b * s) @ a)


class _SorsaWeight(WeightParametrization):
    trainable = (True, True, True)

    def __init__(self, rank: int, scale: float) -> None:
        super().__init__()
        self.rank, self.scale = rank, scale
        self.shape: tuple[int, ...] = ()

    def initial_originals(self, weight: Tensor) -> tuple[Tensor, ...]:
        u, s, vh = svd(weight)
        r = min(self.rank, s.numel())
        self.shape = tuple(weight.shape)
        a, sv, b = vh[:r].contiguous(), s[:r].clone(), u[:, :r].contiguous()
        residual = weight.reshape(weight.shape[0], -1) - self.scale * ((b * sv) @ a)
        self.register_buffer("residual", residual.contiguous())
        return a, sv, b

    def forward(self, a: Tensor, s: Tensor, b: Tensor) -> Tensor:
        return sorsa_weight(self.residual, a, s, b, self.scale).reshape(self.shape)


@register("sorsa", kind="reparam", seed=60,
          fidelity="official-code",
          verified_by="tests/common_regs/lowrank/test_sorsa.py",
          paper="Cao, SORSA: Singular Values and Orthonormal Regularized Singular Vectors Adaptation of Large "
                "Language Models, 2024, arXiv:2409.00055")
class SORSA(ParametrizedReparam):
    r"""SVD-split adapter: trainable principal factors (A, S, B) over a frozen residual weight.

    The principal rank-r part of each weight becomes trainable singular vectors and values; the rest is frozen.
    Pair it with :class:`~common_regs.lowrank.sorsa_orthonormal_penalty.SorsaOrthonormalPenalty` to keep A and B
    orthonormal while fine-tuning. Mergeable exactly.

    Reference:
        Yang Cao, "SORSA: Singular Values and Orthonormal Regularized Singular Vectors Adaptation of Large Language
        Models", 2024, arXiv:2409.00055 (§3; official code ``sorsalib/src/sorsa/layer.py``).

    Math:
        .. math::
            W = U\Sigma V^\top,\ A = V_{:,1..r}^\top,\ S = \sigma_{1..r},\ B = U_{:,1..r},\
            W_{res} = W - s\,(B\,\mathrm{diag}(S))A,\quad W' = W_{res} + s\,(B\,\mathrm{diag}(S))A

        with s = ``alpha``/``rank`` (1 when ``alpha`` is None), as in the official layer.

    Args:
        rank: r, the number of principal singular triplets made trainable (clipped to min(out, in)).
            Default 4 (convention for small models; the paper uses 128 for Llama-2-7B, ``scripts/train_sorsa.sh``).
        alpha: scaling numerator; None means scale 1. Default None (source: official layer).
        module_types: module types to reparametrize. Default ("linear",) (convention).
        include: fnmatch patterns of module names to reparametrize; None = all. Default None.
        exclude: fnmatch patterns to skip. Default None.
        freeze_base: freeze every other model parameter (PEFT convention). Default False.

    Shape:
        weight (out, in) → trainable A (r, in), S (r,), B (out, r); buffer ``residual`` (out, in).

    Returns:
        ``prepare(model)`` returns the model with ``weight`` parametrized.

    Note:
        The official code takes the SVD of Wᵀ; the factors are the same up to the sign of each singular pair.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(8, 6)); x = torch.randn(3, 8); before = model(x)
        >>> reparam = SORSA(rank=2); _ = reparam.prepare(model)
        >>> torch.allclose(model(x), before, atol=1e-5), reparam.num_trainable()
        (True, 30)
    """

    config_keys: ClassVar[tuple[str, ...]] = ("rank", "alpha", "module_types", "include", "exclude", "freeze_base")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@article{cao2024sorsa, title={SORSA: Singular Values and Orthonormal Regularized Singular Vectors Adaptation "
        "of Large Language Models}, author={Cao, Yang}, journal={arXiv:2409.00055}, year={2024}}"
    )

    def __init__(self, rank: int = 4, alpha: float | None = None, *, module_types: Sequence[str] = ("linear",),
                 include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                 freeze_base: bool = False) -> None:
        super().__init__(module_types=module_types, include=include, exclude=exclude, freeze_base=freeze_base)
        validate_rank(rank)
        if alpha is not None and alpha <= 0:
            raise ValueError(f"`alpha` must be positive or None, got {alpha}.")
        self.rank, self.alpha = rank, alpha
        self.scale = 1.0 if alpha is None else float(alpha) / rank

    def make_parametrization(self, name: str, module: nn.Module, weight: Tensor) -> WeightParametrization:
        return _SorsaWeight(self.rank, self.scale)
