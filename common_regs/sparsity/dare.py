"""DARE / DAREx: random delta-parameter pruning with rescaling, the DAREx-q rescale search and the AdamR-L2 term."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register
from common_regs.sparsity._masks import check_fraction

logger = logging.getLogger(__name__)

__all__ = ["DARE", "DeltaL2", "dare_delta", "output_change_score"]


def dare_delta(
    delta: Tensor, drop_rate: float, *, q: float | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """``m ⊙ δ · c`` with ``m ~ Bernoulli(1 - p)``; ``c = 1/(1 - p)`` (DARE) or ``1/q`` (DAREx-q).

    The mask is drawn exactly as PEFT's ``random_pruning`` draws it (``torch.bernoulli`` of a tensor filled with
    the density), so with the same RNG state the DARE result equals
    ``peft.utils.merge_utils.prune(delta, 1 - p, "random", rescale=True)``.
    """
    check_fraction("drop_rate", drop_rate)
    if q is not None and q <= 0:
        raise ValueError(f"`q` must be > 0, got {q}.")
    density = 1.0 - drop_rate
    mask = torch.bernoulli(torch.full_like(delta, density), generator=generator)
    return delta * mask / (q if q is not None else density)


def _named_deltas(
    model: nn.Module, base: nn.Module | Mapping[str, Tensor], names: Sequence[str] | None
) -> dict[str, Tensor]:
    base_state = base.state_dict() if isinstance(base, nn.Module) else base
    params = dict(model.named_parameters())
    chosen = list(names) if names is not None else [n for n in params if n in base_state]
    deltas = {}
    for name in chosen:
        if name not in params or name not in base_state:
            raise ValueError(f"parameter {name!r} is missing from the fine-tuned model or from the base weights.")
        if params[name].shape != base_state[name].shape:
            raise ValueError(
                f"parameter {name!r}: fine-tuned shape {tuple(params[name].shape)} != base "
                f"{tuple(base_state[name].shape)}."
            )
        deltas[name] = params[name].detach() - base_state[name].to(params[name])
    if not deltas:
        raise ValueError("DARE found no parameter shared by the fine-tuned model and the base weights.")
    return deltas


def output_change_score(inputs: Tensor, reference: nn.Module) -> Callable[[nn.Module], float]:
    """Unlabeled DAREx-q proxy: ``-‖f(x) - f_ft(x)‖² / n`` (higher = the pruned model's outputs changed less)."""
    with torch.no_grad():
        target = reference(inputs)

    def score(model: nn.Module) -> float:
        with torch.no_grad():
            return -float(((model(inputs) - target) ** 2).sum() / inputs.shape[0])

    return score


@register(
    "dare",
    fidelity="paper-equation",
    verified_by="tests/common_regs/sparsity/test_dare.py::test_mean_and_variance_of_rescaled_delta",
    kind="post_hoc",
    paper="Deng, Zhong, Agrawal, Subramaniam, Chen, Wu, Mirzasoleiman, DARE the Extreme: Revisiting "
    "Delta-Parameter Pruning For Fine-Tuned Models, ICLR 2025, arXiv:2410.09344",
    seed=62,
)
class DARE(ConfigFromKeys):
    r"""Delta-parameter pruning of a fine-tuned model: drop each δ = θ_ft - θ_pre with prob. p, rescale the rest.

    DARE (Yu et al. 2024) rescales the kept deltas by ``1/(1-p)`` so the pruned delta is unbiased; DAREx-q
    replaces the factor by ``1/q`` with q chosen on data (:meth:`select_q`: labeled validation metric, or the
    unlabeled output-change proxy :func:`output_change_score`), which matters at extreme p (0.99). Use to compress
    or merge fine-tunes; pair with :class:`DeltaL2` (AdamR-L2) during fine-tuning to shrink δ first.

    Reference:
        Deng et al., "DARE the Extreme: Revisiting Delta-Parameter Pruning For Fine-Tuned Models", ICLR 2025,
        arXiv:2410.09344. DARE: Yu, Yu, Yu, Huang, Li, "Language Models are Super Mario", ICML 2024,
        arXiv:2311.03099. Mask drawn as PEFT's ``merge_utils.random_pruning``. **Equation unconfirmed** for the
        DAREx-q objective details (global q only; the paper's per-layer q is not provided).

    Math:
        .. math::
            \theta = \theta_{pre} + \frac{m \odot \delta}{c}, \quad m \sim \mathrm{Bernoulli}(1-p),\quad
            c = 1 - p \;(\text{DARE}) \text{ or } q \;(\text{DAREx-q}),\quad
            \mathbb{E}[m\odot\delta/c] = \tfrac{1-p}{c}\,\delta

    Args:
        drop_rate: p. Default 0.9 (paper sweeps 0.9-0.99).
        q: DAREx-q rescale denominator; None = DARE's ``1 - p``. Default None.
        seed: seed of the Bernoulli masks. Default 0.
        targets: parameter names to prune; default every parameter present in the base weights.
    """

    config_keys: ClassVar[tuple[str, ...]] = ("drop_rate", "q", "seed", "targets")

    def __init__(
        self, drop_rate: float = 0.9, q: float | None = None, seed: int = 0, targets: Sequence[str] | None = None
    ) -> None:
        self.drop_rate = check_fraction("drop_rate", drop_rate)
        if q is not None and q <= 0:
            raise ValueError(f"`q` must be > 0, got {q}.")
        self.q, self.seed = q, seed
        self.targets = list(targets) if targets is not None else None

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"q": 2.0, "targets": ["0.weight"]}

    @torch.no_grad()
    def apply(self, model: nn.Module, base: nn.Module | Mapping[str, Tensor], q: float | None = None) -> nn.Module:
        """Replace each target parameter of the fine-tuned ``model`` by ``θ_pre + DARE(δ)`` in place."""
        deltas = _named_deltas(model, base, self.targets)
        generator = torch.Generator().manual_seed(self.seed)
        params = dict(model.named_parameters())
        for name, delta in deltas.items():
            pruned = dare_delta(delta.cpu(), self.drop_rate, q=q if q is not None else self.q, generator=generator)
            params[name].copy_(params[name] - delta + pruned.to(delta))
        return model

    def select_q(
        self,
        model: nn.Module,
        base: nn.Module | Mapping[str, Tensor],
        score: Callable[[nn.Module], float],
        grid: Iterable[float],
    ) -> tuple[float, dict[float, float]]:
        """DAREx-q: the q of ``grid`` maximizing ``score(pruned model)``; returns (best q, all scores).

        ``model`` is not modified (each candidate prunes a deep copy with the same masks).
        """
        scores: dict[float, float] = {}
        for q in grid:
            candidate = self.apply(copy.deepcopy(model), base, q=q)
            scores[float(q)] = float(score(candidate))
        if not scores:
            raise ValueError("`grid` is empty; pass candidate q values, e.g. [0.1 * (1 - p) ... 1 - p].")
        best = max(scores, key=scores.__getitem__)
        logger.info("DAREx-q: best q=%.4g over %d candidates", best, len(scores))
        return best, scores


@register(
    "darex_l2",
    fidelity="reconstruction",
    verified_by="tests/common_regs/sparsity/test_dare.py::test_delta_l2_with_zero_task_gradient_returns_to_anchor",
    kind="loss",
    paper="Deng et al., DARE the Extreme: Revisiting Delta-Parameter Pruning For Fine-Tuned Models, ICLR 2025, "
    "arXiv:2410.09344 (AdamR-L2)",
    seed=62,
)
class DeltaL2(ConfigFromKeys):
    r"""``Σ ‖θ - θ_pre‖²``: the L2 pull toward the pretrained weights used (as AdamR-L2) before DARE.

    Shrinks the deltas' mean and variance during fine-tuning so delta pruning afterwards loses less. The anchor
    θ_pre is captured from the model on the first call unless given.

    Reference:
        Deng et al., ICLR 2025, arXiv:2410.09344 (AdamR-L2). **Equation unconfirmed**: the paper applies the
        regularization inside the optimizer (AdamR, decoupled like AdamW); here it is a coupled loss term.

    Math:
        .. math:: L_{reg} = \sum_i \lVert \theta_i - \theta_{pre,i} \rVert_2^2

    Args:
        weight: multiplier used by ``RegHooks``. Default 1e-2 (regkit default).
        anchor: ``{name: θ_pre}``; default: the model's parameters at the first call.
    """

    config_keys: ClassVar[tuple[str, ...]] = ("weight",)
    runtime_keys: ClassVar[tuple[str, ...]] = ("anchor",)

    def __init__(self, weight: float = 1e-2, anchor: Mapping[str, Tensor] | None = None) -> None:
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, got {weight}.")
        self.weight = float(weight)
        self.anchor = {k: v.detach().clone() for k, v in anchor.items()} if anchor is not None else None

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"anchor": {"0.weight": torch.ones(2, 3)}}

    def __call__(self, ctx: TrainContext) -> Tensor:
        params = dict(ctx.model.named_parameters())
        if self.anchor is None:
            self.anchor = {k: v.detach().clone() for k, v in params.items()}
        terms = [((params[k] - v.to(params[k])) ** 2).sum() for k, v in self.anchor.items() if k in params]
        if not terms:
            raise ValueError("DeltaL2: no anchor name matches a model parameter.")
        return torch.stack(terms).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.anchor = state["anchor"]
