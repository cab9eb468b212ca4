"""Sparse-IFT: sparse iso-FLOP layer transformations (wide / factorized / doped / parallel) with sparse masks."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from common_regs.api import TrainContext
from common_regs.registry import register
from common_regs.sparsity._masks import MaskSchedulerBase, check_fraction, topk_mask

logger = logging.getLogger(__name__)

__all__ = [
    "SparseDopedLinear",
    "SparseFactorizedLinear",
    "SparseIFT",
    "SparseParallelLinear",
    "iso_flop_size",
    "linear_flops",
    "sparse_wide_widths",
]

TransformKind = Literal["factorized", "doped", "parallel", "wide"]


def iso_flop_size(kind: TransformKind, d_in: int, d_out: int, sparsity: float) -> float:
    """The free size that makes a sparse transform of a ``d_in → d_out`` linear layer cost the dense FLOPs.

    FLOPs are multiply-accumulates per input row (= non-zero weights):

    * ``factorized`` (W = U V, both sparse): inner dim ``d = d_in d_out / ((1 - s)(d_in + d_out))``
    * ``doped`` (W = S + U V, S sparse, U V dense): rank ``r = s d_in d_out / (d_in + d_out)``
    * ``parallel`` (sum of sparse branches): branches ``b = 1 / (1 - s)``
    * ``wide`` (hidden widths × k, both sides widened): ``k = 1 / sqrt(1 - s)``

    The factorized and doped sizes are those of the official code (``CerebrasResearch/Sparse-IFT``); the
    parallel and wide sizes follow from the iso-FLOP condition ``(1 - s)·FLOPs' = FLOPs``.
    """
    s = check_fraction("sparsity", sparsity)
    if kind == "factorized":
        return d_in * d_out / ((1.0 - s) * (d_in + d_out))
    if kind == "doped":
        return s * d_in * d_out / (d_in + d_out)
    if kind == "parallel":
        return 1.0 / (1.0 - s)
    if kind == "wide":
        return 1.0 / math.sqrt(1.0 - s)
    raise ValueError(f"`transform` must be one of ('factorized', 'doped', 'parallel', 'wide'), got {kind!r}.")


def sparse_wide_widths(widths: Sequence[int], sparsity: float) -> list[int]:
    """Sparse Wide for an MLP ``widths = [d_in, h_1, ..., h_k, d_out]``: hidden widths × ``1/sqrt(1 - s)``."""
    if len(widths) < 3:
        raise ValueError(f"`widths` needs an input, at least one hidden and an output width, got {list(widths)}.")
    factor = iso_flop_size("wide", 1, 1, sparsity)
    return [widths[0], *(round(h * factor) for h in widths[1:-1]), widths[-1]]


class SparseFactorizedLinear(nn.Module):
    """``x ↦ V(U x)`` with ``U: d_in → inner`` and ``V: inner → d_out`` (both masked by the scheduler)."""

    def __init__(self, in_features: int, out_features: int, inner: int, bias: bool = True) -> None:
        super().__init__()
        self.u = nn.Linear(in_features, inner, bias=False)
        self.v = nn.Linear(inner, out_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.v(self.u(x))


class SparseDopedLinear(nn.Module):
    """``x ↦ S x + B(A x)``: a sparse full-size layer ``S`` plus a dense rank-``rank`` path ``B A``."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.sparse = nn.Linear(in_features, out_features, bias=bias)
        self.down = nn.Linear(in_features, rank, bias=False) if rank else None
        self.up = nn.Linear(rank, out_features, bias=False) if rank else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.sparse(x)
        if self.down is not None and self.up is not None:
            out = out + self.up(self.down(x))
        return out


class SparseParallelLinear(nn.Module):
    """``x ↦ Σ_b W_b x``: ``branches`` sparse full-size layers summed (one bias)."""

    def __init__(self, in_features: int, out_features: int, branches: int, bias: bool = True) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Linear(in_features, out_features, bias=bias and b == 0) for b in range(branches)
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


def linear_flops(model: nn.Module) -> int:
    """Multiply-accumulates per input row of all ``nn.Linear`` layers: non-zero entries of their effective weights."""
    return int(sum(int((m.weight != 0).sum()) for m in model.modules() if isinstance(m, nn.Linear)))


@register(
    "sparse_ift",
    fidelity="official-code",
    verified_by="tests/common_regs/sparsity/test_sparse_ift.py",
    kind="mask_scheduler",
    paper="Thangarasa, Saxena, Gupta, Lie, Sparse-IFT: Sparse Iso-FLOP Transformations for Maximizing Training "
    "Efficiency, ICML 2024, arXiv:2303.11525",
    seed=42,
)
class SparseIFT(MaskSchedulerBase):
    r"""Sparse iso-FLOP transformations: replace dense layers by larger sparse ones with the same FLOPs.

    :meth:`apply_transform` (call it *before* building the optimizer) swaps each target ``nn.Linear`` for a Sparse
    Factorized / Doped / Parallel module sized by :func:`iso_flop_size`; (Sparse Wide changes an MLP's widths:
    build the model with :func:`sparse_wide_widths`). The scheduler then owns unstructured masks at density
    ``1 - sparsity`` on the sparse weights: random static masks, or SET-style dynamic updates (drop the
    smallest-|w| fraction ``α_t`` of active weights, regrow as many at random) every ``update_every`` steps.

    Reference:
        Thangarasa, Saxena, Gupta, Lie, "Sparse-IFT: Sparse Iso-FLOP Transformations for Maximizing Training
        Efficiency", ICML 2024, arXiv:2303.11525 (sizes: ``ComputerVision/CIFAR/models/cifar_resnet18.py`` of the
        official code). Dynamic masks: SET, Mocanu et al., Nature Communications 2018, arXiv:1707.04780.

    Math:
        .. math::
            \mathrm{FLOPs}_{\text{sparse}} = (1 - s)\,|\text{sparse weights}| + |\text{dense extra weights}|
            = d_{in} d_{out}, \qquad \alpha_t = \tfrac{\alpha}{2}\big(1 + \cos(\pi t / T_{end})\big)

    Args:
        transform: ``"factorized"``, ``"doped"`` or ``"parallel"``. Default ``"factorized"``.
        sparsity: fraction of each sparse weight pruned. Default 0.5 (paper sweeps 0.5, 0.75, 0.9).
        update_every: steps between SET updates; None = static masks. Default None.
        update_fraction: α, initial drop/regrow fraction of active weights. Default 0.3 (RigL/SET convention).
        update_until: T_end, last step with updates. Default 1000.
        seed: seed of the random masks. Default 0.
        exclude: module-name prefixes kept dense (first/last layers are usually kept dense). Default ().

    Note:
        The paper trains the masks with RigL (gradient regrowth); this class offers static and SET masks.
        Gradient-based regrowth is what ``common_regs/sparsity/dsl.py`` provides on the same base.
    """

    config_keys: ClassVar[tuple[str, ...]] = (
        "transform",
        "sparsity",
        "update_every",
        "update_fraction",
        "update_until",
        "seed",
        "exclude",
    )

    def __init__(
        self,
        transform: TransformKind = "factorized",
        sparsity: float = 0.5,
        *,
        update_every: int | None = None,
        update_fraction: float = 0.3,
        update_until: int = 1000,
        seed: int = 0,
        exclude: Sequence[str] = (),
    ) -> None:
        super().__init__(exclude=exclude, module_types=("linear",))
        if transform == "wide":
            raise ValueError("`transform`='wide' changes model widths: build the MLP with `sparse_wide_widths`.")
        iso_flop_size(transform, 1, 1, sparsity)  # validates both
        self.transform, self.sparsity = transform, float(sparsity)
        if update_every is not None and update_every < 1:
            raise ValueError(f"`update_every` must be >= 1 or None, got {update_every}.")
        self.update_every, self.update_until, self.seed = update_every, update_until, seed
        self.update_fraction = check_fraction("update_fraction", update_fraction, closed_high=True)
        self._generator = torch.Generator().manual_seed(seed)

    def apply_transform(self, model: nn.Module) -> nn.Module:
        """Replace every non-excluded ``nn.Linear`` by its iso-FLOP sparse module; returns the model (in place)."""
        sparse_targets: list[str] = []
        replacements = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and name and not any(name.startswith(p) for p in self.exclude)
        ]
        for name, layer in replacements:
            new, weights = self._build(layer)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
            sparse_targets += [f"{name}.{w}" for w in weights]
        if not sparse_targets:
            raise ValueError("`apply_transform` found no nn.Linear outside `exclude` to transform.")
        self.targets = sparse_targets
        return model

    def _build(self, layer: nn.Linear) -> tuple[nn.Module, list[str]]:
        d_in, d_out, bias = layer.in_features, layer.out_features, layer.bias is not None
        size = iso_flop_size(self.transform, d_in, d_out, self.sparsity)
        if self.transform == "factorized":
            return SparseFactorizedLinear(d_in, d_out, max(1, round(size)), bias), ["u.weight", "v.weight"]
        if self.transform == "doped":
            return SparseDopedLinear(d_in, d_out, round(size), bias), ["sparse.weight"]
        branches = max(1, round(size))
        return SparseParallelLinear(d_in, d_out, branches, bias), [f"branches.{b}.weight" for b in range(branches)]

    def expected_nnz(self, name: str) -> int:
        numel = self._masks[name].numel()
        return numel - int(self.sparsity * numel)

    def current_update_fraction(self) -> float:
        t = min(self.steps_done, self.update_until)
        return self.update_fraction * 0.5 * (1.0 + math.cos(math.pi * t / max(self.update_until, 1)))

    def _on_prepare(self) -> None:
        for name, mask, weight in self._items():
            scores = torch.rand(weight.shape, generator=self._generator).to(weight.device)
            mask.copy_(topk_mask(scores, self.expected_nnz(name)))

    def _update(self, ctx: TrainContext | None) -> None:
        del ctx
        if self.update_every is None or self.steps_done > self.update_until or self.steps_done % self.update_every:
            return
        fraction = self.current_update_fraction()
        for _, mask, weight in self._items():
            active = int(mask.sum())
            count = min(int(fraction * active), mask.numel() - active)
            if count == 0:
                continue
            flat_mask, flat_w = mask.view(-1), weight.detach().view(-1)
            magnitude = torch.where(flat_mask.bool(), flat_w.abs(), torch.full_like(flat_w, float("inf")))
            drop = torch.topk(magnitude, count, largest=False).indices
            noise = torch.rand(flat_mask.shape, generator=self._generator).to(flat_mask.device)
            noise[flat_mask.bool()] = -1.0  # only inactive entries can be regrown
            grow = torch.topk(noise, count).indices
            flat_mask[drop] = 0.0
            flat_mask[grow] = 1.0
            weight.view(-1)[grow] = 0.0  # regrown weights start at zero (SET/RigL convention)

    def _extra_state(self) -> dict[str, Any]:
        return {"generator": self._generator.get_state()}

    def _load_extra_state(self, state: Any) -> None:
        if "generator" in state:
            self._generator.set_state(state["generator"])
