"""T-JEPA: augmentation-free tabular SSL (predict target-feature latents from context features)."""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["TJEPA", "RegularizationTokens", "ema_momentum", "ema_update", "feature_masks", "jepa_loss"]


def _mask_bounds(num_features: int, low: float, high: float, name: str) -> tuple[int, int]:
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"`min_{name}_share` <= `max_{name}_share` must lie in (0, 1], got {low} and {high}.")
    lowest, highest = round(num_features * low), round(num_features * high)
    if lowest < 1:
        raise ValueError(
            f"`min_{name}_share`={low} keeps round({num_features}·{low}) = 0 features; raise it or add features."
        )
    return lowest, highest


def feature_masks(
    num_features: int,
    batch_size: int = 1,
    *,
    min_context_share: float = 0.2,
    max_context_share: float = 0.4,
    min_target_share: float = 0.2,
    max_target_share: float = 0.4,
    num_preds: int = 4,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Context indices (B, n_c) and ``num_preds`` target index sets (P, B, n_t) of T-JEPA's mask collator.

    As the official ``MaskCollator`` (``src/mask.py``): per batch, ``n = n_min + round((n_max − n_min)·u)`` with
    ``u ~ U[0, 1)`` and ``n_min/max = round(D·share)`` for context and target, both redrawn until
    ``n_c + n_t ≤ D``; per row, the context is the first ``n_c`` of a random permutation and each of the
    ``num_preds`` targets the first ``n_t`` of a fresh shuffle of the remaining features (targets are disjoint from
    the context, not from each other). Indices are in drawing order.
    """
    if num_features < 2:
        raise ValueError(f"T-JEPA needs >= 2 features to split into context and target, got {num_features}.")
    if batch_size < 1 or num_preds < 1:
        raise ValueError(f"`batch_size` and `num_preds` must be >= 1, got {batch_size} and {num_preds}.")
    ctx_low, ctx_high = _mask_bounds(num_features, min_context_share, max_context_share, "context")
    tgt_low, tgt_high = _mask_bounds(num_features, min_target_share, max_target_share, "target")
    if ctx_low + tgt_low > num_features:
        raise ValueError(
            f"the smallest context ({ctx_low}) and target ({tgt_low}) do not fit in {num_features} features; "
            "lower `min_context_share` or `min_target_share`."
        )
    n_context = n_target = num_features + 1
    while n_context + n_target > num_features:
        u_context, u_target = torch.rand(2, generator=generator).tolist()
        n_context = ctx_low + round((ctx_high - ctx_low) * u_context)
        n_target = tgt_low + round((tgt_high - tgt_low) * u_target)
    contexts, targets = [], []
    for _ in range(batch_size):
        order = torch.randperm(num_features, generator=generator)
        contexts.append(order[:n_context])
        rest = order[n_context:]
        targets.append(torch.stack(
            [rest[torch.randperm(rest.numel(), generator=generator)[:n_target]] for _ in range(num_preds)]
        ))
    return torch.stack(contexts), torch.stack(targets, dim=1)


def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Linear EMA momentum ``m_i = start + i·(end − start)/total_steps`` (official ``momentum_scheduler``)."""
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise ValueError(f"`step` must be in [0, `total_steps`], `total_steps` >= 1; got {step} and {total_steps}.")
    return start + step * (end - start) / total_steps


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``ξ ← m ξ + (1 − m) θ`` for every parameter pair (official: parameters only, buffers untouched)."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)


def jepa_loss(predictions: Tensor, targets: Tensor) -> Tensor:
    """``mean((ĥ − sg(h))²)`` over every entry (official ``torch.nn.MSELoss()``)."""
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ.")
    return (predictions - targets.detach()).pow(2).mean()


class RegularizationTokens(nn.Module):
    """Learnable tokens prepended to a token sequence (T-JEPA's [REG] tokens, the official ``n_cls_tokens``).

    Initialised like the official ``Tokenizer`` rows (Kaiming-uniform, a = √5); the official default is one token.
    """

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"`num_tokens` must be >= 1, got {num_tokens}.")
        self.tokens = nn.Parameter(torch.empty(num_tokens, dim))
        nn.init.kaiming_uniform_(self.tokens, a=math.sqrt(5))

    def forward(self, sequence: Tensor) -> Tensor:
        return torch.cat([self.tokens.expand(sequence.shape[0], -1, -1), sequence], dim=1)


@register(
    "t_jepa",
    fidelity="official-code",
    verified_by="tests/common_regs/representation/test_t_jepa.py",
    kind="loss",
    paper="Thimonier, Costa, Popineau, Rimmel, Doan, T-JEPA: Augmentation-Free Self-Supervised Learning for Tabular "
    "Data, ICLR 2025, arXiv:2410.05016",
    seed=44,
)
class TJEPA(ConfigFromKeys):
    r"""Joint-embedding predictive SSL over feature subsets of tabular rows, with an EMA target encoder.

    A context encoder sees a random subset of a row's features (plus regularization tokens); a predictor
    reconstructs, in latent space, the target encoder's representations of disjoint feature subsets. No
    augmentation is needed. Useful to pretrain towers over categorical/numeric item or user features.

    Reference:
        Thimonier, Costa, Popineau, Rimmel, Doan, "T-JEPA: Augmentation-Free Self-Supervised Learning for Tabular
        Data", ICLR 2025, arXiv:2410.05016. Official code github.com/jose-melo/t-jepa: ``src/mask.py``
        (``MaskCollator``), ``src/train.py`` (``Trainer.train``: ``torch.nn.MSELoss()`` between predictor output and
        the masked target-encoder output, then the EMA step), ``run.py`` (``momentum_scheduler``), ``src/encoder.py``
        (``Tokenizer``: ``n_cls_tokens`` learned tokens in front of the feature tokens), defaults from
        ``src/configs.py``.

    Math:
        .. math::
            L = \frac{1}{P B |T| D}\sum_{p=1}^{P}\sum_b\sum_{j\in T_{p,b}}
            \lVert g_\phi(f_\theta(x_{b,C_b}), j) - \mathrm{sg}\,f_\xi(x_b)_j\rVert^2,\quad
            \xi \leftarrow m_i\,\xi + (1-m_i)\,\theta,\quad m_i = m_0 + i\,\frac{m_1 - m_0}{N}

        C_b, T_{p,b} from :func:`feature_masks` (P = ``num_preds`` targets per row, disjoint from C_b), D the
        latent width, N the total number of steps; ``ctx.outputs`` holds predictions ĥ and targets h of equal
        shape, e.g. (P·B, |T|, D) as the official trainer stacks them.

    Args:
        min_context_share: smallest context share of the features. Default 0.2 (source: official ``configs.py``).
        max_context_share: largest context share. Default 0.4 (source: official ``configs.py``).
        min_target_share: smallest target share. Default 0.2 (source: official ``configs.py``).
        max_target_share: largest target share. Default 0.4 (source: official ``configs.py``).
        num_preds: target subsets predicted per context. Default 4 (source: official ``configs.py``).
        momentum_start: EMA momentum m_0 at step 0. Default 0.996 (source: official ``--model_ema_start``).
        momentum_end: EMA momentum m_1 at the last step. Default 1.0 (source: official ``--model_ema_end``).

    Shape:
        predictions / targets: any equal shapes, e.g. (P·B, |T|, D).

    Returns:
        scalar latent prediction loss (mean squared error over every entry).

    Note:
        The architectures (transformer encoders ending in LayerNorm, transformer predictor with mask tokens) are the
        user's. Deviations: one context mask per row (the official ``num_encs`` default); one generator drives all
        draws (the official collator shuffles rows with NumPy's global RNG); official masks index the first D
        positions of the [REG]+feature token sequence, so a [REG] token is drawn like a feature and the last
        features never are — regkit's indices cover exactly the D features, and :class:`RegularizationTokens` is
        prepended wherever the user's encoder puts it. Monitor collapse with :meth:`collapse_score` (mean
        per-dimension std of embeddings; 0 = collapsed).

    Example:
        >>> import torch
        >>> context, targets = feature_masks(10, 2, generator=torch.Generator().manual_seed(0))
        >>> bool((context[0, :, None] != targets[:, 0, None, :]).all()), targets.shape[:2]
        (True, torch.Size([4, 2]))
    """

    config_keys: ClassVar[tuple[str, ...]] = (
        "min_context_share",
        "max_context_share",
        "min_target_share",
        "max_target_share",
        "num_preds",
        "momentum_start",
        "momentum_end",
    )
    citation: ClassVar[str] = (
        "@inproceedings{thimonier2025tjepa, title={T-JEPA: Augmentation-Free Self-Supervised Learning for Tabular "
        "Data}, author={Thimonier, Hugo and Costa, Jos{\\'e} Lucas De Melo and Popineau, Fabrice and Rimmel, Arpad "
        "and Doan, Bich-Li{\\^e}n}, booktitle={ICLR}, year={2025}}"
    )

    def __init__(
        self,
        min_context_share: float = 0.2,
        max_context_share: float = 0.4,
        min_target_share: float = 0.2,
        max_target_share: float = 0.4,
        num_preds: int = 4,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
    ) -> None:
        for kind, low, high in (("context", min_context_share, max_context_share),
                                ("target", min_target_share, max_target_share)):
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(f"`min_{kind}_share` <= `max_{kind}_share` must lie in (0, 1], got {low} and {high}.")
        if num_preds < 1:
            raise ValueError(f"`num_preds` must be >= 1, got {num_preds}.")
        for name, value in (("momentum_start", momentum_start), ("momentum_end", momentum_end)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {value}.")
        self.min_context_share, self.max_context_share = float(min_context_share), float(max_context_share)
        self.min_target_share, self.max_target_share = float(min_target_share), float(max_target_share)
        self.num_preds = int(num_preds)
        self.momentum_start, self.momentum_end = float(momentum_start), float(momentum_end)

    def sample(self, num_features: int, batch_size: int = 1,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Context (B, n_c) and target (P, B, n_t) indices with this instance's shares (see :func:`feature_masks`)."""
        return feature_masks(num_features, batch_size, min_context_share=self.min_context_share,
                             max_context_share=self.max_context_share, min_target_share=self.min_target_share,
                             max_target_share=self.max_target_share, num_preds=self.num_preds, generator=generator)

    def update_target(self, target: nn.Module, online: nn.Module, step: int, total_steps: int) -> float:
        """EMA step with the scheduled momentum m_step; returns the momentum used."""
        momentum = ema_momentum(step, total_steps, self.momentum_start, self.momentum_end)
        ema_update(target, online, momentum)
        return momentum

    @staticmethod
    def collapse_score(embeddings: Tensor) -> float:
        return float(embeddings.reshape(-1, embeddings.shape[-1]).std(0).mean())

    def __call__(self, ctx: TrainContext) -> Tensor:
        outputs = ctx.outputs
        if not (isinstance(outputs, dict) and "predictions" in outputs and "targets" in outputs):
            raise ValueError("`TJEPA` needs `ctx.outputs` = {'predictions': (P·B, T, D), 'targets': (P·B, T, D)}.")
        return jepa_loss(outputs["predictions"], outputs["targets"])
