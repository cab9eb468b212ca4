"""DropPos: drop positional embeddings of visible patches and classify each patch's position (smoothed targets)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["DropPos", "drop_pos_loss", "drop_pos_masks", "position_smoothing"]


def position_smoothing(grid_h: int, grid_w: int, sigma: float) -> Tensor:
    """Row-stochastic (L, L) matrix ``q(j|i) ∝ exp(-‖pos_i - pos_j‖² / σ²)`` on a grid; identity when σ = 0."""
    count = grid_h * grid_w
    if sigma == 0.0:
        return torch.eye(count)
    if sigma < 0:
        raise ValueError(f"`sigma` must be >= 0, got {sigma}.")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], 1).double()
    weight = torch.exp(-torch.cdist(coords, coords).pow(2) / sigma**2)
    return (weight / weight.sum(1, keepdim=True)).float()


def drop_pos_masks(
    batch: int, length: int, mask_ratio: float, pos_mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random visible patches and, among them, those whose position embedding is dropped.

    Returns ``ids_keep`` (B, V) with V = ⌊L(1 - mask_ratio)⌋ visible patch indices (random order), and
    ``mask_pos`` (B, V) with 1 where the visible patch's position is dropped: ``V - ⌊V(1 - pos_mask_ratio)⌋``
    ones per row (the official ``random_masking`` count).
    """
    visible = int(length * (1 - mask_ratio))
    if visible < 1:
        raise ValueError(f"`mask_ratio`={mask_ratio} leaves no visible patch out of {length}.")
    ids_keep = torch.argsort(torch.rand(batch, length, generator=generator), dim=1)[:, :visible]
    keep_pos = int(visible * (1 - pos_mask_ratio))
    order = torch.argsort(torch.rand(batch, visible, generator=generator), dim=1)
    mask_pos = torch.ones(batch, visible)
    mask_pos.scatter_(1, order[:, :keep_pos], 0.0)
    return ids_keep, mask_pos


def drop_pos_loss(logits: Tensor, ids_keep: Tensor, mask_pos: Tensor, smoothing: Tensor) -> Tensor:
    """``Σ_{b,v} m_bv · (-Σ_j q(j | id_bv) log softmax(z_bv)_j) / Σ m`` over the position-dropped visible patches."""
    if logits.shape[:2] != ids_keep.shape or logits.shape[-1] != smoothing.shape[0]:
        raise ValueError(
            f"`logits` {tuple(logits.shape)} must be (B, V, L) for `ids_keep` {tuple(ids_keep.shape)} and L = "
            f"{smoothing.shape[0]} positions."
        )
    targets = smoothing.to(logits)[ids_keep]  # (B, V, L)
    per_patch = -(targets * torch.log_softmax(logits, dim=-1)).sum(-1)
    weights = mask_pos.to(logits)
    return (per_patch * weights).sum() / weights.sum().clamp_min(1.0)


@register(
    "drop_pos",
    fidelity="official-code",
    verified_by="tests/common_regs/stochastic/test_drop_pos.py",
    kind="loss",
    paper="Wang, Fan, Wang, Song, Wang, Zhang, DropPos: Pre-Training Vision Transformers by Reconstructing Dropped "
    "Positions, NeurIPS 2023, arXiv:2309.03576",
    seed=57,
)
class DropPos(ConfigFromKeys):
    r"""Position-reconstruction pretext: drop most position embeddings, classify every patch's position among L.

    Only a random 25 % of the patches stay visible; of those, 75 % lose their position embedding (a mask token
    replaces it) and the model predicts, for each visible patch, which of the L grid positions it came from.
    Targets are Gaussian-smoothed over the grid with σ annealed to 0. It teaches ViTs spatial reasoning.
    Use :meth:`sample` for the masks, feed the encoder, then call the term with the (B, V, L) position logits.

    Reference:
        Wang, Fan, Wang, Song, Wang, Zhang, "DropPos: Pre-Training Vision Transformers by Reconstructing Dropped
        Positions", NeurIPS 2023, arXiv:2309.03576. Checked against the official code (``Haochen-Wang409/DropPos``:
        ``forward_drop_pos_loss``, ``_get_label_smoothing_map``, ``engine_pretrain.py``, ``scripts/pretrain_base.sh``).
        Deviation: the official map divides by ``weight.sum(-1)`` broadcast over the last axis (column sums); here
        rows are normalised so each q(·|i) sums to 1 (identical for a symmetric kernel with equal row masses).
        The attentive-reconstruction weights (``--attn_guide``) are not implemented.

    Math:
        .. math::
            q(j\mid i) = \frac{\exp(-\lVert p_i - p_j\rVert^2/\sigma_e^2)}{\sum_{j'}\exp(-\lVert p_i -
            p_{j'}\rVert^2/\sigma_e^2)},\quad \sigma_e = \sigma_0 (1 - e/E),\quad
            L = \frac{\sum_{b,v} m_{bv}\,\big(-\sum_j q(j\mid i_{bv})\log\mathrm{softmax}(z_{bv})_j\big)}
            {\sum_{b,v} m_{bv}}

        with m the dropped-position mask, i_bv the true position of visible patch v, σ_0 ↔ ``sigma``,
        E ↔ ``total_epochs``.

    Args:
        grid_size: (H, W) patch grid; L = H·W.
        mask_ratio: fraction of patches hidden. Default 0.75 (source: official ``--mask_ratio 0.75``).
        pos_mask_ratio: fraction of visible patches whose position is dropped. Default 0.75 (source: official
            ``--pos_mask_ratio 0.75``).
        sigma: σ_0. Default 1.0 (source: official ``--label_smoothing_sigma 1 --sigma_decay``).
        total_epochs: E of the σ decay. Default 800 (source: official ``--epochs 800``).

    Shape:
        logits (B, V, L) read from ``ctx.outputs``; ``ctx.extras["ids_keep"]`` (B, V), ``["mask_pos"]`` (B, V).

    Returns:
        scalar smoothed position cross-entropy over dropped positions.

    Note:
        σ = 0 gives one-hot targets (plain CE). Patches whose position is kept do not contribute.

    Example:
        >>> import torch
        >>> from common_regs.api import TrainContext
        >>> pretext = DropPos(grid_size=(2, 2), mask_ratio=0.0, pos_mask_ratio=0.5)
        >>> ids_keep, mask_pos = pretext.sample(3, torch.Generator().manual_seed(0))
        >>> ids_keep.shape, mask_pos.sum(1).tolist()
        (torch.Size([3, 4]), [2.0, 2.0, 2.0])
    """

    config_keys: ClassVar[tuple[str, ...]] = ("grid_size", "mask_ratio", "pos_mask_ratio", "sigma", "total_epochs")
    citation: ClassVar[str] = (
        "@inproceedings{wang2023droppos, title={DropPos: Pre-Training Vision Transformers by Reconstructing Dropped "
        "Positions}, author={Wang, Haochen and Fan, Junsong and Wang, Yuxi and Song, Kaiyou and Wang, Tong and "
        "Zhang, Zhaoxiang}, booktitle={NeurIPS}, year={2023}}"
    )

    def __init__(
        self,
        grid_size: tuple[int, int],
        mask_ratio: float = 0.75,
        pos_mask_ratio: float = 0.75,
        sigma: float = 1.0,
        total_epochs: int = 800,
    ) -> None:
        if len(grid_size) != 2 or min(grid_size) < 1:
            raise ValueError(f"`grid_size` must be two positive integers (H, W), got {grid_size!r}.")
        for name, value in (("mask_ratio", mask_ratio), ("pos_mask_ratio", pos_mask_ratio)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value}.")
        if sigma < 0:
            raise ValueError(f"`sigma` must be >= 0, got {sigma}.")
        if total_epochs < 1:
            raise ValueError(f"`total_epochs` must be >= 1, got {total_epochs}.")
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.mask_ratio, self.pos_mask_ratio = float(mask_ratio), float(pos_mask_ratio)
        self.sigma, self.total_epochs = float(sigma), int(total_epochs)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"grid_size": (2, 3), "total_epochs": 4}

    @property
    def num_positions(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def sigma_at(self, epoch: int) -> float:
        return self.sigma * max(0.0, 1.0 - epoch / self.total_epochs)

    def smoothing(self, epoch: int) -> Tensor:
        return position_smoothing(*self.grid_size, self.sigma_at(epoch))

    def sample(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return drop_pos_masks(batch, self.num_positions, self.mask_ratio, self.pos_mask_ratio, generator)

    def __call__(self, ctx: TrainContext) -> Tensor:
        if "ids_keep" not in ctx.extras or "mask_pos" not in ctx.extras:
            raise ValueError("`DropPos` needs `ctx.extras['ids_keep']` and `ctx.extras['mask_pos']` (from `sample`).")
        logits = ctx.outputs["position_logits"] if isinstance(ctx.outputs, dict) else ctx.outputs
        return drop_pos_loss(logits, ctx.extras["ids_keep"], ctx.extras["mask_pos"], self.smoothing(ctx.epoch))
