"""Tail Token Drop (One-D-Piece): truncate the tail of a 1-D token sequence at a random length during training."""

from __future__ import annotations

import logging
from typing import ClassVar

from common_regs.registry import register
from common_regs.stochastic.ordered_truncation import OrderedTruncation

logger = logging.getLogger(__name__)

__all__ = ["TailTokenDrop"]


@register(
    "tail_token_drop",
    fidelity="reconstruction",
    verified_by="tests/common_regs/stochastic/test_tail_token_drop.py",
    kind="batch_transform",
    paper="Miwa, Sasaki, Arai, Takahashi, Yamaguchi, One-D-Piece: Image Tokenizer Meets Quality-Controllable "
    "Compression, 2025, arXiv:2501.10064",
    seed=30,
)
class TailTokenDrop(OrderedTruncation):
    r"""Zero the tokens after a random prefix length (per sample) so the decoder learns from any head of the sequence.

    One-D-Piece trains a 1-D tokenizer whose decoder sees only the first k tokens, which concentrates information
    at the head of the sequence and gives variable-length (quality-controllable) codes. Place it between the
    tokenizer's quantizer and its decoder; it is the :class:`OrderedTruncation` primitive on the token axis.

    Reference:
        Miwa, Sasaki, Arai, Takahashi, Yamaguchi, "One-D-Piece: Image Tokenizer Meets Quality-Controllable
        Compression", 2025, arXiv:2501.10064 (mechanism confirmed from the abstract). **Equation unconfirmed**:
        the distribution of the kept length (uniform on {k_min..K} here) was not checked against the paper.

    Math:
        .. math::
            k_b \sim \mathcal U\{k_{min}, \dots, K\},\qquad \tilde t_{b,j} = t_{b,j}\,\mathbb 1[j < k_b]

        (0-based token index j, K tokens); E[k] = (k_min + K)/2.

    Args:
        dim: token axis. Default 1 (tokens of shape (B, K, D)).
        sampler: kept-length distribution. Default "uniform" (regkit choice; unconfirmed).
        sigma: σ of the half-Gaussian sampler. Default 100.0 (only used with that sampler).
        k_min: smallest kept length. Default 1 (source: One-D-Piece decodes from 1 to 256 tokens).
        p: geometric sampler parameter. Default 0.1 (only used with that sampler).
        per_sample: one k per sequence. Default True (regkit choice).

    Shape:
        tokens (B, K, D) or (B, K) → same shape.

    Returns:
        the truncated tokens; ``last_kept`` (B,) holds the kept lengths.

    Note:
        Dropped tokens are zeroed, not removed: give the decoder a mask (``prefix_mask(K, last_kept)``) if zeros
        are valid token embeddings. Identity in eval mode.

    Example:
        >>> import torch
        >>> drop = TailTokenDrop(k_min=2)
        >>> out = drop(torch.ones(5, 6, 3))
        >>> bool((out[:, :2] == 1).all()), tuple(drop.last_kept.shape)
        (True, (5,))
    """

    config_keys: ClassVar[tuple[str, ...]] = ("dim", "sampler", "sigma", "k_min", "p", "per_sample")
    citation: ClassVar[str] = (
        "@article{miwa2025onedpiece, title={One-D-Piece: Image Tokenizer Meets Quality-Controllable Compression}, "
        "author={Miwa, Keita and Sasaki, Kento and Arai, Hidehisa and Takahashi, Tsubasa and Yamaguchi, Yu}, "
        "journal={arXiv:2501.10064}, year={2025}}"
    )

    def __init__(
        self,
        dim: int = 1,
        sampler: str = "uniform",
        sigma: float = 100.0,
        k_min: int = 1,
        p: float = 0.1,
        per_sample: bool = True,
    ) -> None:
        super().__init__(dim=dim, sampler=sampler, sigma=sigma, k_min=k_min, p=p, per_sample=per_sample)  # type: ignore[arg-type]
