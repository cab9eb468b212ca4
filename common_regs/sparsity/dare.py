"""DARE / DAREx: random delta-parameter pruning with rescaling, the DAREx-q rescale search and AdamR (DAREx-L2)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys
from common_regs.registry import register
from common_regs.sparsity._masks import check_fraction

logger = logging.getLogger(__name__)

__all__ = ["DARE", "AdamR", "dare_delta", "output_change_score"]


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
    or merge fine-tunes; fine-tune with :class:`AdamR` first (DAREx-L2) to shrink δ.

    Reference:
        Deng et al., "DARE the Extreme: Revisiting Delta-Parameter Pruning For Fine-Tuned Models", ICLR 2025,
        arXiv:2410.09344. DARE: Yu, Yu, Yu, Huang, Li, "Language Models are Super Mario", ICML 2024,
        arXiv:2311.03099. Mask drawn as PEFT's ``merge_utils.random_pruning``. DAREx-q: global q as in the official
        github.com/vengdeng/DAREx ``find_q_encoder.py`` (``rescale_v`` divides the kept deltas by q, the best
        validation score wins); that script refines its grid coarse-to-fine and averages the output-change score
        over 4 mask seeds, here the caller passes the grid and one mask seed is used. The per-layer analytical q
        (``utils/analyticalq.py``) is not provided.

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
    fidelity="official-code",
    verified_by="tests/common_regs/sparsity/test_dare.py::test_adamr_two_steps_match_hand_computed_official_update",
    kind="solver",
    paper="Deng et al., DARE the Extreme: Revisiting Delta-Parameter Pruning For Fine-Tuned Models, ICLR 2025, "
    "arXiv:2410.09344 (AdamR, for DAREx-L2)",
    seed=62,
)
class AdamR(ConfigFromKeys, torch.optim.Optimizer):
    r"""AdamR: Adam with a decoupled, stable-scaled decay of the delta ``θ - θ_pre`` (DAREx-L2's fine-tuner).

    Fine-tune with this optimizer in place of Adam(W) so that the deltas stay small in mean and variance, then prune
    them with :class:`DARE`. The decay is not a loss term: as in AdamW it is applied to the weights directly, and as
    in AdamS (Xie et al., "On the overlooked pitfalls of weight decay", "stable weight decay") it is divided by the
    square root of the mean, over all updated entries of all groups, of Adam's bias-corrected second moment. It is
    applied before the Adam step, to the weights as they were before that step.

    Reference:
        Deng et al., "DARE the Extreme: Revisiting Delta-Parameter Pruning For Fine-Tuned Models", ICLR 2025,
        arXiv:2410.09344. Official code: github.com/vengdeng/DAREx, ``AdamR.py``, ``AdamR.step`` (commit deb69f8),
        read and re-written here from its update rule; defaults are the code's (``weight_decay=1e-4``,
        ``lr=1e-3``, betas (0.9, 0.999), eps 1e-8, ``L1=False``). The coupled loss ``mean((θ - θ_pre)²)`` left
        commented out in the repository's ``utils/customized_trainers.py`` is not the method and is not provided.

    Math:
        .. math::
            m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad
            \hat v_t = v_t / (1-\beta_2^t) \;(\text{AMSGrad: running max of } v_t, \text{ then } /(1-\beta_2^t))

            \bar v = \tfrac{1}{N}\textstyle\sum_{\text{entries with a gradient}} \hat v_t
            \;(\sqrt{\bar v} := 1 \text{ if } \bar v = 0)

            \theta \leftarrow \theta - \frac{\lambda\,\eta}{\sqrt{\bar v}}\,r(\theta - \theta_{pre}),\quad
            r(d) = d \;(\text{L2}) \text{ or } \operatorname{sign}(d) \;(\text{L1})

            \theta \leftarrow \theta - \frac{\eta}{1-\beta_1^t}\,\frac{m_t}{\sqrt{\hat v_t} + \epsilon}

    Args:
        params: parameters (or parameter groups) to optimize, as for ``torch.optim.Adam``.
        anchor: θ_pre, one tensor per parameter in the order the groups list them; default: a copy of the
            parameters at construction (build the optimizer on the pretrained model before fine-tuning).
        lr: η. Default 1e-3.
        betas: (β1, β2). Default (0.9, 0.999).
        eps: ε. Default 1e-8.
        weight_decay: λ, the delta-regularization strength. Default 1e-4 (official default).
        amsgrad: AMSGrad second moment. Default False.
        l1: decay by ``sign(θ - θ_pre)`` (the code's ``L1`` switch, DAREx-L1) instead of ``θ - θ_pre``. Default False.

    Note:
        Parameters without a gradient at a step are neither decayed nor counted in the mean (as in the code).
        θ_pre is kept in the optimizer state (``state[p]["anchor"]``), so it is saved with ``state_dict``.
        Registered as a ``solver``: build it as the training optimizer (the ``optimizer`` of ``RegHooks``), not a
        hook.
    """

    config_keys: ClassVar[tuple[str, ...]] = ("lr", "betas", "eps", "weight_decay", "amsgrad", "l1")
    runtime_keys: ClassVar[tuple[str, ...]] = ("params", "anchor")

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        anchor: Sequence[Tensor] | None = None,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-4,
        amsgrad: bool = False,
        l1: bool = False,
    ) -> None:
        if lr < 0:
            raise ValueError(f"`lr` must be >= 0, got {lr}.")
        if eps < 0:
            raise ValueError(f"`eps` must be >= 0, got {eps}.")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"`betas` must be two values in [0, 1), got {betas}.")
        if weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}.")
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.weight_decay, self.amsgrad, self.l1 = float(weight_decay), bool(amsgrad), bool(l1)
        defaults = {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay,
                    "amsgrad": self.amsgrad, "l1": self.l1}
        super().__init__(params, defaults)
        held = [p for group in self.param_groups for p in group["params"]]
        anchors = [p.detach() for p in held] if anchor is None else list(anchor)
        if len(anchors) != len(held):
            raise ValueError(f"`anchor` must hold one tensor per parameter ({len(held)}), got {len(anchors)}.")
        for p, a in zip(held, anchors, strict=True):
            if a.shape != p.shape:
                raise ValueError(f"`anchor` tensor of shape {tuple(a.shape)} != parameter shape {tuple(p.shape)}.")
            self.state[p]["anchor"] = a.detach().to(p).clone()

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"params": [nn.Parameter(torch.ones(2, 3))], "anchor": [torch.zeros(2, 3)]}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One AdamR step; ``closure`` re-evaluates the loss, as for ``torch.optim.Adam``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        count, v_hat_sum = 0, 0.0
        v_hats: dict[Tensor, Tensor] = {}
        # First pass: moments of every parameter, so that the decay scale sees all groups' second moments.
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamR does not support sparse gradients.")
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                second = state["exp_avg_sq"]
                if group["amsgrad"]:
                    torch.maximum(state["max_exp_avg_sq"], second, out=state["max_exp_avg_sq"])
                    second = state["max_exp_avg_sq"]
                v_hats[p] = second / (1 - beta2 ** state["step"])
                count += p.numel()
                v_hat_sum += float(v_hats[p].sum())
        if count == 0:
            return loss
        scale = (v_hat_sum / count) ** 0.5 or 1.0  # the code's guard against an all-zero second moment
        for group in self.param_groups:
            beta1 = group["betas"][0]
            for p in group["params"]:
                if p not in v_hats:
                    continue
                state = self.state[p]
                if group["weight_decay"] != 0:
                    delta = p - state["anchor"]
                    decay = torch.sign(delta) if group["l1"] else delta
                    p.add_(decay, alpha=-group["weight_decay"] * group["lr"] / scale)
                step_size = group["lr"] / (1 - beta1 ** state["step"])
                p.addcdiv_(state["exp_avg"], v_hats[p].sqrt().add_(group["eps"]), value=-step_size)
        return loss
