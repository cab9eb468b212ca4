"""SVFit: fine-tune only the top-r singular values of each pretrained weight."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn

from common_regs.lowrank._base import ParametrizedReparam, WeightParametrization
from common_regs.lowrank._utils import energy_rank, svd, validate_rank
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["SVFit", "svfit_weight"]


def svfit_weight(u: Tensor, sigma: Tensor, vh: Tensor, residual: Tensor) -> Tensor:
    """``W' = U_r · diag(σ) · V_rᵀ + W_res`` (matrix view)."""
    return (u * sigma) @ vh + residual


class _SVFitWeight(WeightParametrization):
    trainable = (True,)

    def __init__(self, rank: int | None, energy: float) -> None:
        super().__init__()
        self.rank_arg, self.energy = rank, energy
        self.shape: tuple[int, ...] = ()

    def initial_originals(self, weight: Tensor) -> tuple[Tensor, ...]:
        u, s, vh = svd(weight)
        r = energy_rank(s, self.energy) if self.rank_arg is None else min(self.rank_arg, s.numel())
        self.shape = tuple(weight.shape)
        self.register_buffer("u", u[:, :r].contiguous())
        self.register_buffer("vh", vh[:r].contiguous())
        residual = weight.reshape(weight.shape[0], -1) - (u[:, :r] * s[:r]) @ vh[:r]
        self.register_buffer("residual", residual.contiguous())
        return (s[:r].clone(),)

    def forward(self, sigma: Tensor) -> Tensor:
        return svfit_weight(self.u, sigma, self.vh, self.residual).reshape(self.shape)


@register("svfit", kind="reparam", seed=52,
          fidelity="paper-equation",
          verified_by="tests/common_regs/lowrank/test_svfit.py",
          paper="Sun et al., SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular "
                "Values, 2024, arXiv:2409.05926")
class SVFit(ParametrizedReparam):
    r"""Parameter-efficient fine-tuning that trains only the top-r singular values of each weight.

    Each target weight is split by SVD into its best rank-r part and a frozen residual; only the r singular values
    are trainable, so a layer costs r parameters. Use it to adapt a pretrained model with a tiny parameter budget.

    Reference:
        Sun, Wei, Wu, Shi, He, Ma, Xie, Yang, "SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models
        Using Singular Values", 2024, arXiv:2409.05926 (§III: W = W_r + W_e, only the singular values of W_r train).

    Math:
        .. math::
            W = U\Sigma V^\top,\quad W' = U_r\,\mathrm{diag}(\sigma)\,V_r^\top + (W - U_r\Sigma_rV_r^\top),
            \quad \sigma \leftarrow \sigma_{1..r}\ \text{at init (trainable)}

        r = ``rank``, or the smallest r with Σ_{i≤r} σ_i² ≥ ``energy``·Σ_i σ_i².

    Args:
        rank: number of trainable singular values per weight; ``None`` chooses r from ``energy``.
            Default None (source: paper abstract, "top-r singular values that capture over 99% of the information").
        energy: fraction of the squared singular-value mass the kept values capture. Default 0.99 (source: paper
            abstract; measuring "information" by σ² is regkit's reading).
        module_types: module types to reparametrize. Default ("linear",) (convention).
        include: fnmatch patterns of module names to reparametrize; None = all. Default None.
        exclude: fnmatch patterns to skip (e.g. a new classifier head). Default None.
        freeze_base: freeze every other model parameter (PEFT convention). Default False.

    Shape:
        weight (out, in[, *kernel]) → trainable ``sigma`` (r,), buffers ``u`` (out, r), ``vh`` (r, in·k),
        ``residual`` (out, in·k).

    Returns:
        ``prepare(model)`` returns the model with ``weight`` parametrized.

    Note:
        At init the weight is reproduced up to float rounding (the SVD is taken in float64). The gradient with
        respect to σ_i is u_iᵀ G v_i with G = ∂L/∂W'.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
        >>> x = torch.randn(4, 8); before = model(x)
        >>> reparam = SVFit(rank=2); _ = reparam.prepare(model)
        >>> torch.allclose(model(x), before, atol=1e-5), reparam.num_trainable()
        (True, 4)
    """

    config_keys: ClassVar[tuple[str, ...]] = ("rank", "energy", "module_types", "include", "exclude", "freeze_base")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@article{sun2024svfit, title={SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using "
        "Singular Values}, author={Sun, Chengwei and Wei, Jiwei and Wu, Yujia and Shi, Yiming and He, Shiyuan and "
        "Ma, Zeyu and Xie, Ning and Yang, Yang}, journal={arXiv:2409.05926}, year={2024}}"
    )

    def __init__(self, rank: int | None = None, energy: float = 0.99, *, module_types: Sequence[str] = ("linear",),
                 include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                 freeze_base: bool = False) -> None:
        super().__init__(module_types=module_types, include=include, exclude=exclude, freeze_base=freeze_base)
        validate_rank(rank)
        if not 0.0 < energy <= 1.0:
            raise ValueError(f"`energy` must be in (0, 1], got {energy}.")
        self.rank, self.energy = rank, float(energy)
        if rank is None:
            logger.info("SVFit: rank=None, energy=%s (default; Sun et al. 2024 abstract: 99%% of the information)",
                        energy)

    def make_parametrization(self, name: str, module: nn.Module, weight: Tensor) -> WeightParametrization:
        return _SVFitWeight(self.rank, self.energy)

    def singular_values(self) -> dict[str, Tensor]:
        """Current trainable singular values per reparametrized module."""
        self._require_prepared()
        out = {}
        for site in self.sites:
            plist = site.module.parametrizations[site.tensor_name] if site.stash is None else None
            out[site.name] = (plist.original0 if plist is not None else site.stash[0][0]).detach().clone()
        return out


