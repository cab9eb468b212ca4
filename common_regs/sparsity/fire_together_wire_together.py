"""Fire Together Wire Together (FTWT): dynamic channel pruning with self-supervised mask predictors."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register
from common_regs.sparsity._masks import check_fraction

logger = logging.getLogger(__name__)

__all__ = ["FTWTLayer", "FireTogetherWireTogether", "channel_heat", "heat_mass_targets"]


def channel_heat(activation: Tensor) -> Tensor:
    """Per-sample, per-channel heat ``‖A_f‖₁`` (B, C) of an activation (B, C) or (B, C, *spatial)."""
    return activation.detach().abs().flatten(2).sum(-1) if activation.ndim > 2 else activation.detach().abs()


def heat_mass_targets(heat: Tensor, mass: float) -> Tensor:
    """Binary targets (B, C): per sample, the top-k channels with the smallest k whose heat ≥ ``mass``·total heat."""
    sorted_heat, order = torch.sort(heat, dim=1, descending=True)
    cumulative = sorted_heat.cumsum(1)
    total = cumulative[:, -1:].clamp_min(torch.finfo(heat.dtype).tiny)
    # k = 1 + number of prefixes still below the mass threshold
    k = (cumulative < mass * total).sum(1, keepdim=True) + 1
    k = k.clamp(max=heat.shape[1])
    ranks = torch.arange(heat.shape[1], device=heat.device).expand_as(heat)
    return torch.zeros_like(heat).scatter_(1, order, (ranks < k).to(heat.dtype))


class FTWTLayer(nn.Module):
    """Wraps a layer (Linear/Conv + activation) with a mask predictor fed by the layer's *input*.

    The predictor (global max pool of the previous layer's activation → linear → one logit per output channel)
    learns, as a binary classifier, which channels of this layer will be among the top-k by heat. In training the
    full layer runs and the targets are recorded for :class:`FireTogetherWireTogether`; in eval mode the output
    channels whose predicted probability is ≤ ½ are zeroed (skipped).

    Args:
        layer: the wrapped block; its output has ``out_channels`` channels on dim 1.
        in_channels: channels of the block's input (the previous layer's activation).
        out_channels: channels of the block's output.
        mass: τ, heat-mass fraction defining the targets. Default 0.9 (regkit default; the paper sets τ per
            FLOPs budget).
    """

    def __init__(self, layer: nn.Module, in_channels: int, out_channels: int, mass: float = 0.9) -> None:
        super().__init__()
        self.layer = layer
        self.predictor = nn.Linear(in_channels, out_channels)
        self.mass = check_fraction("mass", mass, low=0.0, high=1.0, closed_high=True)
        self.last_logits: Tensor | None = None
        self.last_targets: Tensor | None = None
        self.last_active_fraction: float = 1.0

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.detach().flatten(2).amax(-1) if x.ndim > 2 else x.detach()  # decoupled: no task grad here
        logits = self.predictor(pooled)
        out = self.layer(x)
        if self.training:
            self.last_logits = logits
            self.last_targets = heat_mass_targets(channel_heat(out), self.mass)
            self.last_active_fraction = float(self.last_targets.mean())
            return out
        gate = (logits > 0).to(out.dtype)
        self.last_active_fraction = float(gate.mean())
        return out * gate.view(*gate.shape, *([1] * (out.ndim - 2)))


@register(
    "ftwt",
    fidelity="reconstruction",
    verified_by="tests/common_regs/sparsity/test_fire_together_wire_together.py",
    kind="loss",
    paper="Elkerdawy, Elhoushi, Zhang, Ray, Fire Together Wire Together: A Dynamic Pruning Approach with "
    "Self-Supervised Mask Prediction, CVPR 2022, arXiv:2110.08232",
    seed=7,
)
class FireTogetherWireTogether(ConfigFromKeys):
    r"""Self-supervised mask-prediction loss: BCE between predicted and heat-mass top-k channel masks.

    Sums, over every :class:`FTWTLayer` in the model, the binary cross-entropy between the predictor logits and
    the targets of the last forward pass. The task loss and this pruning loss are decoupled (predictors see
    detached inputs); ``mass`` (τ) sets the expected FLOPs before training.

    Reference:
        Elkerdawy et al., "Fire Together Wire Together: A Dynamic Pruning Approach with Self-Supervised Mask
        Prediction", CVPR 2022, arXiv:2110.08232. Confirmed from the abstract: predictor fed by the previous
        layer's activation, binary target "filter in the top-k", k per input from the heatmap mass, global-max-pool
        + 1×1 head, decoupled training. **Equation unconfirmed**: heat = ‖A_f‖₁ and the exact mass rule are
        reconstructed.

    Math:
        .. math::
            h_f = \lVert A_f \rVert_1, \quad k(x) = \min\{k : \textstyle\sum_{i \le k} h_{(i)} \ge
            \tau \sum_f h_f\}, \quad L = \sum_l \mathrm{BCE}(\mathrm{pred}_l, \mathrm{top}\text{-}k(h_l))

    Args:
        weight: multiplier applied by ``RegHooks``. Default 1.0.
    """

    config_keys: ClassVar[tuple[str, ...]] = ("weight",)

    def __init__(self, weight: float = 1.0) -> None:
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, got {weight}.")
        self.weight = float(weight)

    def __call__(self, ctx: TrainContext) -> Tensor:
        layers = [m for m in ctx.model.modules() if isinstance(m, FTWTLayer) and m.last_logits is not None]
        if not layers:
            raise ValueError("FireTogetherWireTogether found no FTWTLayer with predictions from this forward pass.")
        losses = [
            F.binary_cross_entropy_with_logits(m.last_logits, m.last_targets)  # type: ignore[arg-type]
            for m in layers
        ]
        return torch.stack(losses).sum()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        del state
