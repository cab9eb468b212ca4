"""DistillLoss: the loss term that consumes the soft targets a TargetProvider put in ``ctx.extras["targets"]``."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor

from common_regs._batch import logits_of
from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.distill._utils import check_positive, soft_cross_entropy, tempered_kl
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["DistillLoss"]

_MODES = ("soft_ce", "kl", "mse")


@register(
    "distill_loss",
    fidelity="paper-equation",
    verified_by="tests/common_regs/distill/test_distill_loss.py::test_soft_ce_and_mse_closed_forms",
    kind="loss",
    paper="Hinton, Vinyals, Dean, Distilling the Knowledge in a Neural Network, NIPS DL Workshop 2014, "
    "arXiv:1503.02531",
)
class DistillLoss(ConfigFromKeys):
    r"""Student loss against provider targets: soft cross-entropy, tempered KL or representation MSE.

    ``RegHooks`` stores the first target provider's output in ``ctx.extras["targets"]``; this term compares the
    model outputs (``ctx.outputs`` or ``ctx.outputs["logits"]``) with it. ``soft_ce`` expects probability targets
    (PS-KD, random teachers), ``kl`` expects teacher *scores* (ensemble teachers, logits), ``mse`` representations.

    Reference:
        Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015, arXiv:1503.02531 (soft
        targets, temperature). The generic wrapper itself is regkit's.

    Math:
        .. math::
            L_{soft\_ce} = -\tfrac1B\sum_i\sum_k q_{ik}\log\mathrm{softmax}(z_i/T)_k,\quad
            L_{kl} = \tfrac1B\sum_i \mathrm{KL}(\mathrm{softmax}(t_i/T)\,\|\,\mathrm{softmax}(z_i/T)),\quad
            L_{mse} = \tfrac1B\sum_i \lVert z_i - t_i\rVert^2

    Args:
        mode: one of ``"soft_ce"``, ``"kl"``, ``"mse"``. Default "soft_ce" (convention).
        temperature: T. Default 1.0 (source: Geng et al. 2024 ensemble KD uses T = 1).
        weight: multiplier used by ``RegHooks``. Default 1.0 (convention).

    Shape:
        outputs (B, C) (or (Q, C) candidate scores), targets same shape.

    Returns:
        scalar loss.

    Note:
        Targets are detached. The loss is not multiplied by T² (scale the weight for that).

    Example:
        >>> import torch
        >>> from common_regs.api import TrainContext
        >>> z = torch.tensor([[1.0, 2.0]])
        >>> ctx = TrainContext(model=torch.nn.Identity(), outputs=z, extras={"targets": z + 3.0})
        >>> float(DistillLoss("kl")(ctx))
        0.0
    """

    config_keys: ClassVar[tuple[str, ...]] = ("mode", "temperature", "weight")
    citation: ClassVar[str] = (
        "@article{hinton2015distilling, title={Distilling the Knowledge in a Neural Network}, author={Hinton, "
        "Geoffrey and Vinyals, Oriol and Dean, Jeff}, journal={arXiv:1503.02531}, year={2015}}"
    )

    def __init__(
        self, mode: Literal["soft_ce", "kl", "mse"] = "soft_ce", temperature: float = 1.0, weight: float = 1.0
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}, got {mode!r}.")
        self.mode = mode
        self.temperature = check_positive("temperature", temperature)
        self.weight = check_positive("weight", weight, allow_zero=True)

    def compute(self, outputs: Tensor, targets: Tensor) -> Tensor:
        targets = targets.detach().to(outputs.dtype)
        if self.mode == "soft_ce":
            return soft_cross_entropy(outputs, targets, self.temperature)
        if self.mode == "kl":
            return tempered_kl(outputs, targets, self.temperature)
        return F.mse_loss(outputs, targets, reduction="sum") / outputs.shape[0]

    def __call__(self, ctx: TrainContext) -> Tensor:
        if "targets" not in ctx.extras:
            raise ValueError("`DistillLoss` needs `ctx.extras['targets']`: add a target provider to the hooks.")
        return self.compute(logits_of(ctx), ctx.extras["targets"])
