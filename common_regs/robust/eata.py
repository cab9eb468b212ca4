"""EATA: test-time entropy minimisation on reliable, non-redundant samples, with a Fisher anti-forgetting term."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs._batch import logits_of
from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["EATA", "configure_norm_adaptation", "eata_selection", "fisher_diagonal", "softmax_entropy"]


def softmax_entropy(logits: Tensor) -> Tensor:
    """Per-sample entropy ``-Σ_k p_k log p_k`` of ``softmax(logits)``."""
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


def eata_selection(
    logits: Tensor, entropy_margin: float, redundancy_margin: float, mean_probs: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Masks (reliable, reliable & non-redundant): ``E < E₀`` and ``|cos(p, p̄)| < ε`` (p̄ None: all pass)."""
    entropy = softmax_entropy(logits.detach())
    reliable = entropy < entropy_margin
    if mean_probs is None:
        return reliable, reliable
    cosine = F.cosine_similarity(mean_probs[None].to(logits), logits.detach().softmax(-1), dim=1)
    return reliable, reliable & (cosine.abs() < redundancy_margin)


def fisher_diagonal(
    model: nn.Module, batches: Iterable[Tensor], parameters: Mapping[str, Tensor] | None = None
) -> dict[str, tuple[Tensor, Tensor]]:
    """Diagonal Fisher ``F_i = mean_batches (∂ L / ∂θ_i)²`` of the pseudo-label CE, with the anchor θ⁰.

    ``L`` is the cross-entropy of the model's own argmax predictions (EATA computes it on test samples before
    adaptation). Returns ``{name: (F, θ⁰)}`` for ``parameters`` (default: the trainable ones).
    """
    params = (
        dict(parameters) if parameters is not None else {n: p for n, p in model.named_parameters() if p.requires_grad}
    )
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    count = 0
    for x in batches:
        model.zero_grad(set_to_none=True)
        logits = model(x)
        F.cross_entropy(logits, logits.argmax(1)).backward()
        for name, p in params.items():
            if p.grad is not None:
                sums[name] += p.grad.detach() ** 2
        count += 1
    if count == 0:
        raise ValueError("`batches` is empty: the Fisher needs at least one batch.")
    model.zero_grad(set_to_none=True)
    return {name: (total / count, params[name].detach().clone()) for name, total in sums.items()}


def configure_norm_adaptation(model: nn.Module) -> list[nn.Parameter]:
    """Train only the affine parameters of normalisation layers, using batch statistics (EATA/Tent setting)."""
    model.train()
    model.requires_grad_(False)
    chosen: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats, module.running_mean, module.running_var = False, None, None
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
            for p in (module.weight, module.bias):
                if p is not None:
                    p.requires_grad_(True)
                    chosen.append(p)
    if not chosen:
        raise ValueError("the model has no affine normalisation layer to adapt.")
    return chosen


@register(
    "eata",
    fidelity="official-code",
    verified_by="tests/common_regs/robust/test_eata.py",
    kind="loss",
    paper="Niu, Wu, Zhang, Chen, Zheng, Zhao, Tan, Efficient Test-Time Adaptation without Forgetting, ICML 2022, "
    "arXiv:2204.02610",
    seed=51,
)
class EATA(ConfigFromKeys):
    r"""Test-time adaptation loss: weighted entropy of reliable, non-redundant samples + Fisher-weighted anchor.

    Only low-entropy (reliable) samples whose prediction differs from the running mean prediction (non-redundant)
    are used, weighted by exp(E₀ - E) so more confident ones count more; a diagonal-Fisher (EWC) term keeps the
    adapted parameters near the source model. Adapt only normalisation affines (:func:`configure_norm_adaptation`).

    Reference:
        Niu et al., "Efficient Test-Time Adaptation without Forgetting", ICML 2022, arXiv:2204.02610 (Eq. 3-9);
        per the regkit reference notes on the official ``mr-eggplant/EATA`` ``eata.py`` (weight
        ``1/exp(E - E₀)``, mean over selected samples, p̄ EMA 0.9, EWC ``Σ F (θ - θ⁰)²``).

    Math:
        .. math::
            S = \{i: E_i < E_0,\ |\cos(p_i, \bar p)| < \varepsilon\},\quad
            L = \frac{1}{|S|}\sum_{i\in S} e^{E_0 - E_i} E_i + \beta\sum_j F_j(\theta_j - \theta^0_j)^2,\quad
            \bar p \leftarrow 0.9\,\bar p + 0.1\,\mathrm{mean}_{i\in S}\, p_i

        E_i the softmax entropy, E₀ ↔ ``entropy_margin`` (None → 0.4 ln C), ε ↔ ``redundancy_margin``,
        β ↔ ``fisher_weight``. With S empty the entropy part is 0 (no adaptation signal).

    Args:
        num_classes: C (sets the default margin).
        entropy_margin: E₀; None = 0.4·ln C. Default None (source: paper; the code default is ln(1000)/2 - 1).
        redundancy_margin: ε. Default 0.05 (source: official ``--d_margin``).
        fisher_weight: β. Default 2000.0 (source: official ``--fisher_alpha``).
        fishers: ``{name: (F, θ⁰)}`` from :func:`fisher_diagonal`; None = no anti-forgetting term. Default None.

    Shape:
        logits (B, C).

    Returns:
        scalar loss; ``last_selected`` holds the boolean selection mask.

    Note:
        p̄ is updated with the selected predictions only, after the selection. Parameters named in ``fishers``
        are looked up in ``ctx.model.named_parameters()``.

    Example:
        >>> import torch
        >>> from common_regs.api import TrainContext
        >>> eata = EATA(num_classes=3, entropy_margin=0.5)
        >>> logits = torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # confident, uniform
        >>> _ = eata(TrainContext(model=torch.nn.Identity(), outputs=logits))
        >>> eata.last_selected.tolist()
        [True, False]
    """

    config_keys: ClassVar[tuple[str, ...]] = ("num_classes", "entropy_margin", "redundancy_margin", "fisher_weight")
    runtime_keys: ClassVar[tuple[str, ...]] = ("fishers",)
    citation: ClassVar[str] = (
        "@inproceedings{niu2022eata, title={Efficient Test-Time Model Adaptation without Forgetting}, author={Niu, "
        "Shuaicheng and Wu, Jiaxiang and Zhang, Yifan and Chen, Yaofo and Zheng, Shijian and Zhao, Peilin and Tan, "
        "Mingkui}, booktitle={ICML}, year={2022}}"
    )

    def __init__(
        self,
        num_classes: int,
        entropy_margin: float | None = None,
        redundancy_margin: float = 0.05,
        fisher_weight: float = 2000.0,
        fishers: Mapping[str, tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}.")
        self.num_classes = num_classes
        self.entropy_margin = 0.4 * math.log(num_classes) if entropy_margin is None else float(entropy_margin)
        if redundancy_margin <= 0:
            raise ValueError(f"`redundancy_margin` must be > 0, got {redundancy_margin}.")
        if fisher_weight < 0:
            raise ValueError(f"`fisher_weight` must be >= 0, got {fisher_weight}.")
        self.redundancy_margin, self.fisher_weight = float(redundancy_margin), float(fisher_weight)
        self.fishers = dict(fishers) if fishers is not None else None
        self.mean_probs: Tensor | None = None
        self.last_selected: Tensor | None = None

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"num_classes": 3, "fishers": {"weight": (torch.ones(2), torch.zeros(2))}}

    def entropy_loss(self, logits: Tensor) -> Tensor:
        _, selected = eata_selection(logits, self.entropy_margin, self.redundancy_margin, self.mean_probs)
        self.last_selected = selected
        if not bool(selected.any()):
            return logits.sum() * 0.0
        entropy = softmax_entropy(logits[selected])
        weight = torch.exp(self.entropy_margin - entropy.detach())
        probs = logits[selected].detach().softmax(-1).mean(0)
        self.mean_probs = probs if self.mean_probs is None else 0.9 * self.mean_probs + 0.1 * probs
        return (weight * entropy).mean()

    def anchor_loss(self, model: nn.Module) -> Tensor:
        if not self.fishers:
            return torch.zeros(())
        params = dict(model.named_parameters())
        missing = sorted(set(self.fishers) - set(params))
        if missing:
            raise ValueError(f"`fishers` names parameters the model lacks: {missing[:5]}.")
        terms = [
            (f.to(params[n]) * (params[n] - anchor.to(params[n])) ** 2).sum()
            for n, (f, anchor) in self.fishers.items()
        ]
        return self.fisher_weight * torch.stack(terms).sum()

    def __call__(self, ctx: TrainContext) -> Tensor:
        logits = logits_of(ctx)
        return self.entropy_loss(logits) + self.anchor_loss(ctx.model).to(logits)

    def state_dict(self) -> dict[str, Any]:
        return {"mean_probs": self.mean_probs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean_probs = state["mean_probs"]
