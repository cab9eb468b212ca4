"""Maestro: trainable ordered low-rank decomposition (LoD) with ordered dropout, group lasso and rank shrinking."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs.lowrank._base import ParametrizedReparam, WeightParametrization
from common_regs.lowrank._utils import factor_split
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["Maestro", "maestro_group_lasso", "maestro_importance", "ordered_dropout_distillation"]


def maestro_group_lasso(u: Tensor, v: Tensor, *, hierarchical: bool = True) -> Tensor:
    """Per-component group lasso ``‖v_i‖ + ‖u_i‖`` (vector of length R).

    ``u`` is (out, R) and ``v`` is (R, in). With ``hierarchical`` the norms are tail norms
    ``sqrt(Σ_{j≥i} ‖v_j‖²)`` (resp. ``u``), which penalize later components more (Maestro's ordered variant).
    """
    if hierarchical:
        v_norm = v.pow(2).flip(0).cumsum(0).flip(0).sum(1).sqrt()
        u_norm = u.pow(2).flip(1).cumsum(1).flip(1).sum(0).sqrt()
    else:
        v_norm = v.norm(dim=1)
        u_norm = u.norm(dim=0)
    return v_norm + u_norm


@torch.no_grad()
def maestro_importance(u: Tensor, v: Tensor, *, hierarchical: bool = True) -> Tensor:
    """Component importance ``‖u_i‖·‖v_i‖`` (tail norms when ``hierarchical``)."""
    if hierarchical:
        v_norm = v.pow(2).flip(0).cumsum(0).flip(0).sum(1).sqrt()
        u_norm = u.pow(2).flip(1).cumsum(1).flip(1).sum(0).sqrt()
    else:
        v_norm, u_norm = v.norm(dim=1), u.norm(dim=0)
    return v_norm * u_norm


def ordered_dropout_distillation(partial_logits: Tensor, full_logits: Tensor) -> Tensor:
    """Cross-entropy of the truncated pass against the detached softmax of the full pass (Maestro's soft target)."""
    target = full_logits.detach().softmax(dim=-1)
    return F.cross_entropy(partial_logits, target)


class _MaestroWeight(WeightParametrization):
    trainable = (True, True)

    def __init__(self) -> None:
        super().__init__()
        self.width: float | None = None
        self.shape: tuple[int, ...] = ()

    def initial_originals(self, weight: Tensor) -> tuple[Tensor, ...]:
        u, v = factor_split(weight)
        self.shape = tuple(weight.shape)
        self.register_buffer("keep", torch.ones(u.shape[1], dtype=torch.bool, device=weight.device))
        return u, v

    @property
    def active_rank(self) -> int:
        return int(self.keep.sum())

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        if self.width is None and bool(self.keep.all()):
            return (u @ v).reshape(self.shape)  # fast path: full kept rank, no gather
        kept = int(self.keep.sum())
        inner = kept if self.width is None else math.ceil(kept * self.width)
        if inner == 0:
            return u.new_zeros(self.shape)
        index = torch.nonzero(self.keep).squeeze(1)[:inner]
        return (u[:, index] @ v[index]).reshape(self.shape)


@register("maestro", kind="reparam", seed=22,
          fidelity="official-code",
          verified_by="tests/common_regs/lowrank/test_maestro.py",
          paper="Horváth, Laskaridis, Rajput, Wang, Maestro: Uncovering Low-Rank Structures via Trainable "
                "Decomposition, ICML 2024, arXiv:2308.14929")
class Maestro(ParametrizedReparam):
    r"""Ordered trainable low-rank decomposition W = U Vᵀ with ordered dropout, group lasso and rank shrinking.

    Each weight is replaced by SVD-initialized factors; training adds a pass in which one layer is truncated to its
    first ⌈p·r⌉ components (ordered dropout, distilled from the full pass), a hierarchical group lasso on the
    components, and progressive shrinking that drops components whose importance falls below ε. The result is a
    model whose layers can be cut to any rank budget, with the most important directions first.

    Reference:
        Horváth, Laskaridis, Rajput, Wang, "Maestro: Uncovering Low-Rank Structures via Trainable Decomposition",
        ICML 2024, arXiv:2308.14929 (official code ``maestro/layers/linear.py``, ``samplers/single_layer.py``,
        ``cifar_mnist_main.py``).

    Math:
        .. math::
            W = U_{:,K}V_{K,:},\quad U = U_{svd}\sqrt{S},\ V = \sqrt{S}V_{svd}^\top \ \text{(init)},\\
            W_p = U_{:,K_{1..\lceil p|K|\rceil}}V_{K_{1..\lceil p|K|\rceil},:},\quad
            GL = \sum_i \Big(\sqrt{\textstyle\sum_{j\ge i}\|v_j\|^2}
                 + \sqrt{\textstyle\sum_{j\ge i}\|u_j\|^2}\Big),\\
            L = CE(f(x), y) + CE\big(f_{p,l}(x), \mathrm{sg}(\mathrm{softmax}(f(x)))\big) + \lambda\,GL,\quad
            K \leftarrow \{i : \|u_i\|\|v_i\| \ge \varepsilon\}\ \text{(after each epoch)}

        with K the kept components (``keep`` buffer) and (l, p) sampled one layer at a time.

    Args:
        group_lasso_weight: λ. Default 5e-3 (source: official ``maestro_opts.py``, ``--gp-lambda``).
        threshold: ε of progressive shrinking. Default 1e-5 (source: official ``--importance-threshold``).
        hierarchical: use tail norms in GL and importance. Default True (source: official ``cifar_mnist_main.py``).
        module_types: module types to decompose. Default ("linear",) (convention).
        include: fnmatch patterns of module names; None = all. Default None.
        exclude: fnmatch patterns to skip. Default None.

    Shape:
        weight (out, in) → trainable U (out, R), V (R, in) with R = min(out, in); buffer ``keep`` (R,) bool.

    Returns:
        ``prepare(model)`` returns the model; ``group_lasso()`` the scalar GL; ``shrink()`` the kept ranks.

    Note:
        Merging bakes the full kept rank. Truncation is a forward-time choice (``truncated`` context), so the
        optimizer sees all components all the time, as in the official code (pruned rows are masked, not removed).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(6, 4)); x = torch.randn(2, 6); before = model(x)
        >>> maestro = Maestro(); _ = maestro.prepare(model)
        >>> torch.allclose(model(x), before, atol=1e-5)
        True
        >>> with maestro.truncated(0, 0.5):
        ...     model[0].weight.shape, int(torch.linalg.matrix_rank(model[0].weight))
        (torch.Size([4, 6]), 2)
    """

    config_keys: ClassVar[tuple[str, ...]] = (
        "group_lasso_weight", "threshold", "hierarchical", "module_types", "include", "exclude"
    )
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{horvath2024maestro, title={Maestro: Uncovering Low-Rank Structures via Trainable "
        "Decomposition}, author={Horv{\\'a}th, Samuel and Laskaridis, Stefanos and Rajput, Shashank and Wang, Hongyi},"
        " booktitle={ICML}, year={2024}}"
    )

    def __init__(self, group_lasso_weight: float = 5e-3, threshold: float = 1e-5, hierarchical: bool = True, *,
                 module_types: Sequence[str] = ("linear",), include: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None) -> None:
        super().__init__(module_types=module_types, include=include, exclude=exclude, freeze_base=False)
        if group_lasso_weight < 0:
            raise ValueError(f"`group_lasso_weight` must be >= 0, got {group_lasso_weight}.")
        if threshold < 0:
            raise ValueError(f"`threshold` must be >= 0, got {threshold}.")
        self.group_lasso_weight, self.threshold, self.hierarchical = float(group_lasso_weight), float(threshold), \
            bool(hierarchical)
        self._queue: list[tuple[int, float]] = []

    def make_parametrization(self, name: str, module: nn.Module, weight: Tensor) -> WeightParametrization:
        return _MaestroWeight()

    def _factors(self, index: int) -> tuple[Tensor, Tensor]:
        site = self.sites[index]
        if site.stash is not None:
            raise ValueError("Maestro factors are not available while merged; call `unmerge()` first.")
        plist = site.module.parametrizations[site.tensor_name]
        return plist.original0, plist.original1

    def group_lasso(self) -> Tensor:
        """Σ over decomposed layers and components of the (hierarchical) group lasso (unweighted)."""
        self._require_prepared()
        total = [maestro_group_lasso(*self._factors(i), hierarchical=self.hierarchical).sum()
                 for i in range(len(self.sites))]
        return torch.stack(total).sum()

    def ranks(self) -> dict[str, int]:
        """Kept rank |K| of each decomposed layer."""
        return {site.name: site.parametrization.active_rank for site in self.sites}

    @torch.no_grad()
    def shrink(self, threshold: float | None = None) -> dict[str, int]:
        """Progressive shrinking: keep the components with importance ≥ ε; returns the new ranks."""
        self._require_prepared()
        eps = self.threshold if threshold is None else float(threshold)
        for index, site in enumerate(self.sites):
            importance = maestro_importance(*self._factors(index), hierarchical=self.hierarchical)
            site.parametrization.keep.copy_(importance >= eps)
        self._queue = []
        ranks = self.ranks()
        logger.info("Maestro: shrink(eps=%g) -> ranks %s", eps, ranks)
        return ranks

    def sample(self, generator: torch.Generator | None = None) -> tuple[int, float]:
        """Next (layer index, width fraction) of the one-layer-at-a-time sampler.

        All pairs (l, j/|K_l|) for j = 1..|K_l| are shuffled and consumed in turn, then reshuffled (official
        ``SingleLayerSampler``).
        """
        self._require_prepared()
        if not self._queue:
            pairs = [(i, j / site.parametrization.active_rank) for i, site in enumerate(self.sites)
                     for j in range(1, site.parametrization.active_rank + 1)]
            if not pairs:
                raise ValueError("every decomposed layer has rank 0; nothing to sample.")
            order = torch.randperm(len(pairs), generator=generator).tolist()
            self._queue = [pairs[k] for k in order]
        return self._queue.pop()

    @contextlib.contextmanager
    def truncated(self, index: int, width: float) -> Iterator[None]:
        """Within the block, layer ``index`` uses only its first ⌈width·|K|⌉ kept components."""
        self._require_prepared()
        if not 0.0 < width <= 1.0:
            raise ValueError(f"`width` must be in (0, 1], got {width}.")
        if not 0 <= index < len(self.sites):
            raise ValueError(f"`index` must be in [0, {len(self.sites)}), got {index}.")
        param = self.sites[index].parametrization
        previous, param.width = param.width, width
        try:
            yield
        finally:
            param.width = previous

    def loss(self, full_logits: Tensor, partial_logits: Tensor, targets: Tensor) -> Tensor:
        """Maestro's training objective ``CE(full, y) + CE(partial, sg softmax(full)) + λ·GL``."""
        return (F.cross_entropy(full_logits, targets) + ordered_dropout_distillation(partial_logits, full_logits)
                + self.group_lasso_weight * self.group_lasso())
