"""Co-teaching: two networks each train on the small-loss samples selected by the other."""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs._batch import batch_labels
from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["CoTeaching", "co_teaching_forget_rate", "small_loss_indices"]


def co_teaching_forget_rate(noise_rate: float, epoch: int, gradual_epochs: int) -> float:
    """``R(e) = τ · min(e / T_k, 1)``: the fraction of large-loss samples dropped at epoch e."""
    return noise_rate * min(epoch / gradual_epochs, 1.0)


def small_loss_indices(losses: Tensor, forget_rate: float) -> Tensor:
    """Indices of the ``⌈(1 - R)·B⌉`` smallest losses (at least one)."""
    keep = max(1, math.ceil((1.0 - forget_rate) * losses.numel()))
    return torch.argsort(losses.detach())[:keep]


@register(
    "co_teaching",
    fidelity="paper-equation",
    verified_by="tests/common_regs/robust/test_co_teaching.py",
    kind="loss",
    paper="Han, Yao, Yu, Niu, Xu, Hu, Tsang, Sugiyama, Co-teaching: Robust Training of Deep Neural Networks with "
    "Extremely Noisy Labels, NeurIPS 2018, arXiv:1804.06872",
    seed=3,
)
class CoTeaching(ConfigFromKeys):
    r"""Cross-update of two peer networks on each other's small-loss samples (label-noise robust training).

    Small-loss samples are likely clean; letting each network pick them *for its peer* avoids confirming its own
    mistakes. The dropped fraction ramps to the noise rate τ over T_k epochs. The model's forward must return the
    two networks' logits ``(logits_a, logits_b)``. Used with nested dropout in "Nested Co-teaching" (seed #3).

    Reference:
        Han et al., "Co-teaching: Robust Training of Deep Neural Networks with Extremely Noisy Labels",
        NeurIPS 2018, arXiv:1804.06872 (Algorithm 1; R(T) = τ min(T/T_k, 1)). Used inside Chen, Shen, Hu, Suykens,
        TNNLS 2022, arXiv:2206.13140.

    Math:
        .. math::
            R_e = \tau\min(e/T_k, 1),\quad \mathcal S_a = \mathrm{argmin}_{|S| = \lceil(1-R_e)B\rceil}
            \sum_{i\in S}\ell(f_a(x_i), y_i),\quad
            L = \frac{1}{|\mathcal S_b|}\sum_{i\in\mathcal S_b}\ell(f_a(x_i), y_i)
              + \frac{1}{|\mathcal S_a|}\sum_{i\in\mathcal S_a}\ell(f_b(x_i), y_i)

        (network a learns from b's selection S_b and vice versa), τ ↔ ``noise_rate``, T_k ↔ ``gradual_epochs``.

    Args:
        noise_rate: τ, the (estimated) label-noise rate. Default 0.2 (source: paper, symmetric-20 % setting).
        gradual_epochs: T_k. Default 10 (source: paper, T_k = 10).

    Shape:
        ``ctx.outputs`` = (logits_a, logits_b), each (B, C); labels (B,).

    Returns:
        scalar sum of the two networks' losses on the peer-selected samples (use as the whole training loss).

    Note:
        With R = 0 the loss is CE(f_a) + CE(f_b). ``last_selection`` keeps the two index sets for inspection.

    Example:
        >>> import torch
        >>> from common_regs.api import TrainContext
        >>> term = CoTeaching(noise_rate=0.5, gradual_epochs=1)
        >>> a = torch.tensor([[4.0, 0.0], [0.0, 4.0]]); b = a.clone()
        >>> ctx = TrainContext(model=torch.nn.Identity(), batch=(None, torch.tensor([0, 0])), outputs=(a, b), epoch=1)
        >>> loss = term(ctx)
        >>> [s.tolist() for s in term.last_selection]
        [[0], [0]]
    """

    config_keys: ClassVar[tuple[str, ...]] = ("noise_rate", "gradual_epochs")
    citation: ClassVar[str] = (
        "@inproceedings{han2018coteaching, title={Co-teaching: Robust Training of Deep Neural Networks with "
        "Extremely Noisy Labels}, author={Han, Bo and Yao, Quanming and Yu, Xingrui and Niu, Gang and Xu, Miao and "
        "Hu, Weihua and Tsang, Ivor and Sugiyama, Masashi}, booktitle={NeurIPS}, year={2018}}"
    )

    def __init__(self, noise_rate: float = 0.2, gradual_epochs: int = 10) -> None:
        if not 0.0 <= noise_rate < 1.0:
            raise ValueError(f"`noise_rate` must be in [0, 1), got {noise_rate}.")
        if isinstance(gradual_epochs, bool) or not isinstance(gradual_epochs, int) or gradual_epochs < 1:
            raise ValueError(f"`gradual_epochs` must be a positive integer, got {gradual_epochs!r}.")
        self.noise_rate, self.gradual_epochs = float(noise_rate), gradual_epochs
        self.last_selection: tuple[Tensor, Tensor] | None = None

    def forget_rate(self, epoch: int) -> float:
        return co_teaching_forget_rate(self.noise_rate, epoch, self.gradual_epochs)

    def __call__(self, ctx: TrainContext) -> Tensor:
        outputs = ctx.outputs
        if not (isinstance(outputs, (tuple, list)) and len(outputs) == 2):
            raise ValueError("`CoTeaching` needs `ctx.outputs` = (logits_a, logits_b) from the two peer networks.")
        logits_a, logits_b = outputs
        labels = batch_labels(ctx)
        loss_a = F.cross_entropy(logits_a, labels, reduction="none")
        loss_b = F.cross_entropy(logits_b, labels, reduction="none")
        rate = self.forget_rate(ctx.epoch)
        select_a, select_b = small_loss_indices(loss_a, rate), small_loss_indices(loss_b, rate)
        self.last_selection = (select_a, select_b)
        return loss_a[select_b].mean() + loss_b[select_a].mean()
