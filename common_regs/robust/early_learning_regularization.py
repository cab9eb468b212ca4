"""ELR: early-learning regularization against label noise (per-sample temporal-ensemble targets)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs._batch import logits_of
from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["EarlyLearningRegularization", "elr_penalty"]

_CLAMP = 1e-4


def elr_penalty(logits: Tensor, targets: Tensor) -> Tensor:
    """``mean_i log(1 - ⟨t_i, clamp(softmax(z_i), 1e-4, 1 - 1e-4)⟩)``; targets are treated as constants."""
    probs = F.softmax(logits, dim=-1).clamp(_CLAMP, 1.0 - _CLAMP)
    return torch.log(1.0 - (targets.detach().to(probs) * probs).sum(-1)).mean()


@register(
    "elr",
    fidelity="official-code",
    verified_by="tests/common_regs/robust/test_early_learning_regularization.py",
    kind="loss",
    paper="Liu, Niles-Weed, Razavian, Fernandez-Granda, Early-Learning Regularization Prevents Memorization of "
    "Noisy Labels, NeurIPS 2020, arXiv:2007.00151",
    seed=21,
)
class EarlyLearningRegularization(ConfigFromKeys):
    r"""Keeps predictions close to their own running average, so the early (clean) fit is not replaced by memorisation.

    With noisy labels, networks first fit the clean majority ("early learning") then memorise the wrong labels.
    ELR keeps a per-sample exponential moving average t_i of the model's predictions and adds
    λ·log(1 − ⟨t_i, p_i⟩), whose gradient pushes p_i toward t_i and cancels the memorisation gradient of the
    cross-entropy. Needs dataset indices (``ctx.sample_indices``); state is N × C.

    Reference:
        Liu, Niles-Weed, Razavian, Fernandez-Granda, "Early-Learning Regularization Prevents Memorization of Noisy
        Labels", NeurIPS 2020, arXiv:2007.00151 (Eq. 6-7). Per the regkit reference notes on the official
        ``shengliu66/ELR`` ``ELR/model/loss.py`` (clamp 1e-4, normalised EMA update, mean of the log).

    Math:
        .. math::
            \hat p_i = \mathrm{clamp}(\mathrm{softmax}(z_i), 10^{-4}, 1-10^{-4}),\quad
            t_i \leftarrow \beta t_i + (1-\beta)\,
            \frac{\mathrm{sg}(\hat p_i)}{\sum_k \mathrm{sg}(\hat p_{ik})},
            \quad R = \frac1B\sum_i \log\big(1 - \langle t_i, \hat p_i\rangle\big)

        with β ↔ ``beta``; the training loss is CE + λR (λ ↔ ``weight``). Without clamping,
        ∂R/∂z_ik = -p_ik (t_ik - ⟨t_i, p_i⟩) / (B (1 - ⟨t_i, p_i⟩)).

    Args:
        num_samples: dataset size N.
        num_classes: number of classes C.
        beta: EMA momentum β. Default 0.7 (source: official ``config_cifar10.json``).
        weight: λ. Default 3.0 (source: official ``config_cifar10.json``).

    Shape:
        logits (B, C), ``ctx.sample_indices`` (B,); targets store (N, C).

    Returns:
        scalar R (the term without λ; ``RegHooks`` applies ``weight``).

    Note:
        The target update happens inside the call, before the penalty (as in the official code). The penalty is
        finite at saturation thanks to the clamp. CIFAR-100 used β = 0.9, λ = 7 (reference notes, recall).

    Example:
        >>> import torch
        >>> from common_regs.api import TrainContext
        >>> elr = EarlyLearningRegularization(num_samples=10, num_classes=3)
        >>> ctx = TrainContext(model=torch.nn.Identity(), outputs=torch.zeros(2, 3),
        ...                    sample_indices=torch.tensor([4, 7]))
        >>> round(float(elr(ctx)), 4)  # t = 0.3 · uniform, ⟨t, p⟩ = 0.1
        -0.1054
    """

    config_keys: ClassVar[tuple[str, ...]] = ("num_samples", "num_classes", "beta", "weight")
    citation: ClassVar[str] = (
        "@inproceedings{liu2020early, title={Early-Learning Regularization Prevents Memorization of Noisy Labels}, "
        "author={Liu, Sheng and Niles-Weed, Jonathan and Razavian, Narges and Fernandez-Granda, Carlos}, "
        "booktitle={NeurIPS}, year={2020}}"
    )

    def __init__(self, num_samples: int, num_classes: int, beta: float = 0.7, weight: float = 3.0) -> None:
        for name, value in (("num_samples", num_samples), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"`beta` must be in [0, 1), got {beta}.")
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, got {weight}.")
        self.num_samples, self.num_classes, self.beta, self.weight = (
            num_samples,
            num_classes,
            float(beta),
            float(weight),
        )
        self.targets = torch.zeros(num_samples, num_classes)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"num_samples": 4, "num_classes": 3}

    def update(self, indices: Tensor, logits: Tensor) -> Tensor:
        """EMA update of the batch rows; returns the updated targets of the batch."""
        probs = F.softmax(logits.detach().float(), dim=-1).clamp(_CLAMP, 1.0 - _CLAMP).cpu()
        rows = indices.long().cpu()
        self.targets[rows] = self.beta * self.targets[rows] + (1 - self.beta) * probs / probs.sum(-1, keepdim=True)
        return self.targets[rows]

    def __call__(self, ctx: TrainContext) -> Tensor:
        if ctx.sample_indices is None:
            raise ValueError("`EarlyLearningRegularization` needs `ctx.sample_indices` (dataset row of each sample).")
        logits = logits_of(ctx)
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[-1]} classes, `num_classes` is {self.num_classes}.")
        indices = ctx.sample_indices
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_samples):
            raise ValueError(f"`sample_indices` must lie in [0, {self.num_samples}).")
        targets = self.update(indices, logits).to(logits.device)
        return elr_penalty(logits, targets)

    def state_dict(self) -> dict[str, Any]:
        return {"targets": self.targets.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.targets = state["targets"].clone()
