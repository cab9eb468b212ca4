"""QuantNAS quantization noise: train-time noise that imitates b-bit quantization, as a layer option."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from common_regs.lowrank._base import ParametrizedReparam, WeightParametrization
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["QuantizationNoise", "noisy_mixture", "quant_noise"]

NoiseType = Literal["gaussian", "uniform"]


def quant_noise(x: Tensor, bits: int, noise: NoiseType = "gaussian", generator: torch.Generator | None = None
                ) -> Tensor:
    """``x + Δ·ξ`` with ``Δ = (max x − min x)/(2^b − 1)``; ξ ~ U(−½, ½) (``uniform``) or N(0, 1)/2 (``gaussian``).

    The result is detached, as in the official code. Var(Δξ) = Δ²/12 (uniform) or Δ²/4 (gaussian).
    """
    flat = x.detach()
    step = (flat.max() - flat.min()) / (2**bits - 1)
    if noise == "uniform":
        xi = torch.rand(flat.shape, generator=generator, dtype=flat.dtype).to(flat.device) - 0.5
    elif noise == "gaussian":
        xi = torch.randn(flat.shape, generator=generator, dtype=flat.dtype).to(flat.device) / 2
    else:
        raise ValueError(f"`noise` must be 'gaussian' or 'uniform', got {noise!r}.")
    return flat + step * xi


def noisy_mixture(x: Tensor, bits: Sequence[int], alphas: Tensor, noise: NoiseType = "gaussian",
                  generator: torch.Generator | None = None) -> Tensor:
    """QuantNAS's noisy operand: ``x/(n+1) + Σ_b â_b · sg(x + Δ_b ξ_b)`` with ``â = α/(Σα + 1/(n+1))``."""
    fp_alpha = 1.0 / (len(bits) + 1)
    weights = alphas / (alphas.sum() + fp_alpha)
    out = fp_alpha * x
    for alpha, bit in zip(weights, bits, strict=True):
        out = out + alpha * quant_noise(x, bit, noise, generator)
    return out


class _NoisyWeight(WeightParametrization):
    trainable = (True,)

    def __init__(self, bits: tuple[int, ...], noise: NoiseType) -> None:
        super().__init__()
        self.bits, self.noise = bits, noise
        self.register_buffer("alphas", torch.ones(len(bits)))

    def initial_originals(self, weight: Tensor) -> tuple[Tensor, ...]:
        return (weight.detach().clone(),)

    def forward(self, weight: Tensor) -> Tensor:
        if not self.training:
            return weight
        return noisy_mixture(weight, self.bits, self.alphas.to(weight.dtype), self.noise)


@register("quantization_noise", kind="reparam", seed=28,
          fidelity="official-code",
          verified_by="tests/common_regs/quant/test_quantization_noise.py",
          paper="Shvetsov, Osin, Zaytsev, Koryakovskiy, Buchnev, Trofimov, Burnaev, QuantNAS for super resolution: "
                "searching for efficient quantization-friendly architectures against quantization noise, "
                "IEEE Access 2024, arXiv:2208.14839")
class QuantizationNoise(ParametrizedReparam):
    r"""Add quantization-imitating noise to weights (and optionally activations) of chosen layers during training.

    A cheap stand-in for quantization-aware training: while the model is in training mode each noisy layer sees a
    mixture of its full-precision weight and noisy copies whose noise scale equals a b-bit quantization step.
    The model becomes robust to later quantization. In eval mode the layer is the plain full-precision layer.

    Reference:
        Shvetsov et al., "QuantNAS for super resolution: searching for efficient quantization-friendly architectures
        against quantization noise", IEEE Access 2024, arXiv:2208.14839 (official ``sr_models/quant_conv_lsq.py``:
        ``quant_noise`` and ``QuaNoiseConv2d``).

    Math:
        .. math::
            \tilde W = \frac{W}{n+1} + \sum_{b} \hat\alpha_b\,\mathrm{sg}\big(W + \Delta_b \xi\big),\quad
            \Delta_b = \frac{\max W - \min W}{2^b - 1},\quad
            \hat\alpha = \frac{\alpha}{\sum\alpha + 1/(n+1)}

        ξ ~ N(0, 1)/2 (``gaussian``) or U(−½, ½) (``uniform``); α = 1 (no architecture search here); n = len(bits).
        Activations (inputs of the noisy layers) get the same mixture when ``activations`` is True.

    Args:
        bits: bit-widths whose noise is mixed in. Default (8,) (regkit convention; QuantNAS searches e.g. [4, 8]).
        noise: noise distribution. Default "gaussian" (source: official ``quant_noise`` default, used by the
            ``*_noise.yaml`` configs).
        activations: also add noise to the layer inputs. Default True (source: official ``QuaNoiseConv2d``).
        module_types: module types to make noisy. Default ("linear", "conv2d") (convention).
        include: fnmatch patterns of module names; None = all. Default None.
        exclude: fnmatch patterns to skip. Default None.

    Shape:
        weight (any) → trainable weight of the same shape (the parametrization adds noise only in training mode).

    Returns:
        ``prepare(model)`` returns the model.

    Note:
        Faithful to the official code, including the detached noisy copies: the gradient reaching W is W's
        full-precision share 1/(n+1) (½ for a single bit-width). The architecture-entropy regularizer and ADQ of
        QuantNAS are NAS-specific and not part of this layer option.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 2)); x = torch.randn(3, 4); clean = model(x)
        >>> _ = QuantizationNoise(bits=(2,)).prepare(model)
        >>> _ = model.eval(); torch.equal(model(x), clean)
        True
    """

    identity_at_init: ClassVar[bool] = True
    config_keys: ClassVar[tuple[str, ...]] = ("bits", "noise", "activations", "module_types", "include", "exclude")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@article{shvetsov2024quantnas, title={QuantNAS for super resolution: searching for efficient "
        "quantization-friendly architectures against quantization noise}, author={Shvetsov, Egor and Osin, Dmitry "
        "and Zaytsev, Alexey and Koryakovskiy, Ivan and Buchnev, Valentin and Trofimov, Ilya and Burnaev, Evgeny}, "
        "journal={IEEE Access}, year={2024}}"
    )

    def __init__(self, bits: Sequence[int] = (8,), noise: NoiseType = "gaussian", activations: bool = True, *,
                 module_types: Sequence[str] = ("linear", "conv2d"), include: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None) -> None:
        super().__init__(module_types=module_types, include=include, exclude=exclude, freeze_base=False)
        bits = tuple(bits)
        if not bits or any(isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 16 for b in bits):
            raise ValueError(f"`bits` must be a non-empty sequence of integers in [1, 16], got {bits!r}.")
        if noise not in ("gaussian", "uniform"):
            raise ValueError(f"`noise` must be 'gaussian' or 'uniform', got {noise!r}.")
        self.bits, self.noise, self.activations = bits, noise, bool(activations)
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def make_parametrization(self, name: str, module: nn.Module, weight: Tensor) -> WeightParametrization:
        return _NoisyWeight(self.bits, self.noise)

    def prepare(self, model: nn.Module) -> nn.Module:
        super().prepare(model)
        if self.activations:
            for site in self.sites:
                self._hooks.append(site.module.register_forward_pre_hook(self._noisy_input(site.parametrization)))
        return model

    def _noisy_input(self, param: _NoisyWeight):  # noqa: ANN202 - returns a forward pre-hook
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
            if not module.training or not args:
                return None
            return (noisy_mixture(args[0], self.bits, param.alphas.to(args[0].dtype), self.noise), *args[1:])

        return hook

    def remove_activation_noise(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
