"""Shared math of the low-rank family: SVD splits, energy-based rank choice, matrix views of conv kernels."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["as_matrix", "energy_rank", "factor_split", "keep_ratio_rank", "svd", "validate_rank"]


def as_matrix(weight: Tensor) -> Tensor:
    """``(out, in, *kernel)`` → ``(out, in·prod(kernel))``; a 2-D weight is returned as is."""
    if weight.dim() < 2:
        raise ValueError(f"a weight to factorize must have >= 2 dimensions, got shape {tuple(weight.shape)}.")
    return weight.reshape(weight.shape[0], -1)


def svd(weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD of the matrix view of ``weight`` in float64 (for exact reconstructions), cast back to its dtype."""
    u, s, vh = torch.linalg.svd(as_matrix(weight).double(), full_matrices=False)
    return u.to(weight.dtype), s.to(weight.dtype), vh.to(weight.dtype)


def energy_rank(singular_values: Tensor, energy: float) -> int:
    """Smallest ``r`` with ``Σ_{i<=r} σ_i² >= energy · Σ_i σ_i²`` (at least 1)."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"`energy` must be in (0, 1], got {energy}.")
    power = singular_values.double() ** 2
    total = float(power.sum())
    if total == 0.0:
        return 1
    cumulative = torch.cumsum(power, 0) / total
    reached = torch.nonzero(cumulative >= energy - 1e-12)
    return int(reached[0].item()) + 1 if len(reached) else int(singular_values.numel())


def validate_rank(rank: int | None, name: str = "rank") -> None:
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"`{name}` must be a positive integer or None, got {rank!r}.")


def factor_split(weight: Tensor, rank: int | None = None) -> tuple[Tensor, Tensor]:
    """Balanced factors ``A = U_r √S_r`` (out × r) and ``B = √S_r V_rᵀ`` (r × in) of the matrix view of ``weight``.

    ``A @ B`` is the best rank-``r`` approximation (Eckart–Young); ``rank=None`` keeps the full rank.
    """
    u, s, vh = svd(weight)
    r = s.numel() if rank is None else min(rank, s.numel())
    root = s[:r].sqrt()
    return (u[:, :r] * root).contiguous(), (root[:, None] * vh[:r]).contiguous()


def keep_ratio_rank(out_features: int, in_features: int, keep_ratio: float) -> int:
    """Largest ``r`` whose factor pair ``r·(out+in)`` keeps at most ``keep_ratio`` of ``out·in`` parameters."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"`keep_ratio` must be in (0, 1], got {keep_ratio}.")
    return max(1, math.floor(keep_ratio * out_features * in_features / (out_features + in_features)))
