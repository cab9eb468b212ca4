"""EQ-Net elastic quantization: one weight-sharing network trained for several bit-widths at once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs.lowrank._base import ParametrizedReparam, WeightParametrization
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["ElasticQuantization", "fake_quantize", "kl_soft_loss", "kurtosis", "skewness"]


def _round_ste(x: Tensor) -> Tensor:
    return (x.round() - x).detach() + x


def _grad_scale(x: Tensor, scale: float) -> Tensor:
    # |x| forward, gradient multiplied by ``scale`` (LSQ step-size gradient scaling, official ``grad_scale``).
    y = x.abs()
    return (y - y * scale).detach() + y * scale


def fake_quantize(weight: Tensor, step: Tensor, bits: int) -> Tensor:
    """Symmetric per-output-channel fake quantization with a straight-through round.

    ``q = clamp(round(w/δ) + z, 0, 2^b − 1)``, ``ŵ = (q − z)·δ`` with zero point ``z = 2^{b−1} − 1``
    (official ``UniformAffineQuantizerForWeight`` symmetric path); ``step`` is δ per output channel, shape (out,).
    """
    levels = 2**bits
    zero_point = 2 ** (bits - 1) - 1
    shape = (-1,) + (1,) * (weight.dim() - 1)
    delta = step.reshape(shape)
    q = torch.clamp(_round_ste(weight / delta) + zero_point, 0, levels - 1)
    return (q - zero_point) * delta


def _standardized(weight: Tensor) -> Tensor:
    return (weight - weight.mean()) / weight.std()


def kurtosis(weight: Tensor) -> Tensor:
    """``E[((w − μ)/σ)⁴]`` with the unbiased σ (``torch.std``), as in the official ``KurtosisLossCalc``."""
    return _standardized(weight).pow(4).mean()


def skewness(weight: Tensor) -> Tensor:
    """``E[((w − μ)/σ)³]``."""
    return _standardized(weight).pow(3).mean()


def kl_soft_loss(logits: Tensor, soft_logits: Tensor, targets: Tensor | None, alpha: float = 0.5) -> Tensor:
    """Official ``KLLossSoft``: ``α·KL(softmax(soft) ‖ softmax(logits)) + (1 − α)·CE(logits, y)`` (T = 1)."""
    kl = F.kl_div(logits.log_softmax(1), soft_logits.detach().softmax(1), reduction="batchmean")
    if targets is None:
        return kl
    return alpha * kl + (1.0 - alpha) * F.cross_entropy(logits, targets)


class _ElasticWeight(WeightParametrization):
    trainable = (True,)

    def __init__(self, bit_list: tuple[int, ...]) -> None:
        super().__init__()
        self.bit_list = bit_list
        self.bits = max(bit_list)

    def initial_originals(self, weight: Tensor) -> tuple[Tensor, ...]:
        absmax = weight.detach().reshape(weight.shape[0], -1).abs().amax(1).clamp_min(1e-8)
        steps = torch.stack([2 * absmax / (2**b - 1) for b in self.bit_list], 1)
        self.steps = nn.Parameter(steps)  # (out, len(bit_list)): one learnable δ per channel and bit-width
        return (weight.detach().clone(),)

    def forward(self, weight: Tensor) -> Tensor:
        column = self.bit_list.index(self.bits)
        levels = 2**self.bits
        step = _grad_scale(self.steps[:, column], 1.0 / (levels * weight.numel() / weight.shape[0]) ** 0.5)
        return fake_quantize(weight, step, self.bits)


@register("elastic_quantization", kind="reparam", seed=37,
          fidelity="official-code",
          verified_by="tests/common_regs/quant/test_elastic_quantization.py",
          paper="Xu, Han, Tian, Yang, Zhang, EQ-Net: Elastic Quantization Neural Networks, ICCV 2023, "
                "arXiv:2308.07650")
class ElasticQuantization(ParametrizedReparam):
    r"""Weight-sharing quantization supernet over several bit-widths, with weight-distribution regularization.

    Every target layer's weight is fake-quantized at a switchable bit-width (one learnable step size per channel and
    bit-width). Training follows EQ-Net's sandwich rule: the widest bit-width learns from labels, narrower ones from
    the previous (wider) sub-network's logits (group progressive guidance), and a weight-distribution regularizer
    pulls each layer's weights toward zero skewness and the kurtosis of a uniform distribution (1.8), which makes
    them robust to every bit-width.

    Reference:
        Xu, Han, Tian, Yang, Zhang, "EQ-Net: Elastic Quantization Neural Networks", ICCV 2023, arXiv:2308.07650
        (official ``runner/criterion.py``, ``runner/trainer.py``, ``module/base_uaq.py``,
        ``configs/train-supernet.yaml``).

    Math:
        .. math::
            \hat W_b = (\mathrm{clamp}(\lfloor W/\delta_b \rceil + z_b, 0, 2^b-1) - z_b)\,\delta_b,\
            z_b = 2^{b-1}-1,\\
            L_{WDR} = \lambda_k \tfrac{1}{L}\sum_l (\kappa(W_l) - 1.8)^2 + \lambda_s \tfrac{1}{L}\sum_l
            \gamma(W_l)^2,\\
            L = CE(f_{b_{max}}, y) + \sum_{k\ge 1} \big[\tfrac12 KL(\mathrm{sg}\,p_{k-1} \| p_k)
            + \tfrac12 CE(f_{b_k}, y)\big] + L_{WDR}

        κ = kurtosis, γ = skewness; sub-networks: widest, random ones, narrowest (``num_subnets`` in total).

    Args:
        bit_list: selectable weight bit-widths. Default (2, 3, 4, 5, 6, 7, 8) (source: ``train-supernet.yaml``).
        kurtosis_weight: λ_k. Default 0.015 (source: ``train-supernet.yaml`` ``kurt_rate``).
        skewness_weight: λ_s. Default 1.0 (source: ``train-supernet.yaml`` ``skew_rate``).
        module_types: module types to quantize. Default ("linear", "conv2d") (convention).
        include: fnmatch patterns of module names; None = all. Default None.
        exclude: fnmatch patterns to skip. Default None.

    Shape:
        weight (out, ...) → trainable float weight (same shape) and ``steps`` (out, len(bit_list)).

    Returns:
        ``prepare(model)`` returns the model; ``sandwich_loss`` the total training loss.

    Note:
        Small-scale version: elastic *weight* bit-width only (EQ-Net also makes activation bit-width, symmetry and
        granularity elastic, and searches with a predictor + GA). Step sizes start from max-abs (the official code's
        ``max`` scale method; its default is an Lp-norm search). The WDR skips the first quantized layer, as the
        official ``KurtosisLoss`` does (``skip_first``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(6, 4)); eq = ElasticQuantization(bit_list=(2, 8))
        >>> _ = eq.prepare(model); eq.set_bits(2)
        >>> int(model[0].weight.detach().unique(dim=None).numel()) <= 4 * 4
        True
    """

    identity_at_init: ClassVar[bool] = False
    config_keys: ClassVar[tuple[str, ...]] = (
        "bit_list", "kurtosis_weight", "skewness_weight", "module_types", "include", "exclude"
    )
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    kurtosis_target: ClassVar[float] = 1.8
    citation: ClassVar[str] = (
        "@inproceedings{xu2023eqnet, title={EQ-Net: Elastic Quantization Neural Networks}, author={Xu, Ke and Han, "
        "Lei and Tian, Ye and Yang, Shangshang and Zhang, Xingyi}, booktitle={ICCV}, year={2023}}"
    )

    def __init__(self, bit_list: Sequence[int] = (2, 3, 4, 5, 6, 7, 8), kurtosis_weight: float = 0.015,
                 skewness_weight: float = 1.0, *, module_types: Sequence[str] = ("linear", "conv2d"),
                 include: Sequence[str] | None = None, exclude: Sequence[str] | None = None) -> None:
        super().__init__(module_types=module_types, include=include, exclude=exclude, freeze_base=False)
        bit_list = tuple(sorted(set(bit_list)))
        if not bit_list or any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 16 for b in bit_list):
            raise ValueError(f"`bit_list` must hold integers in [2, 16], got {bit_list!r}.")
        if kurtosis_weight < 0 or skewness_weight < 0:
            raise ValueError(f"`kurtosis_weight` and `skewness_weight` must be >= 0, got {kurtosis_weight} and "
                             f"{skewness_weight}.")
        self.bit_list, self.kurtosis_weight, self.skewness_weight = bit_list, float(kurtosis_weight), \
            float(skewness_weight)

    def make_parametrization(self, name: str, module: nn.Module, weight: Tensor) -> WeightParametrization:
        return _ElasticWeight(self.bit_list)

    def set_bits(self, bits: int | Sequence[int]) -> None:
        """One bit-width for every layer, or one per layer."""
        self._require_prepared()
        per_layer = [bits] * len(self.sites) if isinstance(bits, int) else list(bits)
        if len(per_layer) != len(self.sites) or any(b not in self.bit_list for b in per_layer):
            raise ValueError(f"`bits` must be in {self.bit_list} (one per layer, {len(self.sites)} layers), "
                             f"got {bits}.")
        for site, b in zip(self.sites, per_layer, strict=True):
            site.parametrization.bits = b

    def set_random(self, generator: torch.Generator | None = None) -> list[int]:
        choice = torch.randint(len(self.bit_list), (len(self.sites),), generator=generator).tolist()
        bits = [self.bit_list[c] for c in choice]
        self.set_bits(bits)
        return bits

    def weight_distribution_regularization(self, skip_first: bool = True) -> Tensor:
        """``λ_k·mean_l (κ_l − 1.8)² + λ_s·mean_l γ_l²`` over the float (latent) weights."""
        self._require_prepared()
        weights = [site.module.parametrizations[site.tensor_name].original0 for site in self.sites]
        if skip_first and len(weights) > 1:
            weights = weights[1:]
        kurt = torch.stack([(kurtosis(w) - self.kurtosis_target) ** 2 for w in weights]).mean()
        skew = torch.stack([skewness(w) ** 2 for w in weights]).mean()
        return self.kurtosis_weight * kurt + self.skewness_weight * skew

    def sandwich_loss(self, forward: Callable[[], Tensor], targets: Tensor, num_subnets: int = 3,
                      generator: torch.Generator | None = None) -> Tensor:
        """EQ-Net supernet loss for one batch: widest (CE), random ones, narrowest (KLLossSoft chain), + WDR.

        ``forward()`` runs the model on the batch at the currently set bit-widths. Default ``num_subnets`` 3
        (source: ``train-supernet.yaml``). The bit-widths are left at the widest afterwards.
        """
        if num_subnets < 1:
            raise ValueError(f"`num_subnets` must be >= 1, got {num_subnets}.")
        self.set_bits(max(self.bit_list))
        logits = forward()
        total = F.cross_entropy(logits, targets)
        soft = logits.detach()
        for index in range(1, num_subnets):
            if index == num_subnets - 1:
                self.set_bits(min(self.bit_list))
            else:
                self.set_random(generator)
            logits = forward()
            total = total + kl_soft_loss(logits, soft, targets, alpha=0.5)
            soft = logits.detach()
        self.set_bits(max(self.bit_list))
        return total + self.weight_distribution_regularization()
