"""Generalized-Gaussian priors: GG initialization, BackSlash rate-constrained steps, DeepShape remap and RF8."""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = [
    "GeneralizedGaussianPrior",
    "backslash_",
    "deepshape_",
    "estimate_gg_shape",
    "generalized_gaussian_",
    "gg_init_",
    "gg_scale_for_std",
    "rf8_",
]

# Official backslash.py tabulates ν over [0.1, 3.0] in steps of 0.01 with ρ(ν) = Γ(1/ν)Γ(3/ν)/Γ(2/ν)², the value
# of E[w²]/E[|w|]² for a GG of shape ν.
_SHAPES = [round(0.1 + 0.01 * i, 2) for i in range(291)]
_RHOS = [math.exp(math.lgamma(1 / s) + math.lgamma(3 / s) - 2 * math.lgamma(2 / s)) for s in _SHAPES]


def gg_scale_for_std(beta: float, std: float) -> float:
    """α such that a GG(β, α) variable has standard deviation ``std``: ``Var = α² Γ(3/β) / Γ(1/β)``."""
    return std * math.exp(0.5 * (math.lgamma(1 / beta) - math.lgamma(3 / beta)))


@torch.no_grad()
def generalized_gaussian_(tensor: Tensor, beta: float, std: float, generator: torch.Generator | None = None
                          ) -> Tensor:
    """Fill ``tensor`` with GG(β, α) samples of standard deviation ``std``: ``|w| = α G^{1/β}``, G ~ Gamma(1/β, 1)."""
    if beta <= 0 or std <= 0:
        raise ValueError(f"`beta` and `std` must be > 0, got {beta}, {std}.")
    from scipy.special import gammaincinv  # here: scipy.special takes ~0.2 s to import, and every run with hooks
    # imports every method module (common_regs.registry.load_all)

    alpha = gg_scale_for_std(beta, std)
    u = torch.rand(tensor.shape, generator=generator, dtype=torch.float64).clamp(1e-300, 1 - 1e-16)
    sign = torch.where(torch.rand(tensor.shape, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
    magnitude = torch.from_numpy(gammaincinv(1.0 / beta, u.numpy()))  # G ~ Gamma(1/β, 1) by inverse CDF
    tensor.copy_((sign * alpha * magnitude.pow(1.0 / beta)).to(tensor.dtype))
    return tensor


@torch.no_grad()
def gg_init_(model: nn.Module, beta: float = 2.0, xi: float = 2.0, generator: torch.Generator | None = None) -> None:
    """Official ``gg_init``: each linear weight ~ GG(β, α), ``α = sqrt(ξ/n · Γ(1/β)/Γ(3/β))``, n = ``shape[0]``.

    So ``Var(w) = ξ / n`` (ξ = 2 for ReLU, 1 for sigmoid / none, 2/(1 + k²) for LeakyReLU); biases are zeroed.
    """
    if beta <= 0 or xi <= 0:
        raise ValueError(f"`beta` and `xi` must be > 0, got {beta}, {xi}.")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            generalized_gaussian_(module.weight, beta, math.sqrt(xi / module.weight.shape[0]), generator)
            if module.bias is not None:
                module.bias.zero_()


def estimate_gg_shape(params: Sequence[Tensor]) -> float:
    """Official shape estimate: the tabulated ν whose ρ(ν) is nearest ``ρ̂ = n Σw² / (Σ|w|)²`` over all ``params``."""
    n = sum(p.numel() for p in params)
    square = sum(float(p.detach().double().pow(2).sum()) for p in params)
    absolute = sum(float(p.detach().double().abs().sum()) for p in params)
    if n == 0 or absolute == 0:
        raise ValueError("`params` must hold at least one non-zero value to estimate a GG shape.")
    rho = n * square / absolute**2
    return _SHAPES[min(range(len(_RHOS)), key=lambda i: abs(rho - _RHOS[i]))]


@torch.no_grad()
def backslash_(params: Sequence[Tensor], rdo: float = 2e3, clip: float = 1.0) -> float:
    """Official ``backslash`` step, in place: ``w ← w − (rdo·ν/N) sgn(w) (|w| + clip)^{ν−1}``; returns ν."""
    shape = estimate_gg_shape(params)
    n = sum(p.numel() for p in params)
    for p in params:
        p.sub_(rdo * shape / n * torch.sign(p) * (p.abs() + clip).pow(shape - 1))
    return shape


@torch.no_grad()
def deepshape_(params: Sequence[Tensor], shape_scale: float = 0.8, std_scale: float = 0.6, adj_minnum: int = 1000,
               bits: int = 13) -> tuple[float, float, float]:
    """Official ``DeepShape.GGD_deepshape``: histogram specification of the weights toward a narrower GG.

    Weights are coded on the grid ``2^-bits``; the central range ``|code − μ| ≤ c_max`` (c_max = the smallest
    positive code seen at most ``adj_minnum`` times) is refitted as GG(μ, ν, α) and its sorted weights are
    re-binned, in order, into counts ``⌊n · p(x)⌋`` of the target GG(ν·shape_scale, α·std_scale) over the codes x;
    weights left over by the floor, and all weights outside the range, keep their coded values. Returns the new
    (μ, ν, α).
    """
    if adj_minnum < 1:
        raise ValueError(f"`adj_minnum` must be >= 1, got {adj_minnum}.")
    flat = torch.cat([p.detach().flatten().double() for p in params])
    step = 2.0**bits
    # The official LinearQuantizer(params, 13) is not published with the Space's index; its use (codes compared with
    # param_max / 2**13, results divided by 2**13) implies integer codes on the grid 2^-13: rounded here.
    codes = torch.round(flat * step).long()
    values, counts = torch.unique(codes, return_counts=True)
    rare = values[(counts <= adj_minnum) & (values > 0)]
    if rare.numel() == 0:
        raise ValueError(f"no positive code occurs at most `adj_minnum`={adj_minnum} times; lower `adj_minnum`.")
    c_max = int(rare.min())
    cut = flat[flat.abs() <= c_max / step]
    shape = estimate_gg_shape([cut])
    std = math.sqrt(float(cut.pow(2).mean()))
    scale = math.sqrt(math.gamma(1 / shape) / math.gamma(3 / shape)) * std * step
    mu = int(float(cut.mean()) * step)  # int() truncates toward zero, as the official code does
    in_range = (codes >= mu - c_max) & (codes <= mu + c_max)
    order = torch.nonzero(in_range).squeeze(1)
    order = order[torch.argsort(codes[order], stable=True)]
    new_shape, new_scale = shape * shape_scale, scale * std_scale
    grid = torch.arange(mu - c_max, mu + c_max + 1, dtype=torch.float64)
    ratio = torch.exp(-((grid - mu).abs() / new_scale).pow(new_shape))
    quota = (order.numel() * ratio / ratio.sum()).long()
    new_codes = codes.clone()
    start = 0
    for code, count in zip(grid.long().tolist(), quota.tolist(), strict=True):
        new_codes[order[start:start + count]] = code
        start += count
    new_flat = new_codes.double() / step
    offset = 0
    for p in params:
        p.copy_(new_flat[offset:offset + p.numel()].reshape(p.shape).to(p.dtype))
        offset += p.numel()
    return mu / step, new_shape, new_scale / step


@torch.no_grad()
def rf8_(params: Sequence[Tensor], n: int = 4) -> None:
    """Official ``rf8``: ``w ≈ s₁2^{e₁} + s₂2^{e₂}`` (two leading powers of two) if ``e₁ − e₂ ≤ n``, else ``s₁2^{e₁}``.

    ``e = round(log₂|w|)`` (nearest power of two, not the floor); the residual is ``w − s₁2^{e₁}``.
    """
    for p in params:
        first = torch.sign(p) * torch.pow(2.0, torch.round(torch.log2(p.abs())))
        rest = p - first
        second = torch.sign(rest) * torch.pow(2.0, torch.round(torch.log2(rest.abs())))
        keep = (torch.round(torch.log2(p.abs())) - torch.round(torch.log2(rest.abs()))) <= n
        p.copy_(first + keep * second)


@register("generalized_gaussian_prior", kind="loss", seed=12,
          fidelity="official-code",
          verified_by="tests/common_regs/generative/test_generalized_gaussian_prior.py",
          paper="It Takes a Good Model to Train a Good Model: Generalized Gaussian Priors for Optimized LLMs, 2025, "
                "arXiv:2506.00486")
class GeneralizedGaussianPrior(ConfigFromKeys):
    r"""Generalized-Gaussian prior on weights: GG init, BackSlash rate-constrained training, DeepShape, RF8.

    Trained LLM weights follow a generalized Gaussian (GG) better than a Gaussian. The framework initializes
    linear layers from a GG, trains with BackSlash (a step down the gradient of a GG-shaped rate term whose shape ν
    is re-estimated from the weights every batch), reshapes trained weights toward a narrower GG (DeepShape) and
    stores them in RF8 (two leading powers of two).

    Reference:
        Wu, Xiong, Wen, Han, "It Takes a Good Model to Train a Good Model: Generalized Gaussian Priors for Optimized
        LLMs", 2025, arXiv:2506.00486. Official code: the paper's project page, Hugging Face Space
        ``shifeng3711/gg_prior`` — ``gg_init.py`` (``gg_init``), ``backslash.py`` (``backslash``), ``deepshape.py``
        (``DeepShape.GGD_deepshape``), ``rf8.py`` (``rf8``); defaults from those signatures and module constants.
        BackSlash itself: Wu, Wen, Han, arXiv:2504.16968.

    Math:
        .. math::
            w\sim GG(\beta, \alpha),\ \alpha = \sqrt{\frac{\xi}{n}\frac{\Gamma(1/\beta)}{\Gamma(3/\beta)}},\qquad
            R = \frac{\mathrm{rdo}}{N}\sum_{w}(|w| + c)^{\hat\nu},\quad
            \hat\nu = \arg\min_{\nu}\Big|\frac{N\sum w^2}{(\sum|w|)^2} -
            \frac{\Gamma(1/\nu)\Gamma(3/\nu)}{\Gamma(2/\nu)^2}\Big|

        ν̂ is held constant in R, so ``∇R`` is exactly the official BackSlash step
        ``(rdo·ν̂/N) sgn(w)(|w| + c)^{ν̂−1}``; c ↔ ``clip``.

    Args:
        beta: GG shape β of the initialization. Default 2.0 (official ``gg_init`` default).
        xi: activation coefficient ξ of the initialization (Var = ξ/n). Default 2.0 (official default, ReLU).
        rdo: BackSlash rate-distortion multiplier. Default 2e3 (official ``backslash.py``).
        clip: c, the offset inside the rate term. Default 1.0 (official ``backslash.py``).
        include: fnmatch patterns of parameter names under the rate term. Default ("*",) (official: all
            parameters).
        weight: coefficient used by ``RegHooks``. Default 1.0: with plain SGD at learning rate η one optimizer
            step applies η × the official step; :meth:`step` applies the official step itself.

    Shape:
        Any parameter shapes.

    Returns:
        Scalar rate term R over the selected parameters (ν̂ estimated on them).

    Note:
        Official schedule: BackSlash steps after every batch for a few epochs, then a few epochs of plain
        fine-tuning; DeepShape after training, followed by a few recovery epochs; RF8 before inference. The
        official ``gg_init`` loop also resets other 1-D ``weight`` parameters to 1 and biases to 0 (PyTorch's
        defaults for norm layers); :func:`gg_init_` touches only linear layers, as the Space's README states.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = nn.Linear(8, 400)
        >>> GeneralizedGaussianPrior(beta=1.5).initialize(layer, torch.Generator().manual_seed(0))
        >>> round(float(layer.weight.detach().std()) / (2 / 400) ** 0.5, 1)
        1.0
    """

    config_keys: ClassVar[tuple[str, ...]] = ("beta", "xi", "rdo", "clip", "include", "weight")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@article{wu2025gg, title={It Takes a Good Model to Train a Good Model: Generalized Gaussian Priors for "
        "Optimized LLMs}, author={Wu, Jun and Xiong, Yirong and Wen, Jiangtao and Han, Yuxing}, "
        "journal={arXiv:2506.00486}, year={2025}}"
    )

    def __init__(self, beta: float = 2.0, xi: float = 2.0, rdo: float = 2e3, clip: float = 1.0,
                 include: Sequence[str] = ("*",), weight: float = 1.0) -> None:
        if beta <= 0 or xi <= 0:
            raise ValueError(f"`beta` and `xi` must be > 0, got {beta}, {xi}.")
        if rdo < 0 or clip < 0:
            raise ValueError(f"`rdo` and `clip` must be >= 0, got {rdo}, {clip}.")
        self.beta, self.xi, self.rdo, self.clip = float(beta), float(xi), float(rdo), float(clip)
        self.include, self.weight = tuple(include), float(weight)

    def _params(self, model: nn.Module) -> list[Tensor]:
        params = [p for n, p in model.named_parameters() if any(fnmatch.fnmatch(n, pat) for pat in self.include)]
        if not params:
            raise ValueError(f"`include` patterns {self.include} match no parameter of the model.")
        return params

    def penalty(self, params: Sequence[Tensor]) -> Tensor:
        shape = estimate_gg_shape(params)
        n = sum(p.numel() for p in params)
        total = sum((p.abs() + self.clip).pow(shape).sum() for p in params)
        return self.rdo / n * total  # type: ignore[return-value]

    def initialize(self, model: nn.Module, generator: torch.Generator | None = None) -> None:
        """GG initialization of every linear layer (official ``gg_init``)."""
        gg_init_(model, self.beta, self.xi, generator)

    def step(self, model: nn.Module) -> float:
        """One official BackSlash step on the selected parameters (call after each optimizer step); returns ν̂."""
        return backslash_(self._params(model), self.rdo, self.clip)

    def __call__(self, ctx: TrainContext) -> Tensor:
        return self.penalty(self._params(ctx.model))
