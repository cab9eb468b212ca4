"""INP-Former losses: INP coherence and soft-mining reconstruction (hard tokens weighted)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["IntrinsicNormalPrototypes", "inp_coherence_loss", "scale_gradient", "soft_mining_loss"]


def scale_gradient(x: Tensor, factor: Tensor) -> Tensor:
    """Identity in the forward pass; backward multiplies the gradient by ``factor`` (broadcast)."""
    factor = factor.detach().to(x)
    return factor * x + (1.0 - factor) * x.detach()


def inp_coherence_loss(tokens: Tensor, prototypes: Tensor) -> Tensor:
    """``mean_{b,n} min_m (1 - cos(f_bn, p_bm))`` for tokens (B, N, D) and per-image prototypes (B, M, D)."""
    distance = 1.0 - F.cosine_similarity(tokens.unsqueeze(2), prototypes.unsqueeze(1), dim=-1)
    return distance.min(dim=2).values.mean()


def soft_mining_loss(encoder: Tensor, decoder: Tensor, gamma: float = 3.0) -> Tensor:
    """Global cosine reconstruction loss whose per-token gradient is scaled by ``(d_n / mean d)^γ``.

    ``encoder`` / ``decoder`` are (B, N, D) token features (or (B, D, H, W) maps, channel axis 1); the value is
    ``mean_b (1 - cos(flat(e_b), flat(d_b)))`` with the encoder side detached.
    """
    enc = encoder.detach()
    channel = -1 if decoder.ndim == 3 else 1
    with torch.no_grad():
        distance = (1.0 - F.cosine_similarity(enc, decoder, dim=channel)).unsqueeze(channel)
        factor = (distance / distance.mean().clamp_min(1e-12)).pow(gamma)
    weighted = scale_gradient(decoder, factor)
    return (1.0 - F.cosine_similarity(enc.flatten(1), weighted.flatten(1), dim=1)).mean()


@register(
    "intrinsic_normal_prototypes",
    fidelity="official-code",
    verified_by="tests/common_regs/representation/test_intrinsic_normal_prototypes.py",
    kind="loss",
    paper="Luo et al., Exploring Intrinsic Normal Prototypes within a Single Image for Universal "
    "Anomaly Detection (INP-Former), CVPR 2025, arXiv:2503.02424",
    seed=20,
)
class IntrinsicNormalPrototypes(ConfigFromKeys):
    r"""The two INP-Former training losses: soft-mining reconstruction + weighted INP coherence.

    INP-Former reconstructs encoder tokens from a few "intrinsic normal prototypes" extracted from the same image;
    anomalies reconstruct badly. The coherence loss keeps every token close to some prototype (so the prototypes
    describe normal content); the soft-mining loss reconstructs tokens with extra gradient on the hard ones.
    The model's forward returns encoder tokens, decoder tokens, the tokens the INPs summarise, and the INPs.

    Reference:
        Luo et al., "Exploring Intrinsic Normal Prototypes within a Single Image for Universal Anomaly Detection",
        CVPR 2025, arXiv:2503.02424. Soft mining checked against ``global_cosine_hm_adaptive`` (gradient hook with
        factor ``(d / mean d)^y``, y = 3; value = mean global cosine distance) and coherence against
        ``gather_loss`` (mean of the min cosine distance) in public copies of the official code. The coherence
        weight 0.2 is seen in a public derivative, **unconfirmed** for the official training script.

    Math:
        .. math::
            L_{coh} = \frac{1}{BN}\sum_{b,n}\min_m\big(1 - \cos(f_{bn}, p_{bm})\big),\quad
            L_{sm} = \frac1B\sum_b\big(1 - \cos(\mathrm{vec}(e_b), \mathrm{vec}(\hat e_b))\big),\quad
            \frac{\partial L_{sm}}{\partial \hat e_{bn}} \leftarrow
            \Big(\frac{d_{bn}}{\bar d}\Big)^{\gamma}\frac{\partial L_{sm}}{\partial \hat e_{bn}}\\
            L = L_{sm} + w\,L_{coh}

        d_bn = 1 − cos(e_bn, ê_bn) per token, \bar d its mean over the batch, γ ↔ ``gamma``, w ↔
        ``coherence_weight``.

    Args:
        gamma: γ of the soft-mining gradient factor. Default 3.0 (source: official ``y=3``).
        coherence_weight: w. Default 0.2 (unconfirmed; see Reference).

    Shape:
        ``ctx.outputs`` = {"encoder": (B, N, D), "decoder": (B, N, D), "tokens": (B, N, D), "prototypes": (B, M, D)}.

    Returns:
        scalar L; ``last_components`` holds both terms.

    Note:
        γ = 0 is the plain global cosine loss (same value and gradient). L_coh = 0 when every token equals a
        prototype (up to scale).

    Example:
        >>> import torch
        >>> p = torch.randn(1, 2, 4)
        >>> float(inp_coherence_loss(p[:, [0, 1, 1, 0]] * 3.0, p)) < 1e-6
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("gamma", "coherence_weight")
    citation: ClassVar[str] = (
        "@inproceedings{luo2025inpformer, title={Exploring Intrinsic Normal Prototypes within a Single Image for "
        "Universal Anomaly Detection}, author={Luo, Wei and others}, booktitle={CVPR}, year={2025}}"
    )

    def __init__(self, gamma: float = 3.0, coherence_weight: float = 0.2) -> None:
        if gamma < 0 or coherence_weight < 0:
            raise ValueError(f"`gamma` and `coherence_weight` must be >= 0, got {gamma} and {coherence_weight}.")
        self.gamma, self.coherence_weight = float(gamma), float(coherence_weight)
        self.last_components: dict[str, float] = {}

    def __call__(self, ctx: TrainContext) -> Tensor:
        out = ctx.outputs
        keys = ("encoder", "decoder", "tokens", "prototypes")
        if not (isinstance(out, Mapping) and all(k in out for k in keys)):
            raise ValueError(f"`IntrinsicNormalPrototypes` needs `ctx.outputs` with keys {keys}.")
        mining = soft_mining_loss(out["encoder"], out["decoder"], self.gamma)
        coherence = inp_coherence_loss(out["tokens"], out["prototypes"])
        self.last_components = {"soft_mining": float(mining.detach()), "coherence": float(coherence.detach())}
        return mining + self.coherence_weight * coherence
