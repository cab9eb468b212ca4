"""Compressed features for noisy labels: nested dropout (ordered feature truncation) before the linear head."""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from torch import Tensor

from common_regs.registry import register
from common_regs.stochastic.ordered_truncation import OrderedTruncation

logger = logging.getLogger(__name__)

__all__ = ["NestedDropout", "best_prefix"]


@torch.no_grad()
def best_prefix(
    features: Tensor, labels: Tensor, head_weight: Tensor, head_bias: Tensor | None = None
) -> tuple[int, list[float]]:
    """The prefix length K maximising accuracy of ``head(features[:, :K])`` (the paper's validation-time choice).

    Returns (best K, accuracy for every K = 1..D).
    """
    accuracies = []
    for k in range(1, features.shape[1] + 1):
        logits = features[:, :k] @ head_weight[:, :k].T
        if head_bias is not None:
            logits = logits + head_bias
        accuracies.append(float((logits.argmax(1) == labels).float().mean()))
    best = max(range(len(accuracies)), key=accuracies.__getitem__) + 1
    return best, accuracies


@register(
    "nested_dropout",
    fidelity="official-code",
    verified_by="tests/common_regs/robust/test_nested_dropout.py",
    kind="batch_transform",
    paper="Chen, Hu, Shen, Ai, Suykens, Compressing Features for Learning with Noisy Labels, IEEE TNNLS 2022, "
    "arXiv:2206.13140",
    seed=3,
)
class NestedDropout(OrderedTruncation):
    r"""Nested dropout on the penultimate features: a random half-Gaussian prefix is kept, the tail zeroed.

    Compressing the features the head sees limits how much the network can memorise noisy labels; the ordered
    features can be cut at the validation-best K (:func:`best_prefix`). Place the module between the feature
    extractor and the linear head; combine with :class:`~common_regs.robust.co_teaching.CoTeaching`
    ("Nested Co-teaching"). Also gives truncatable (Matryoshka-like) tower embeddings.

    Reference:
        Chen, Hu, Shen, Ai, Suykens, "Compressing Features for Learning with Noisy Labels", IEEE TNNLS 2022,
        arXiv:2206.13140. Per the regkit reference notes on the authors' code (``yingyichen-cyy/Nested-Co-teaching``,
        ``nested/train_resnet.py``: one k per step, p(k) ∝ exp(-((k-μ)/σ)²), μ = 0); not re-verified here.

    Math:
        .. math::
            k \sim p(k) \propto e^{-(k/\sigma)^2},\ k\in\{1..D\},\qquad
            z' = z \odot [\underbrace{1,\dots,1}_{k},0,\dots,0],\qquad L = CE(W z', y)

        with σ ↔ ``sigma``; P(dim i kept) = P(k > i) is non-increasing and equals 1 for the first dim.

    Args:
        dim: feature axis. Default -1.
        sampler: prefix distribution. Default "half_gaussian" (source: authors' code).
        sigma: σ. Default 100.0 (source: authors' Clothing1M script ``--nested 100`` for 512/2048-dim features).
        k_min: smallest prefix of the uniform sampler. Default 1.
        p: geometric sampler parameter. Default 0.1.
        per_sample: one k per row instead of per batch. Default False (source: authors' code).

    Shape:
        features (B, D) → (B, D).

    Returns:
        the truncated features; ``last_kept`` holds k.

    Note:
        Identity in eval mode; at test time truncate to the validation-best K yourself (``features[:, :K]``).
        σ → ∞ gives a uniform k.

    Example:
        >>> import torch
        >>> layer = NestedDropout(sigma=2.0)
        >>> bool(layer.keep_probability(8)[0] == 1.0), bool((layer.keep_probability(8).diff() <= 0).all())
        (True, True)
    """

    config_keys: ClassVar[tuple[str, ...]] = ("dim", "sampler", "sigma", "k_min", "p", "per_sample")
    citation: ClassVar[str] = (
        "@article{chen2022compressing, title={Compressing Features for Learning with Noisy Labels}, author={Chen, "
        "Yingyi and Hu, Shell Xu and Shen, Xi and Ai, Chunrong and Suykens, Johan A. K.}, journal={IEEE TNNLS}, "
        "year={2022}}"
    )

    def __init__(
        self,
        dim: int = -1,
        sampler: str = "half_gaussian",
        sigma: float = 100.0,
        k_min: int = 1,
        p: float = 0.1,
        per_sample: bool = False,
    ) -> None:
        super().__init__(dim=dim, sampler=sampler, sigma=sigma, k_min=k_min, p=p, per_sample=per_sample)  # type: ignore[arg-type]
