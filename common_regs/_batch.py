"""Read inputs and labels out of a :class:`~common_regs.api.TrainContext`, whatever the batch layout.

Hooks of several families (PS-KD, ELR, EATA, CutMix, ...) need the labels or the inputs of the current batch.
Trainers pass them in one of the common layouts; these helpers accept all of them in one place:

* ``ctx.extras["labels"]`` / ``ctx.extras["inputs"]`` (explicit, wins over everything else);
* a mapping batch with a ``"labels"`` / ``"y"`` key, or ``"inputs"`` / ``"x"``;
* a ``(inputs, labels, ...)`` tuple or list;
* a bare tensor batch (inputs only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from common_regs.api import TrainContext

__all__ = ["batch_inputs", "batch_labels", "logits_of"]


def _pick(ctx: TrainContext, extra_key: str, keys: tuple[str, ...], position: int) -> Any:
    if extra_key in ctx.extras:
        return ctx.extras[extra_key]
    batch = ctx.batch
    if isinstance(batch, Mapping):
        for key in keys:
            if key in batch:
                return batch[key]
        return None
    if isinstance(batch, (tuple, list)) and len(batch) > position:
        return batch[position]
    if position == 0 and isinstance(batch, Tensor):
        return batch
    return None


def batch_labels(ctx: TrainContext) -> Tensor:
    """The labels of the batch (``extras["labels"]``, ``batch["labels"|"y"]`` or ``batch[1]``)."""
    labels = _pick(ctx, "labels", ("labels", "y"), 1)
    if not isinstance(labels, Tensor):
        raise ValueError(
            "no labels found in the TrainContext: pass them as `ctx.extras['labels']`, a batch mapping with a "
            f"'labels' key, or an (inputs, labels) tuple; got a batch of type {type(ctx.batch).__name__}."
        )
    return labels


def batch_inputs(ctx: TrainContext) -> Tensor:
    """The inputs of the batch (``extras["inputs"]``, ``batch["inputs"|"x"]``, ``batch[0]`` or the batch itself)."""
    inputs = _pick(ctx, "inputs", ("inputs", "x"), 0)
    if not isinstance(inputs, Tensor):
        raise ValueError(
            "no inputs found in the TrainContext: pass them as `ctx.extras['inputs']`, a batch mapping with an "
            f"'inputs' key, an (inputs, labels) tuple or a tensor batch; got {type(ctx.batch).__name__}."
        )
    return inputs


def logits_of(ctx: TrainContext) -> Tensor:
    """The model outputs as a tensor (``ctx.outputs`` or ``ctx.outputs["logits"]``)."""
    outputs = ctx.outputs
    if isinstance(outputs, Mapping):
        outputs = outputs.get("logits")
    if not isinstance(outputs, Tensor):
        raise ValueError(
            "the hook needs logits: set `ctx.outputs` to a tensor or a mapping with a 'logits' key, got "
            f"{type(ctx.outputs).__name__}."
        )
    return outputs
