"""Dynamic Sparse Learning (DSL): sparse training from scratch at a constant parameter budget (Wang et al. 2024)."""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from common_regs.api import TrainContext
from common_regs.registry import register
from common_regs.schedules import Cosine
from common_regs.sparsity._masks import MaskSchedulerBase, check_fraction, topk_mask, zero_optimizer_state
from common_regs.sparsity.sparse_table import SparseTable, memory_report, to_sparse_table

logger = logging.getLogger(__name__)

__all__ = ["DSL", "DSL_MODULE_TYPES", "erk_densities", "prune_and_grow", "ranked_indices", "update_count"]

DSL_MODULE_TYPES: tuple[str, ...] = ("embedding", "embedding_bag", "linear")
Distribution = Literal["uniform", "erk"]


def erk_densities(
    shapes: Mapping[str, Sequence[int]], density: float, *, power_scale: float = 1.0
) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities per tensor with the global density ``density``.

    Tensor ``l`` of shape ``(n_1, ..., n_k)`` gets ``d_l = ε · (Σ_i n_i / Π_i n_i) ** power_scale``, with ``ε`` chosen
    so that ``Σ_l d_l |W_l| = density · Σ_l |W_l|``; a tensor whose ``d_l`` would exceed 1 is made dense and ``ε`` is
    solved again (Evci et al., "Rigging the Lottery", ICML 2020, arXiv:1911.11134, §3; code
    ``google-research/rigl`` ``sparse_utils.get_sparsities_erdos_renyi``). For an embedding table ``(rows, dim)``
    with ``rows ≫ dim`` this is ``≈ ε / dim``: tables of equal width get equal density.
    """
    density = check_fraction("density", density, low=0.0, high=1.0, closed_high=True)
    if not shapes:
        raise ValueError("`shapes` must name at least one tensor, got none.")
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: (sum(shape) / numel[name]) ** power_scale for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(numel.values()) - sum(numel[name] for name in dense)
        divisor = sum(raw[name] * numel[name] for name in shapes if name not in dense)
        if divisor == 0:  # everything dense
            return dict.fromkeys(shapes, 1.0)
        epsilon = budget / divisor
        over = [name for name in shapes if name not in dense and epsilon * raw[name] > 1.0]
        if not over:
            return {name: 1.0 if name in dense else epsilon * raw[name] for name in shapes}
        largest = max(raw[name] for name in over)
        dense |= {name for name in over if raw[name] == largest}


def update_count(active: int, numel: int, ratio: float) -> int:
    """Entries moved in one update: ``min(⌈ratio · active⌉, numel − active)`` (``magnitude_death`` of DSL's code)."""
    return min(math.ceil(ratio * active), numel - active)


def ranked_indices(scores: Tensor, count: int, *, largest: bool, generator: torch.Generator | None = None) -> Tensor:
    """Positions of the ``count`` largest (or smallest) ``scores``; ties broken uniformly at random by ``generator``.

    Random tie-breaking matters for embedding tables: rows absent from the last mini-batch all have gradient 0, and
    ``topk`` would always pick the lowest row ids among them.
    """
    n = scores.numel()
    if not 0 <= count <= n:
        raise ValueError(f"`count` must be in [0, {n}], got {count}.")
    if count == 0:
        return torch.zeros(0, dtype=torch.int64, device=scores.device)
    order = torch.randperm(n, generator=generator).to(scores.device) if generator is not None else None
    permuted = scores if order is None else scores[order]
    top = torch.argsort(permuted, descending=largest, stable=True)[:count]
    return top if order is None else order[top]


def prune_and_grow(
    weight: Tensor,
    grad: Tensor,
    mask: Tensor,
    count: int,
    *,
    regrow_pruned: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One DSL update of one tensor: returns ``(new_mask, pruned, grown)`` (flat indices, in-place safe).

    ``pruned``: the ``count`` active entries with the smallest ``|weight|``. ``grown``: the ``count`` inactive
    entries with the largest ``|grad|``, where "inactive" is taken after pruning (``regrow_pruned=True``, as
    ``gradient_growth`` of the official code: a just-pruned entry may come straight back) or before it
    (``regrow_pruned=False``: pruned and grown sets are disjoint). ``new_mask`` has exactly as many ones as ``mask``.
    """
    if not weight.shape == grad.shape == mask.shape:
        raise ValueError(
            f"`weight`, `grad` and `mask` must have one shape, got {tuple(weight.shape)}, {tuple(grad.shape)}, "
            f"{tuple(mask.shape)}."
        )
    flat_mask = mask.detach().reshape(-1).bool()
    active = flat_mask.nonzero().squeeze(1)
    if count > min(active.numel(), flat_mask.numel() - active.numel()):
        raise ValueError(
            f"`count` must be <= min(active, inactive) = {min(active.numel(), flat_mask.numel() - active.numel())}, "
            f"got {count}."
        )
    pruned = active[
        ranked_indices(weight.detach().reshape(-1)[active].abs(), count, largest=False, generator=generator)
    ]
    after = flat_mask.clone()
    after[pruned] = False
    candidates = (~after if regrow_pruned else ~flat_mask).nonzero().squeeze(1)
    grown = candidates[
        ranked_indices(grad.detach().reshape(-1)[candidates].abs(), count, largest=True, generator=generator)
    ]
    after[grown] = True
    return after.to(mask.dtype).view_as(mask), pruned, grown


@register(
    "dsl",
    fidelity="official-code",
    verified_by="tests/common_regs/sparsity/test_dsl.py",
    kind="mask_scheduler",
    paper="Wang, Sui, Wang, Wu, He, Zhang, Dynamic Sparse Learning: A Novel Paradigm for Efficient Recommendation, "
    "WSDM 2024, arXiv:2402.02855",
    seed=49,
)
class DSL(MaskSchedulerBase):
    r"""Dynamic Sparse Learning: train embedding tables and dense layers sparse from step 0 at a fixed budget.

    Use it to train a recommender (MF-BPR, LightGCN, two-tower) whose parameter count never exceeds the budget:
    random sparse masks at the target density, then every ``update_interval`` steps each tensor drops its
    smallest-magnitude active weights and regrows as many inactive ones with the largest gradient (of the last
    mini-batch), regrown weights starting at zero. Masks are re-applied after every optimizer step, and the
    optimizer state (momentum, Adam moments, Adagrad sums) is zeroed at inactive entries.

    Reference:
        Wang et al., "Dynamic Sparse Learning: A Novel Paradigm for Efficient Recommendation", WSDM 2024,
        arXiv:2402.02855. The rule below is that of the official code ``shuyao-wang/DSL`` (``utils/core.py``:
        ``Masking``, ``CosineDecay``, ``magnitude_death``, ``gradient_growth``); the paper's own equations could not
        be read here, so no equation number is claimed. ERK option: Evci et al., arXiv:1911.11134 §3.

    Math:
        .. math::
            r_t = r_{min} + (r_0 - r_{min})\,\tfrac12\big(1 + \cos(\pi \min(t, T) / T)\big), \qquad
            k_l = \min(\lceil r_t \,\|m_l\|_0 \rceil,\; |W_l| - \|m_l\|_0)

            P_l = \operatorname{argmin}^{k_l}_{i: m_{l,i}=1} |W_{l,i}|, \quad
            G_l = \operatorname{argmax}^{k_l}_{i: m'_{l,i}=0} |\nabla_{W_l} L_{\text{batch}}|_i, \quad
            m'_l = m_l - 1_{P_l}, \quad m_l \leftarrow m'_l + 1_{G_l}, \quad W_{l,G_l \setminus P_l} = 0

        applied when ``t % update_interval == 0`` (``t`` = optimizer steps done, ``r_0`` ↔ ``ratio``,
        ``r_min`` ↔ ``ratio_min``, ``T`` ↔ ``total_steps``), so ``‖m_l‖_0`` never changes. After every step
        ``W ← W ⊙ m`` and each per-entry optimizer state ``s ← s ⊙ m``.

    Args:
        density: fraction of each selected tensor kept (ERK: global fraction). Default 0.5 (code: ``--density``).
        update_interval: ΔT, optimizer steps between prune/grow updates. Default 3000 (code: LightGCN
            ``--update_interval``; NeuMF uses 100/2000, MultVAE 100; scale it to your run length).
        ratio: r₀, initial adjustment ratio. Default 0.5 (code: ``--update_ratio``).
        ratio_min: r_min, the cosine floor. Default 0.005 (code: ``CosineDecay(eta_min=0.005)``).
        total_steps: T, steps of the cosine decay (the code uses ``len(loader) · epochs``). Default None: read
            ``ctx.extras["total_steps"]`` at the first update (a trainer may set it), else error.
        distribution: ``"uniform"`` (same density per tensor, the code's ``--sparse_init uniform``) or ``"erk"``.
            Default ``"uniform"``.
        regrow_pruned: whether entries pruned in an update may be regrown in the same update (code: yes).
            Default True.
        seed: seed of the random initial masks and of tie-breaking. Default 0.
        targets: parameter FQNs or ``fnmatch`` patterns over ``model.named_parameters()`` names (e.g.
            ``"*embedding_bags.*.weight"``). Default None: the ``weight`` of every ``nn.Embedding``,
            ``nn.EmbeddingBag`` (torchrec ``EmbeddingBagCollection`` tables are these) and ``nn.Linear``; biases and
            norms stay dense (as in the code's ``remove_weight_partial_name('bias')``).
        exclude: module-name prefixes left dense. Default ().

    Shape:
        Any weight shape; counts are per tensor.

    Returns:
        ``step`` returns None; :meth:`stats` gives ``reg/dsl/{nnz,density,ratio}`` for logging.

    Note:
        Growth needs the dense gradient, so the mask parametrization is straight-through: ``W.grad`` is the gradient
        of the masked weight, non-zero at inactive entries, as in the code where zeroed weights still get gradients.
        Call :meth:`step` after ``optimizer.step()`` and before the next ``zero_grad`` (``RegHooks`` does). Sparse
        gradients (``nn.Embedding(sparse=True)``) are densified for the growth score. Adam moments are zeroed at
        inactive entries (the code only masks the SGD momentum). Row-wise optimizer state (torchrec row-wise
        Adagrad, shape ``(rows,)``) cannot be masked per entry and is left as is; torchrec fused (TBE) optimizers
        under ``DistributedModelParallel`` keep no ``.grad`` and are not supported. The budget is checked after
        every update (``RuntimeError`` if it ever changes).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Embedding(100, 16), nn.Linear(16, 8))
        >>> sched = DSL(density=0.25, update_interval=10, total_steps=100)
        >>> sched.prepare(model, torch.optim.Adam(model.parameters()))
        >>> sched.budget
        {'0.weight': 400, '1.weight': 32}
    """

    straight_through: ClassVar[bool] = True
    config_keys: ClassVar[tuple[str, ...]] = (
        "density",
        "update_interval",
        "ratio",
        "ratio_min",
        "total_steps",
        "distribution",
        "regrow_pruned",
        "seed",
        "targets",
        "exclude",
    )
    citation: ClassVar[str] = (
        "@inproceedings{wang2024dsl, title={Dynamic Sparse Learning: A Novel Paradigm for Efficient Recommendation}, "
        "author={Wang, Shuyao and Sui, Yongduo and Wang, Jiancan and Wu, Jiancan and He, Xiangnan and Zhang, Yongdong}"
        ", booktitle={WSDM}, year={2024}, eprint={2402.02855}}"
    )

    def __init__(
        self,
        density: float = 0.5,
        *,
        update_interval: int = 3000,
        ratio: float = 0.5,
        ratio_min: float = 0.005,
        total_steps: int | None = None,
        distribution: Distribution = "uniform",
        regrow_pruned: bool = True,
        seed: int = 0,
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        super().__init__(targets=targets, exclude=exclude, module_types=DSL_MODULE_TYPES)
        self.density = check_fraction("density", density, low=0.0, high=1.0, closed_high=True)
        if self.density == 0.0:
            raise ValueError("`density` must be in (0, 1], got 0.0.")
        if not isinstance(update_interval, int) or update_interval < 1:
            raise ValueError(f"`update_interval` must be an integer >= 1, got {update_interval!r}.")
        self.update_interval = update_interval
        self.ratio = check_fraction("ratio", ratio, closed_high=True)
        self.ratio_min = check_fraction("ratio_min", ratio_min, high=self.ratio, closed_high=True)
        if total_steps is not None and (not isinstance(total_steps, int) or total_steps < 1):
            raise ValueError(f"`total_steps` must be an integer >= 1 or None, got {total_steps!r}.")
        self.total_steps = total_steps
        if distribution not in ("uniform", "erk"):
            raise ValueError(f"`distribution` must be 'uniform' or 'erk', got {distribution!r}.")
        self.distribution: Distribution = distribution
        self.regrow_pruned = bool(regrow_pruned)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._budget: dict[str, int] = {}
        self.history: list[dict[str, float]] = []

    # ----------------------------------------------------------------------------------------- selection
    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Expand ``fnmatch`` patterns in ``targets`` to parameter names, then prepare the masks."""
        if self.targets is not None and self.model is None:
            self.targets = _expand_patterns(model, self.targets)
        super().prepare(model, optimizer)

    # ----------------------------------------------------------------------------------------- budget
    @property
    def budget(self) -> dict[str, int]:
        """Active entries per tensor, fixed at ``prepare`` for the whole run."""
        return dict(self._budget)

    def expected_nnz(self, name: str) -> int:
        return self._budget[name]

    def active_parameters(self) -> int:
        """Number of active (trainable, stored) entries over all owned tensors, counted from the masks."""
        return int(sum(int(mask.sum()) for mask in self._masks.values()))

    def check_budget(self) -> None:
        """Raise ``RuntimeError`` unless every mask holds exactly its budgeted number of ones."""
        for name, mask in self._masks.items():
            nnz = int(mask.sum())
            if nnz != self._budget[name]:
                raise RuntimeError(
                    f"DSL parameter budget violated for {name!r}: {nnz} active entries, expected {self._budget[name]}."
                )

    def current_ratio(self, total_steps: int | None = None) -> float:
        """r_t at the current step (cosine from ``ratio`` to ``ratio_min`` over ``total_steps``)."""
        total = total_steps if total_steps is not None else self.total_steps
        if total is None:
            raise ValueError(
                "`total_steps` is needed for the cosine decay of the adjustment ratio: pass "
                "DSL(total_steps=len(loader) * epochs) or set ctx.extras['total_steps'] in the trainer."
            )
        return Cosine(start=self.ratio, end=self.ratio_min, total_steps=total)(self.steps_done)

    def stats(self) -> dict[str, float]:
        """Logging values: ``reg/dsl/nnz``, ``reg/dsl/density`` and the last update's ratio."""
        total = sum(mask.numel() for mask in self._masks.values())
        nnz = self.active_parameters()
        return {
            "reg/dsl/nnz": float(nnz),
            "reg/dsl/density": nnz / total if total else 0.0,
            "reg/dsl/ratio": self.history[-1]["ratio"] if self.history else self.ratio,
        }

    # ----------------------------------------------------------------------------------------- masks
    def _on_prepare(self) -> None:
        shapes = {name: tuple(mask.shape) for name, mask in self._masks.items()}
        if self.distribution == "erk":
            densities = erk_densities(shapes, self.density)
        else:
            densities = dict.fromkeys(shapes, self.density)
        for name, mask in self._masks.items():
            self._budget[name] = min(mask.numel(), max(1, round(densities[name] * mask.numel())))
            scores = torch.rand(mask.shape, generator=self._generator).to(mask.device)
            mask.copy_(topk_mask(scores, self._budget[name]))
        self.check_budget()
        logger.info(
            "DSL: %d of %d entries active (density=%s, distribution=%s; source: DSL code --density/--sparse_init)",
            sum(self._budget.values()),
            sum(m.numel() for m in self._masks.values()),
            self.density,
            self.distribution,
        )

    def _update(self, ctx: TrainContext | None) -> None:
        if self.steps_done % self.update_interval:
            return
        total = self.total_steps
        if total is None and ctx is not None:
            total = ctx.extras.get("total_steps")
        ratio = self.current_ratio(total)
        moved = 0
        for name, mask, weight in self._items():
            count = update_count(self._budget[name], mask.numel(), ratio)
            if count == 0:
                continue
            if weight.grad is None:
                raise ValueError(
                    f"DSL regrowth needs the last mini-batch gradient of {name!r}, but `.grad` is None: call "
                    "`step()` after `optimizer.step()` and before `zero_grad()`."
                )
            grad = weight.grad.to_dense() if weight.grad.is_sparse else weight.grad
            weight.mul_(mask)  # inactive entries moved by this optimizer step (dense STE gradient) go back to 0
            zero_optimizer_state(self.optimizer, weight, mask)
            new_mask, _, grown = prune_and_grow(
                weight, grad, mask, count, regrow_pruned=self.regrow_pruned, generator=self._generator
            )
            newly = grown[~mask.reshape(-1).bool()[grown]]
            mask.copy_(new_mask)
            weight.view(-1)[newly] = 0.0  # regrown weights start at zero (already zero; kept explicit)
            moved += count
        self.check_budget()
        self.history.append({"step": float(self.steps_done), "ratio": ratio, "moved": float(moved)})
        logger.debug("DSL: step %d ratio %.4f moved %d entries", self.steps_done, ratio, moved)

    # ----------------------------------------------------------------------------------------- export and state
    def export_sparse(self, names: Sequence[str] | None = None) -> dict[str, SparseTable]:
        """CSR tables of the trained weights (all owned tensors, or ``names``) for compact serving."""
        self._check_prepared()
        selected = list(self._masks) if names is None else list(names)
        unknown = sorted(set(selected) - set(self._masks))
        if unknown:
            raise ValueError(f"`names` must be owned targets {sorted(self._masks)}, got unknown {unknown}.")
        return {name: to_sparse_table(self.effective(name), self._masks[name]) for name in selected}

    def memory_report(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """Stored bytes of :meth:`export_sparse` against dense storage (see ``sparse_table.memory_report``)."""
        return memory_report(self.export_sparse(names))

    def _extra_state(self) -> dict[str, Any]:
        return {
            "generator": self._generator.get_state(),
            "budget": dict(self._budget),
            "history": [dict(h) for h in self.history],
        }

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        if "budget" in state and dict(state["budget"]) != self._budget:
            raise ValueError(
                f"checkpoint budget {dict(state['budget'])} differs from this scheduler's {self._budget}: the "
                "`density`/`distribution`/targets must match the run being resumed."
            )
        if "generator" in state:
            self._generator.set_state(state["generator"])
        self.history = [dict(h) for h in state.get("history", [])]
        self.check_budget()


def _expand_patterns(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """Replace ``fnmatch`` patterns by the matching parameter names (in model order); plain names pass through."""
    names = [name for name, _ in model.named_parameters()]
    out: list[str] = []
    for target in targets:
        if any(ch in target for ch in "*?["):
            matched = [name for name in names if fnmatch.fnmatchcase(name, target)]
            if not matched:
                raise ValueError(f"target pattern {target!r} matches no parameter; parameters are {names[:20]}...")
            out += [name for name in matched if name not in out]
        elif target not in out:
            out.append(target)
    return out
