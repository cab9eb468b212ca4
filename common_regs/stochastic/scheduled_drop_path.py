"""ScheduledDropPath: per-sample drop-path whose probability ramps linearly over training (and with depth)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["DropPath", "ScheduledDropPath", "drop_path", "scheduled_drop_prob"]


def drop_path(x: Tensor, drop_prob: float, training: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """``x · b / (1 - p)`` with one ``b ~ Bernoulli(1 - p)`` per sample (constant over the non-batch dims)."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = torch.bernoulli(torch.full((x.shape[0],) + (1,) * (x.ndim - 1), keep), generator=generator)
    return x * mask.to(x) / keep


def scheduled_drop_prob(final_prob: float, step: int, total_steps: int, cell: int = 0, num_cells: int = 1) -> float:
    """``p = p_final · min(1, step / T) · (cell + 1) / num_cells``."""
    return final_prob * min(1.0, max(step, 0) / total_steps) * (cell + 1) / num_cells


class DropPath(nn.Module):
    """Stochastic depth on a residual branch: ``drop_path(x, self.drop_prob)`` in training, identity in eval.

    Same semantics as ``timm.layers.DropPath`` / ``torchvision.ops.StochasticDepth(mode="row")`` (neither loads
    beside torch 2.13 here); :class:`ScheduledDropPath` sets ``drop_prob`` every step.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"`drop_prob` must be in [0, 1), got {drop_prob}.")
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4f}"


@register(
    "scheduled_drop_path",
    fidelity="reconstruction",
    verified_by="tests/common_regs/stochastic/test_scheduled_drop_path.py",
    kind="grad_transform",
    paper="Zoph, Vasudevan, Shlens, Le, Learning Transferable Architectures for Scalable Image Recognition, "
    "CVPR 2018, arXiv:1707.07012",
    seed=17,
)
class ScheduledDropPath(ConfigFromKeys):
    r"""Sets the drop probability of every :class:`DropPath` of a model from a linear-in-time (and depth) schedule.

    NASNet's ScheduledDropPath drops each path of a cell with a probability that grows linearly during training
    (and, in the TF-slim code, with the cell's depth), which regularizes deep residual/multi-branch models more as
    they start to overfit. It is the scheduling half; the per-sample dropping is :class:`DropPath` (the
    timm/torchvision semantics). In ``RegHooks`` it occupies the per-step ``grad_transform`` slot (after backward,
    before the optimizer step) to set the probabilities of the next forward; it never touches gradients.

    Reference:
        Zoph, Vasudevan, Shlens, Le, "Learning Transferable Architectures for Scalable Image Recognition",
        CVPR 2018, arXiv:1707.07012 (§ ScheduledDropPath). **Equation unconfirmed**: the depth factor
        (cell + 1)/num_cells and the keep-probability defaults come from the regkit reference notes on the
        TF-slim ``nasnet_utils.py``, not re-checked here.

    Math:
        .. math::
            p_{t,c} = p_{final}\,\min(1, t/T)\,\frac{c+1}{C},\qquad
            \mathrm{out}_b = x_b\,\frac{\beta_b}{1-p_{t,c}},\ \beta_b\sim\mathrm{Bernoulli}(1-p_{t,c})

        with c the index of the DropPath module in ``model.modules()`` order, C their count
        (``depth_scale=False`` drops the factor), t the optimizer step, T ↔ ``total_steps``. E[out] = x.

    Args:
        final_drop_prob: p_final. Default 0.4 (source: TF-slim NASNet CIFAR ``drop_path_keep_prob`` 0.6).
        total_steps: T. Default 10000 (convention; set it to the run length).
        depth_scale: multiply by (c + 1)/C. Default True (source: TF-slim implementation).

    Shape:
        acts on modules; ``DropPath`` inputs (B, *).

    Returns:
        ``apply(ctx)`` / ``step(ctx)`` return None; ``current`` holds the probabilities in use.

    Note:
        ``prepare`` sets every probability to 0 (step 0); without an explicit ``prepare`` the first ``apply`` does it,
        so step 0 runs with the layers' own initial ``drop_prob`` (0 by default). Masks are drawn per forward.

    Example:
        >>> import torch
        >>> from common_regs.api import TrainContext
        >>> model = torch.nn.Sequential(DropPath(), DropPath())
        >>> sched = ScheduledDropPath(final_drop_prob=0.4, total_steps=10)
        >>> sched.prepare(model)
        >>> sched.step(TrainContext(model=model, step=4))
        >>> [round(m.drop_prob, 3) for m in model]
        [0.1, 0.2]
    """

    config_keys: ClassVar[tuple[str, ...]] = ("final_drop_prob", "total_steps", "depth_scale")
    citation: ClassVar[str] = (
        "@inproceedings{zoph2018learning, title={Learning Transferable Architectures for Scalable Image "
        "Recognition}, author={Zoph, Barret and Vasudevan, Vijay and Shlens, Jonathon and Le, Quoc V}, "
        "booktitle={CVPR}, year={2018}}"
    )

    def __init__(self, final_drop_prob: float = 0.4, total_steps: int = 10000, depth_scale: bool = True) -> None:
        if not 0.0 <= final_drop_prob < 1.0:
            raise ValueError(f"`final_drop_prob` must be in [0, 1), got {final_drop_prob}.")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"`total_steps` must be a positive integer, got {total_steps!r}.")
        self.final_drop_prob, self.total_steps, self.depth_scale = float(final_drop_prob), total_steps, depth_scale
        self.layers: list[DropPath] = []

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, DropPath)]
        if not self.layers:
            raise ValueError("`ScheduledDropPath` found no `DropPath` module in the model; add DropPath layers.")
        self._set(0)

    def _set(self, step: int) -> None:
        count = len(self.layers)
        for index, layer in enumerate(self.layers):
            cell, cells = (index, count) if self.depth_scale else (0, 1)
            layer.drop_prob = scheduled_drop_prob(self.final_drop_prob, step, self.total_steps, cell, cells)

    def apply(self, ctx: TrainContext) -> None:
        """Set the probabilities used by the *next* forward pass (step ``ctx.step + 1``)."""
        if not self.layers:
            self.prepare(ctx.model)
        self._set(ctx.step + 1)

    step = apply

    @property
    def current(self) -> list[float]:
        return [layer.drop_prob for layer in self.layers]

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for layer, value in zip(self.layers, state["current"], strict=True):
            layer.drop_prob = float(value)
