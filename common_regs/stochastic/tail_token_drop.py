"""Tail Token Drop (One-D-Piece): cut the tail of a 1-D token sequence at a random length during training."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import torch
from torch import Tensor

from common_regs.registry import register
from common_regs.stochastic.ordered_truncation import OrderedTruncation, Sampler

logger = logging.getLogger(__name__)

__all__ = ["TailTokenDrop"]

Mode = Literal["slice", "mask"]
_MODES = ("slice", "mask")


@register(
    "tail_token_drop",
    fidelity="official-code",
    verified_by="tests/common_regs/stochastic/test_tail_token_drop.py",
    kind="batch_transform",
    paper="Miwa, Sasaki, Arai, Takahashi, Yamaguchi, One-D-Piece: Image Tokenizer Meets Quality-Controllable "
    "Compression, 2025, arXiv:2501.10064",
    seed=30,
)
class TailTokenDrop(OrderedTruncation):
    r"""Keep only the first k tokens (k random, one per batch) so the decoder learns from any head of the sequence.

    One-D-Piece trains a 1-D tokenizer whose decoder sees only the first k tokens, which concentrates information
    at the head of the sequence and gives variable-length (quality-controllable) codes. Place it between the
    tokenizer's quantizer and its decoder; it is the :class:`OrderedTruncation` primitive on the token axis.

    Reference:
        Miwa, Sasaki, Arai, Takahashi, Yamaguchi, "One-D-Piece: Image Tokenizer Meets Quality-Controllable
        Compression", 2025, arXiv:2501.10064 (Tail Token Drop). Checked against the official code
        (``turingmotors/One-D-Piece``, ``modeling/one_d_piece.py``: ``OneDPiece.apply_tail_token_drop``, called by
        ``decode`` in training only): one ``end = torch.randint(1, K + 1, (1,))`` per batch, i.e. k ~ U{1..K}
        shared by the whole batch, and the tokens after it are removed (``x[..., :end]``); the TiTok decoder
        (``modeling/modules/blocks.py`` ``TiTokDecoder``) then adds ``latent_token_positional_embedding[:k]``
        to the k tokens it got.
        regkit additions, off by default: ``mode="mask"`` (zero the tail, same shape) for decoders that need a
        fixed length, ``per_sample=True`` (one k per row, ``mask`` mode only), ``k_min`` > 1 and the other
        samplers of :class:`OrderedTruncation`.

    Math:
        .. math::
            k \sim \mathcal U\{k_{min}, \dots, K\},\qquad \tilde t = (t_{\cdot,0}, \dots, t_{\cdot,k-1})

        (``slice``: K → k tokens; ``mask``: t̃_j = t_j 1[j < k], 0-based j); E[k] = (k_min + K)/2.

    Args:
        dim: token axis. Default 1 (tokens of shape (B, K, D)); the official code cuts the last axis of
            (B, C, 1, K), i.e. ``dim=-1``.
        sampler: kept-length distribution. Default "uniform" (source: official ``torch.randint(1, K + 1)``).
        sigma: σ of the half-Gaussian sampler. Default 100.0 (only used with that sampler).
        k_min: smallest kept length. Default 1 (source: official ``torch.randint`` low bound 1).
        p: geometric sampler parameter. Default 0.1 (only used with that sampler).
        per_sample: one k per sequence. Default False (source: official draws one k per batch).
        mode: ``"slice"`` removes the tail, ``"mask"`` zeroes it. Default "slice" (source: official ``x[..., :end]``).

    Shape:
        tokens (B, K, D) or (B, K) → (B, k, D) / (B, k) with ``slice``, the same shape with ``mask``.

    Returns:
        the truncated tokens; ``last_kept`` holds k (a scalar tensor, or (B,) with ``per_sample``).

    Note:
        Identity in eval mode (the official code decodes all K tokens, or a requested length, at inference).
        In ``mask`` mode give the decoder a mask (``prefix_mask(K, last_kept)``) if zeros are valid embeddings.

    Example:
        >>> import torch
        >>> drop = TailTokenDrop()
        >>> out = drop(torch.ones(5, 6, 3), generator=torch.Generator().manual_seed(0))
        >>> out.shape[1] == int(drop.last_kept), tuple(out.shape[::2])
        (True, (5, 3))
    """

    config_keys: ClassVar[tuple[str, ...]] = ("dim", "sampler", "sigma", "k_min", "p", "per_sample", "mode")
    citation: ClassVar[str] = (
        "@article{miwa2025onedpiece, title={One-D-Piece: Image Tokenizer Meets Quality-Controllable Compression}, "
        "author={Miwa, Keita and Sasaki, Kento and Arai, Hidehisa and Takahashi, Tsubasa and Yamaguchi, Yu}, "
        "journal={arXiv:2501.10064}, year={2025}}"
    )

    def __init__(
        self,
        dim: int = 1,
        sampler: Sampler = "uniform",
        sigma: float = 100.0,
        k_min: int = 1,
        p: float = 0.1,
        per_sample: bool = False,
        mode: Mode = "slice",
    ) -> None:
        super().__init__(dim=dim, sampler=sampler, sigma=sigma, k_min=k_min, p=p, per_sample=per_sample)
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}, got {mode!r}.")
        if mode == "slice" and per_sample:
            raise ValueError("`per_sample=True` needs `mode='mask'`: rows cut at different lengths are ragged.")
        self.mode = mode

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.mode == "mask" or not self.training:
            return super().forward(x, generator)
        dim = self.dim % x.ndim
        if dim == 0:
            raise ValueError("`dim` must be the token axis, not the batch axis (dim 0).")
        self.last_kept = self.sample(x.shape[dim], 1, generator)[0].to(x.device)
        return x.narrow(dim, 0, int(self.last_kept))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}"
