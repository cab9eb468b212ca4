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
    """``x · b / (1 - p)`` with one ``b ~ Bernoulli(1 - p)`` per sample (constant over the non-batch dims).

    TF-slim ``nasnet_utils.drop_path`` draws ``b = floor(keep + U[0, 1))`` with noise shape ``(B, 1, 1, 1)`` and
    returns ``x / keep · b`` (keep = 1 - p): the same law. Identity when ``p = 0`` or not training.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = torch.bernoulli(torch.full((x.shape[0],) + (1,) * (x.ndim - 1), keep), generator=generator)
    return x * mask.to(x) / keep


def scheduled_drop_prob(final_prob: float, step: int, total_steps: int, cell: int = 0, num_cells: int = 1) -> float:
    """``p = p_final · min(1, step / T) · (cell + 1) / num_cells``.

    TF-slim ``NasNetABaseCell._apply_drop_path`` (``drop_connect_version='v3'``) scales the keep probability twice,
    ``k_c = 1 - (cell + 1)/num_cells · (1 - k)`` then ``k_{t,c} = 1 - min(1, step/T) · (1 - k_c)``; its
    complement is this product.
    """
    return final_prob * min(1.0, max(step, 0) / total_steps) * (cell + 1) / num_cells


class DropPath(nn.Module):
    """Stochastic depth on a residual branch: ``drop_path(x, self.drop_prob)`` in training, identity in eval.

    Same semantics as ``timm.layers.DropPath`` / ``torchvision.ops.StochasticDepth(mode="row")`` (neither loads
    beside torch 2.13 here); :class:`ScheduledDropPath` sets ``drop_prob`` every step.

    Args:
        drop_prob: p. Default 0.0.
        cell: depth index of the cell this path belongs to (NASNet drops every path of a cell with the cell's
            probability). Default None: :class:`ScheduledDropPath` then counts each ``DropPath`` as its own cell.
    """

    def __init__(self, drop_prob: float = 0.0, cell: int | None = None) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"`drop_prob` must be in [0, 1), got {drop_prob}.")
        if cell is not None and (isinstance(cell, bool) or not isinstance(cell, int) or cell < 0):
            raise ValueError(f"`cell` must be None or an integer >= 0, got {cell!r}.")
        self.drop_prob = float(drop_prob)
        self.cell = cell

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4f}" + ("" if self.cell is None else f", cell={self.cell}")


@register(
    "scheduled_drop_path",
    fidelity="official-code",
    verified_by="tests/common_regs/stochastic/test_scheduled_drop_path.py",
    kind="grad_transform",
    paper="Zoph, Vasudevan, Shlens, Le, Learning Transferable Architectures for Scalable Image Recognition, "
    "CVPR 2018, arXiv:1707.07012",
    seed=17,
)
class ScheduledDropPath(ConfigFromKeys):
    r"""Sets the drop probability of every :class:`DropPath` of a model from a linear-in-time and depth schedule.

    NASNet's ScheduledDropPath drops each path of a cell with a probability that grows linearly during training
    and with the cell's depth, which regularizes deep residual/multi-branch models more as they start to overfit.
    It is the scheduling half; the per-sample dropping is :class:`DropPath`. In ``RegHooks`` it occupies the
    per-step ``grad_transform`` slot (after backward, before the optimizer step) to set the probabilities of the
    next forward; it never touches gradients.

    Reference:
        Zoph, Vasudevan, Shlens, Le, "Learning Transferable Architectures for Scalable Image Recognition",
        CVPR 2018, arXiv:1707.07012 (Experiments section, ScheduledDropPath: each path of a cell dropped with a
        probability increased linearly over training).
        Checked against the official TF-slim code, ``tensorflow/models`` ``research/slim/nets/nasnet/``:
        ``nasnet_utils.py`` (``drop_path``; ``NasNetABaseCell._apply_drop_path`` with the default
        ``drop_connect_version='v3'``: layer ratio ``(cell_num + 1) / total_num_cells`` and time ratio
        ``min(1, global_step / total_training_steps)``) and ``nasnet.py`` (``cifar_config``:
        ``drop_path_keep_prob=0.6``, ``total_training_steps=937500``; every cell, reduction cells included, has a
        running ``cell_num`` and ``total_num_cells`` counts them all; drop path is off at evaluation).
        ``depth_scale=False`` is the code's ``'v1'`` (time only); its ``'v2'`` (depth only, no schedule) is not
        offered. The keep probability is parameterised here by its complement ``final_drop_prob = 1 - keep``.

    Math:
        .. math::
            p_{t,c} = p_{final}\,\min(1, t/T)\,\frac{c+1}{C},\qquad
            \mathrm{out}_b = x_b\,\frac{\beta_b}{1-p_{t,c}},\ \beta_b\sim\mathrm{Bernoulli}(1-p_{t,c})

        with t the optimizer step, T ↔ ``total_steps``, c the cell of the ``DropPath`` (its ``cell`` attribute, or
        its index in ``model.modules()`` order when no layer sets one) and C the cell count (1 + the largest
        ``cell``, or the number of ``DropPath`` layers); ``depth_scale=False`` drops the factor. E[out] = x.

    Args:
        final_drop_prob: p_final. Default 0.4 (source: ``cifar_config`` ``drop_path_keep_prob=0.6``; 0.7 for
            ImageNet-large, 1.0 i.e. off for mobile).
        total_steps: T. Default 10000 (convention; the official CIFAR run uses 937500, 600 epochs: set it to the
            run length).
        depth_scale: multiply by (c + 1)/C. Default True (source: official ``drop_connect_version='v3'``).

    Shape:
        acts on modules; ``DropPath`` inputs (B, *).

    Returns:
        ``apply(ctx)`` / ``step(ctx)`` return None; ``current`` holds the probabilities in use.

    Note:
        ``prepare`` sets every probability to 0 (step 0); without an explicit ``prepare`` the first ``apply`` does it,
        so step 0 runs with the layers' own initial ``drop_prob`` (0 by default). Masks are drawn per forward.
        Either every ``DropPath`` of the model sets ``cell`` or none does (``ValueError`` otherwise).

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
        self.cells: list[int] = []
        self.num_cells = 1

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, DropPath)]
        if not self.layers:
            raise ValueError("`ScheduledDropPath` found no `DropPath` module in the model; add DropPath layers.")
        given = [layer.cell for layer in self.layers if layer.cell is not None]
        if not given:
            self.cells = list(range(len(self.layers)))
        elif len(given) < len(self.layers):
            raise ValueError(
                f"`cell` is set on {len(given)} of {len(self.layers)} `DropPath` layers; set it on all of them "
                "(the cell depth index) or on none (each layer is then its own cell)."
            )
        else:
            self.cells = given
        self.num_cells = max(self.cells) + 1
        self._set(0)

    def _set(self, step: int) -> None:
        for layer, cell in zip(self.layers, self.cells, strict=True):
            cell, cells = (cell, self.num_cells) if self.depth_scale else (0, 1)
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
