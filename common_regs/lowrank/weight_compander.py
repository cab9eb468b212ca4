"""Weight compander: every conv/linear weight reparametrized as w = a·arctan(v / b) (Cakaj et al., IJCNN 2023)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from common_regs.lowrank._base import ParametrizedReparam, WeightParametrization
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["WeightCompander", "compand", "compand_inverse"]

# §III-A, Table I and §IV-B/C: the grid search over a, b ∈ {0.5, …, 1.0}; (0.7, 0.8) is the pair picked most often
# (ResNet34 and VGG19 on CIFAR-100, ResNet50 on TinyImageNet). §IV-E: the learnable "fine" version starts best
# from a = 0.5, b = 1.0.
_FIXED_DEFAULT = (0.7, 0.8)
_LEARNABLE_DEFAULT = (0.5, 1.0)


def compand(v: Tensor, a: Tensor | float, b: Tensor | float) -> Tensor:
    """Eq. (1): ``Ψ(v) = a · arctan(v / b)``; bounded by ``a·π/2``, slope ``a / (b (1 + v²/b²))`` (Eq. 3)."""
    return a * torch.atan(v / b)


def compand_inverse(w: Tensor, a: Tensor | float, b: Tensor | float) -> Tensor:
    """Eq. (4): ``v = Ψ⁻¹(w) = b · tan(w / a)``, defined for ``|w| < a·π/2``."""
    limit = float(a) * math.pi / 2
    if float(w.abs().max()) >= limit:
        raise ValueError(
            f"`a` = {float(a)} bounds the weights to (-a·π/2, a·π/2) = ±{limit:.4g}, but a weight of magnitude "
            f"{float(w.abs().max()):.4g} was found; raise `a` (the paper assumes a >= 0.5 for standard inits)."
        )
    return b * torch.tan(w / a)


class _CompanderWeight(WeightParametrization):
    trainable = (True,)

    def __init__(self, a: float, b: float, learnable: bool) -> None:
        super().__init__()
        a_t, b_t = torch.tensor(float(a)), torch.tensor(float(b))
        if learnable:
            # §III-B, "fine" version: one (a, b) pair per layer, learned by SGD directly (the paper states no
            # reparametrization of a and b themselves).
            self.a, self.b = nn.Parameter(a_t), nn.Parameter(b_t)
        else:
            self.register_buffer("a", a_t)
            self.register_buffer("b", b_t)

    def initial_originals(self, weight: Tensor) -> tuple[Tensor, ...]:
        return (compand_inverse(weight, self.a.detach().to(weight.dtype), self.b.detach().to(weight.dtype)),)

    def forward(self, v: Tensor) -> Tensor:
        return compand(v, self.a.to(v.dtype), self.b.to(v.dtype))


@register("weight_compander", kind="reparam", seed=6,
          fidelity="paper-equation",
          verified_by="tests/common_regs/lowrank/test_weight_compander.py",
          paper="Cakaj, Mehnert, Yang, Weight Compander: A Simple Weight Reparameterization for Regularization, "
                "IJCNN 2023, arXiv:2306.16993")
class WeightCompander(ParametrizedReparam):
    r"""Reparametrize each conv/linear weight as ``w = a·arctan(v / b)``: bounded weights, dead weights revived.

    The network trains the latent v. The bound ``|w| < a·π/2`` restricts every weight's magnitude from the first
    epoch; the slope ``a / (b (1 + v²/b²))`` is largest at v = 0, so near-zero weights receive the largest updates
    and spread away from zero ("weight democracy"). a and b can be learned per layer.

    Reference:
        Cakaj, Mehnert, Yang, "Weight Compander: A Simple Weight Reparameterization for Regularization",
        IJCNN 2023, arXiv:2306.16993. Equations from the authors' PDF (``files/WC_IJCNN_2023.pdf`` of the GitHub
        repository ``rinorcakaj/rinorcakaj.github.io``): §III-A Eq. (1) the function, Eq. (3) its gradient,
        Eq. (4) the initialization v₀ = Ψ⁻¹(w₀); §III-B the learnable a, b; Table I, §IV-B/C/E the values.

    Math:
        .. math::
            w = \Psi(v) = a\arctan\!\left(\frac{v}{b}\right),\qquad
            \frac{\partial L}{\partial v} = \frac{\partial L}{\partial \Psi(v)}\cdot
            \frac{a}{b\,(1 + v^2/b^2)},\qquad v_0 = \Psi^{-1}(w_0) = b\tan\!\left(\frac{w_0}{a}\right)

    Args:
        a: output scale a > 0 (weights lie in (−aπ/2, aπ/2)). Default None = 0.7, or 0.5 when ``learnable``
            (paper: Table I / §IV-B grid search over {0.5, …, 1.0}; §IV-E best learnable initialization).
        b: input scale b > 0 (stretches v; slope at 0 is a/b). Default None = 0.8, or 1.0 when ``learnable``
            (same sources).
        learnable: learn one (a, b) pair per layer by SGD (the paper's "fine" version, which beat the network-wide
            "coarse" one). Default False.
        module_types: module types to reparametrize. Default ("linear", "conv2d", "conv1d") (paper: every
            convolutional and linear layer; batch-norm and biases are not reparametrized).
        include: fnmatch patterns of module names; None = all. Default None.
        exclude: fnmatch patterns to skip. Default None.
        freeze_base: freeze every other model parameter. Default False.

    Shape:
        weight (any) → trainable v of the same shape; scalar ``a``, ``b`` per layer.

    Returns:
        ``prepare(model)`` returns the model with ``weight`` parametrized; ``merge()`` bakes Ψ(v) in for
        inference (paper §III-A4: no inference cost).

    Note:
        Not reproduced, because they are optimizer settings rather than part of the reparametrization: weight
        decay is applied to Ψ(v) with fixed a, b and to v only (not a, b) when learnable (§III-A2, §III-B), while
        an optimizer's ``weight_decay`` here acts on the latent v; Adam is used with a modified adaptive step
        (§III-A3, from Powerpropagation), whereas regkit hands the plain gradient to the optimizer (the paper's
        experiments use SGD, where the two agree).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(5, 3)); x = torch.randn(2, 5); before = model(x)
        >>> _ = WeightCompander(a=0.7, b=0.8).prepare(model)
        >>> torch.allclose(model(x), before, atol=1e-5)
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("a", "b", "learnable", "module_types", "include", "exclude",
                                              "freeze_base")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{cakaj2023compander, title={Weight Compander: A Simple Weight Reparameterization for "
        "Regularization}, author={Cakaj, Rinor and Mehnert, Jens and Yang, Bin}, booktitle={IJCNN}, year={2023}}"
    )

    def __init__(self, a: float | None = None, b: float | None = None, learnable: bool = False, *,
                 module_types: Sequence[str] = ("linear", "conv2d", "conv1d"),
                 include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                 freeze_base: bool = False) -> None:
        super().__init__(module_types=module_types, include=include, exclude=exclude, freeze_base=freeze_base)
        default_a, default_b = _LEARNABLE_DEFAULT if learnable else _FIXED_DEFAULT
        a_val = default_a if a is None else float(a)
        b_val = default_b if b is None else float(b)
        if not a_val > 0 or not b_val > 0:
            raise ValueError(f"`a` and `b` must be > 0, got a={a_val}, b={b_val}.")
        self.a, self.b, self.learnable = a_val, b_val, bool(learnable)
        source = "paper §IV-E, learnable" if learnable else "paper Table I / §IV-B"
        logger.info("WeightCompander: a=%s b=%s learnable=%s (%s)", a_val, b_val, learnable,
                    source if a is None or b is None else "given")

    def make_parametrization(self, name: str, module: nn.Module, weight: Tensor) -> WeightParametrization:
        return _CompanderWeight(self.a, self.b, self.learnable)
