"""Ordered truncation: keep a random *prefix* of an axis (nested dropout, ordered dropout, tail token drop)."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["OrderedTruncation", "prefix_mask", "truncation_probabilities"]

Sampler = Literal["half_gaussian", "uniform", "geometric"]
_SAMPLERS = ("half_gaussian", "uniform", "geometric")


def truncation_probabilities(
    size: int, sampler: Sampler, *, sigma: float = 100.0, k_min: int = 1, p: float = 0.1
) -> Tensor:
    """p(k) for the kept length k = 1..size (float64, sums to 1).

    * ``half_gaussian``: p(k) ∝ exp(-(k/σ)²) (nested dropout of Chen et al. 2022, μ = 0);
    * ``uniform``: k ~ U{k_min, …, size};
    * ``geometric``: p(k) ∝ (1-p)^(k-1) p, truncated at ``size`` (nested dropout of Rippel et al. 2014).
    """
    if size < 1:
        raise ValueError(f"`size` must be >= 1, got {size}.")
    k = torch.arange(1, size + 1, dtype=torch.float64)
    if sampler == "half_gaussian":
        if sigma <= 0:
            raise ValueError(f"`sigma` must be > 0, got {sigma}.")
        weights = torch.exp(-((k / sigma) ** 2))
    elif sampler == "uniform":
        if not 1 <= k_min <= size:
            raise ValueError(f"`k_min` must be in [1, {size}], got {k_min}.")
        weights = (k >= k_min).double()
    elif sampler == "geometric":
        if not 0 < p <= 1:
            raise ValueError(f"`p` must be in (0, 1], got {p}.")
        weights = (1 - p) ** (k - 1) * p
    else:
        raise ValueError(f"`sampler` must be one of {_SAMPLERS}, got {sampler!r}.")
    return weights / weights.sum()


def prefix_mask(size: int, kept: Tensor) -> Tensor:
    """0/1 mask of shape ``kept.shape + (size,)`` with ones at positions ``< kept``."""
    return (torch.arange(size, device=kept.device) < kept.unsqueeze(-1)).float()


@register(
    "ordered_truncation",
    fidelity="paper-equation",
    verified_by="tests/common_regs/stochastic/test_ordered_truncation.py",
    kind="batch_transform",
    paper="Rippel, Gelbart, Adams, Learning Ordered Representations with Nested Dropout, ICML 2014, arXiv:1402.0915",
)
class OrderedTruncation(ConfigFromKeys, nn.Module):
    r"""Zero everything after a random prefix length k along one axis; identity in eval mode.

    Training with random prefixes orders information: leading coordinates (features, ranks, tokens) carry the
    most, so the representation can be truncated at serving time (32/64/128-dim tower embeddings, fewer tokens).
    The shared primitive of nested dropout (:class:`~common_regs.robust.nested_dropout.NestedDropout`) and tail
    token drop (:class:`~common_regs.stochastic.tail_token_drop.TailTokenDrop`).

    Reference:
        Rippel, Gelbart, Adams, "Learning Ordered Representations with Nested Dropout", ICML 2014,
        arXiv:1402.0915 (geometric prefix distribution). Half-Gaussian sampler: Chen, Shen, Hu, Suykens,
        "Compressing Features for Learning with Noisy Labels", TNNLS 2022, arXiv:2206.13140 (per the regkit
        reference notes on the authors' code).

    Math:
        .. math::
            k \sim p(k),\ k\in\{1..D\},\qquad
            \tilde x_{\dots,i,\dots} = x_{\dots,i,\dots}\,\mathbb 1[i < k]
            \ (0\text{-based } i),\qquad P(\text{coordinate } i \text{ kept}) = \sum_{k > i} p(k)

        with p given by :func:`truncation_probabilities`; no rescaling is applied.

    Args:
        dim: the truncated axis. Default -1 (features last).
        sampler: ``"half_gaussian"``, ``"uniform"`` or ``"geometric"``. Default "half_gaussian".
        sigma: σ of the half-Gaussian. Default 100.0 (source: Chen et al. code, ``--nested 100``).
        k_min: smallest kept length of the uniform sampler. Default 1 (convention).
        p: success probability of the geometric sampler. Default 0.1 (convention).
        per_sample: one k per batch row (True) or one k for the whole batch (False). Default False (source:
            Chen et al. code samples one k per step).

    Shape:
        input (B, …, D, …) → same shape; the batch axis is 0.

    Returns:
        the truncated tensor; ``last_kept`` holds the sampled k (scalar or (B,)).

    Note:
        The first coordinate is always kept (k ≥ 1).

    Example:
        >>> import torch
        >>> layer = OrderedTruncation(sampler="uniform", k_min=2)
        >>> out = layer(torch.ones(3, 4))
        >>> bool((out[:, :2] == 1).all()), bool(((out == 0) | (out == 1)).all())
        (True, True)
    """

    config_keys: ClassVar[tuple[str, ...]] = ("dim", "sampler", "sigma", "k_min", "p", "per_sample")
    citation: ClassVar[str] = (
        "@inproceedings{rippel2014nested, title={Learning Ordered Representations with Nested Dropout}, "
        "author={Rippel, Oren and Gelbart, Michael and Adams, Ryan}, booktitle={ICML}, year={2014}}"
    )

    def __init__(
        self,
        dim: int = -1,
        sampler: Sampler = "half_gaussian",
        sigma: float = 100.0,
        k_min: int = 1,
        p: float = 0.1,
        per_sample: bool = False,
    ) -> None:
        super().__init__()
        if sampler not in _SAMPLERS:
            raise ValueError(f"`sampler` must be one of {_SAMPLERS}, got {sampler!r}.")
        truncation_probabilities(max(k_min, 1), sampler, sigma=sigma, k_min=k_min, p=p)  # validates the numbers
        self.dim, self.sampler, self.sigma, self.k_min, self.p = dim, sampler, float(sigma), int(k_min), float(p)
        self.per_sample = bool(per_sample)
        self.last_kept: Tensor | None = None

    def probabilities(self, size: int) -> Tensor:
        return truncation_probabilities(size, self.sampler, sigma=self.sigma, k_min=min(self.k_min, size), p=self.p)

    def keep_probability(self, size: int) -> Tensor:
        """P(coordinate i kept) for i = 0..size-1 (non-increasing, first entry 1)."""
        probs = self.probabilities(size)
        return torch.cat([probs.new_ones(1), (1.0 - probs.cumsum(0)[:-1]).clamp_min(0.0)])

    def sample(self, size: int, batch: int = 1, generator: torch.Generator | None = None) -> Tensor:
        draws = batch if self.per_sample else 1
        return torch.multinomial(self.probabilities(size).float(), draws, replacement=True, generator=generator) + 1

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training:
            return x
        dim = self.dim % x.ndim
        size = x.shape[dim]
        kept = self.sample(size, x.shape[0], generator).to(x.device)
        self.last_kept = kept if self.per_sample else kept[0]
        mask = prefix_mask(size, kept)  # (B or 1, size)
        shape = [1] * x.ndim
        shape[dim] = size
        if self.per_sample:
            if dim == 0:
                raise ValueError("`per_sample` truncation cannot act on the batch axis (dim 0).")
            shape[0] = x.shape[0]
        return x * mask.reshape(shape).to(x.dtype)

    def expected_kept(self, size: int) -> float:
        return float((self.probabilities(size) * torch.arange(1, size + 1, dtype=torch.float64)).sum())

    def extra_repr(self) -> str:
        return f"dim={self.dim}, sampler={self.sampler!r}, per_sample={self.per_sample}"
