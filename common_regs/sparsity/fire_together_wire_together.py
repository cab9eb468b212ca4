"""Fire Together Wire Together (FTWT): dynamic channel pruning with self-supervised mask predictors."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register
from common_regs.sparsity._masks import check_fraction

logger = logging.getLogger(__name__)

__all__ = ["FTWTLayer", "FireTogetherWireTogether", "channel_heat", "ftwt_mask_loss", "heat_mass_targets"]

# The official code's tolerance on the cumulative heat share (utils/layers.py, ``delta = 1e-5``).
_MASS_TOLERANCE = 1e-5


def channel_heat(activation: Tensor) -> Tensor:
    """Per-sample, per-channel heat (B, C): the global max of ``|A_f|`` over the spatial positions.

    Official ``get_fmap_criteria``: ``max_pool2d(|x|, kernel=H×W)``. An activation (B, C) without spatial axes is
    its own heat ``|A|``.
    """
    activation = activation.detach().abs()
    return activation.flatten(2).amax(-1) if activation.ndim > 2 else activation


def heat_mass_targets(heat: Tensor, mass: float) -> Tensor:
    """Binary ground-truth masks (B, C) from per-sample heat, the official ``get_gt_mask_ratio`` rule.

    Per sample the heat is normalized to shares ``p_f = h_f / Σ h``. For ``mass`` r < 1 the channels are sorted by
    share (descending) and a channel is switched off when the cumulative share up to and including it exceeds
    ``r + 1e-5``: the kept channels are the largest prefix whose mass stays within r (the channel that crosses r is
    *not* kept). For r = 1 only channels with share ≤ 1e-5 are off (dead channels). A sample whose heat is all zero
    keeps every channel, as the official division 0/0 = NaN does.
    """
    total = heat.sum(1, keepdim=True)
    share = heat / total.clamp_min(torch.finfo(heat.dtype).tiny)
    if mass == 1.0:
        off = share <= _MASS_TOLERANCE
    else:
        sorted_share, order = torch.sort(share, dim=1, descending=True, stable=True)
        off_sorted = sorted_share.cumsum(1) - mass > _MASS_TOLERANCE
        off = torch.zeros_like(off_sorted).scatter_(1, order, off_sorted)
    off &= total > 0
    return (~off).to(heat.dtype)


def ftwt_mask_loss(logits: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
    """Official ``compute_mask_loss_per_input``: per layer Σ_f mean_b BCE(logit, target), averaged over layers."""
    per_layer = [
        F.binary_cross_entropy_with_logits(logit, target, reduction="none").mean(0).sum()
        for logit, target in zip(logits, targets, strict=True)
    ]
    return torch.stack(per_layer).mean()


class FTWTLayer(nn.Module):
    """Wraps a block (conv/linear + norm + activation) with a mask predictor fed by the block's *input*.

    Official ``ConvWithMask`` + ``MaskPredictorNN`` (default flags): the predictor is global average pooling of the
    detached input (the previous layer's activation), a softmax over its channels and a 1×1 convolution (here
    ``nn.Linear``) with bias, one logit per output channel. In training *and* eval the block's output channels are
    multiplied by the binary prediction ``1[σ(logit) > ½]`` (no gradient flows through it); in training the logits
    and the ground-truth masks of the unmasked output (:func:`heat_mass_targets`) are kept for
    :class:`FireTogetherWireTogether`.

    Args:
        layer: the wrapped block; its output has ``out_channels`` channels on dim 1.
        in_channels: channels of the block's input (the previous layer's activation).
        out_channels: channels of the block's output.
        mass: r, the heat-mass fraction defining the targets, in (0, 1]. Default 1.0 (official ``--mthresh``
            default and ``job_dynamic.sh``; the paper sweeps r per FLOPs budget).
    """

    def __init__(self, layer: nn.Module, in_channels: int, out_channels: int, mass: float = 1.0) -> None:
        super().__init__()
        self.layer = layer
        self.predictor = nn.Linear(in_channels, out_channels)
        self.mass = check_fraction("mass", mass, low=0.0, high=1.0, closed_high=True)
        self.last_logits: Tensor | None = None
        self.last_targets: Tensor | None = None
        self.last_active_fraction: float = 1.0

    def predict(self, x: Tensor) -> Tensor:
        """Mask logits (B, out_channels): ``Linear(softmax(GAP(x)))`` on the detached input (decoupled mode)."""
        pooled = x.detach().flatten(2).mean(-1) if x.ndim > 2 else x.detach()
        return self.predictor(torch.softmax(pooled, dim=1))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.predict(x)
        out = self.layer(x)
        gate = (logits.detach() > 0).to(out.dtype)  # σ(logit) > ½
        if self.training:
            self.last_logits = logits
            self.last_targets = heat_mass_targets(channel_heat(out), self.mass)
        self.last_active_fraction = float(gate.mean())
        return out * gate.view(*gate.shape, *([1] * (out.ndim - 2)))


@register(
    "ftwt",
    fidelity="official-code",
    verified_by="tests/common_regs/sparsity/test_fire_together_wire_together.py",
    kind="loss",
    paper="Elkerdawy, Elhoushi, Zhang, Ray, Fire Together Wire Together: A Dynamic Pruning Approach with "
    "Self-Supervised Mask Prediction, CVPR 2022, arXiv:2110.08232",
    seed=7,
)
class FireTogetherWireTogether(ConfigFromKeys):
    r"""Self-supervised mask-prediction loss: BCE between predicted and heat-mass ground-truth channel masks.

    Averages, over every :class:`FTWTLayer` of the model, the per-channel binary cross-entropy between the predictor
    logits and the ground-truth masks of the last training forward pass. The task loss and this loss are decoupled
    (predictors see detached inputs; the task loss reaches no predictor); ``mass`` (r) sets the expected FLOPs
    before training. Give the predictors their own optimizer group (official: SGD, lr 0.1, no weight decay).

    Reference:
        Elkerdawy et al., "Fire Together Wire Together: A Dynamic Pruning Approach with Self-Supervised Mask
        Prediction", CVPR 2022, arXiv:2110.08232. Official code github.com/selkerdawy/FTWT: ``utils/layers.py``
        (``get_fmap_criteria``, ``get_gt_mask_ratio``, ``apply_predictor``, ``MaskPredictorNN``,
        ``ConvWithMask``), ``utils/utils.py`` (``compute_mask_loss_per_input``), ``cifar.py`` (``train``: mask
        weight 1 before ``cooldown·epochs``, 0 after; ``--cooldown 0.5``, ``--softmax 1``, ``--mode decoupled``).

    Math:
        .. math::
            h_{b,f} = \max_{s} |A_{b,f,s}|,\quad p_{b,f} = h_{b,f} / \textstyle\sum_{f'} h_{b,f'},\quad
            y_{b,f} = 1\big[\textstyle\sum_{f':\,p_{b,f'} \ge p_{b,f}} p_{b,f'} \le r + 10^{-5}\big]

            L = \frac{1}{|\mathcal L|}\sum_{l\in\mathcal L} \sum_f \frac{1}{B}\sum_b
                \mathrm{BCE}(z^{l}_{b,f}, y^{l}_{b,f}),\qquad z^{l} = W_l\,\mathrm{softmax}(\mathrm{GAP}(x^{l})) + c_l

        (r = 1: y = 1[p > 10⁻⁵]); ``r`` = ``FTWTLayer.mass``; L = 0 from epoch ``cooldown_epoch`` on.

    Args:
        weight: multiplier applied by ``RegHooks``. Default 1.0 (official mask-loss weight before cooldown).
        cooldown_epoch: first epoch (``TrainContext.epoch``) at which the loss is 0 and the predictors stop
            learning; ``None`` never. Default None (official: ``int(0.5 · epochs)``; set it from your schedule).

    Shape:
        logits and targets of each layer: (B, C_l).

    Returns:
        the scalar loss (0-dim tensor).

    Note:
        Heat is the per-channel spatial max, not an ℓ1 sum. Ties in the sort follow a stable order. The official
        code also sets the predictors' learning rate to 0 after cooldown; with this loss at 0 their gradient is
        0, but a momentum optimizer still moves them unless their group's lr is set to 0 as well.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from common_regs.api import TrainContext
        >>> model = nn.Sequential(FTWTLayer(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), 4, 3, mass=0.9))
        >>> _ = model(torch.randn(8, 4))
        >>> FireTogetherWireTogether()(TrainContext(model=model)).item() > 0
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("weight", "cooldown_epoch")

    def __init__(self, weight: float = 1.0, cooldown_epoch: int | None = None) -> None:
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, got {weight}.")
        if cooldown_epoch is not None and (isinstance(cooldown_epoch, bool) or cooldown_epoch < 0):
            raise ValueError(f"`cooldown_epoch` must be None or an int >= 0, got {cooldown_epoch!r}.")
        self.weight = float(weight)
        self.cooldown_epoch = cooldown_epoch

    def __call__(self, ctx: TrainContext) -> Tensor:
        layers = [m for m in ctx.model.modules() if isinstance(m, FTWTLayer) and m.last_logits is not None]
        if not layers:
            raise ValueError("FireTogetherWireTogether found no FTWTLayer with predictions from this forward pass.")
        loss = ftwt_mask_loss([m.last_logits for m in layers], [m.last_targets for m in layers])  # type: ignore[misc]
        if self.cooldown_epoch is not None and ctx.epoch >= self.cooldown_epoch:
            return loss * 0.0  # keeps the graph (and the device) while contributing nothing
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        del state
