"""Apply common_regs hooks inside any training loop, in the one correct order.

Order within a step: transform batch → forward → task loss + weighted loss terms → backward →
grad transforms → optimizer step → mask schedulers. Reusing regularizers in your own loop::

    hooks = RegHooks([CutMix(...), FlopsLoss(weight=1e-3), NMSparsity(...)], model, optimizer)
    for batch in loader:
        loss = hooks.step(batch, lambda b: model(b.x), lambda out, b: F.cross_entropy(out, b.y))

or, for full control, call ``transform`` / ``penalty`` / ``before_optimizer_step`` / ``after_optimizer_step``
yourself (see :func:`fit`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from common_regs.api import STEP_KINDS, Stateful, TrainContext
from common_regs.schedules import Schedule, as_schedule

logger = logging.getLogger(__name__)

__all__ = ["RegHooks", "Weighted", "fit"]


@dataclass(frozen=True)
class Weighted:
    """A loss term together with its weight: a number or a schedule of the step (``QuadraticWarmup(λ, T)``).

    An entry of :class:`RegHooks`' hooks, so that a term's weight travels with the term, never by list position.
    A loss term given without it uses its own ``weight`` attribute, else 1.
    """

    hook: Any
    weight: float | Schedule


def _kind_of(hook: Any) -> str:
    kind = getattr(hook, "hook_kind", None)
    if kind not in STEP_KINDS:
        raise TypeError(
            f"{type(hook).__name__} is not a training-step hook: its `hook_kind` is {kind!r}, expected one of "
            f"{STEP_KINDS}. Register the class with `common_regs.registry.register(..., kind=...)` or set `hook_kind`."
        )
    return kind


class RegHooks:
    """Groups hooks by kind and applies them at the right point of a training step.

    Args:
        hooks: method objects (each has a ``hook_kind`` attribute, set by the registry), a loss term possibly
            wrapped in :class:`Weighted` with its weight.
        model: the model; reparametrizations and mask schedulers are prepared on it here.
        optimizer: the optimizer; mask schedulers zero its state at pruned entries. Trainable parameters that
            preparing the hooks creates (a reparametrization's factors, e.g. SORSA's A, S, B) did not exist when
            it was built, so they are added to it as one new param group, with the settings (``lr``, ...) of the
            group that held the weights they replace, or the optimizer's defaults when those were in several.

    Attributes:
        hooks: the hook objects in the given order (:class:`Weighted` entries unwrapped); a trainer checkpoints
            their ``state_dict()``.
        new_parameters: the trainable parameters created by preparing the hooks, in model order. Without an
            ``optimizer``, build yours after ``RegHooks`` from ``model.parameters()`` so that it holds them.

    Note:
        Build learning-rate schedulers after ``RegHooks``: a scheduler made before does not know the added group.
        Parameters that a reparametrization replaced stay in the optimizer; they get no gradient, so it skips them.
    """

    def __init__(
        self,
        hooks: Sequence[Any],
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.by_kind: dict[str, list[Any]] = {kind: [] for kind in STEP_KINDS}
        self.loss_weights: list[Schedule] = []
        self.hooks: list[Any] = []
        for entry in hooks:
            hook = entry.hook if isinstance(entry, Weighted) else entry
            kind = _kind_of(hook)
            if isinstance(entry, Weighted) and kind != "loss":
                raise TypeError(f"{type(hook).__name__} is a {kind!r} hook: only loss terms take a weight.")
            self.hooks.append(hook)
            self.by_kind[kind].append(hook)
            if kind == "loss":
                weight = entry.weight if isinstance(entry, Weighted) else getattr(hook, "weight", 1.0)
                self.loss_weights.append(as_schedule(weight))
        existing = {id(parameter) for parameter in model.parameters()}
        for reparam in self.by_kind["reparam"]:
            reparam.prepare(model)
        for scheduler in self.by_kind["mask_scheduler"]:
            scheduler.prepare(model, optimizer)
        now = {id(parameter) for parameter in model.parameters()}
        self.new_parameters = [p for p in model.parameters() if p.requires_grad and id(p) not in existing]
        _give_to_optimizer(self.new_parameters, optimizer, replaced=existing - now)
        self.last_terms: dict[str, float] = {}
        self.last_weights: dict[str, float] = {}
        self.last_loss = 0.0
        self.last_task_loss = 0.0

    def transform(self, batch: Any) -> Any:
        for transform in self.by_kind["batch_transform"]:
            batch = transform(batch)
        return batch

    def penalty(self, ctx: TrainContext) -> Tensor:
        """Sum of weighted loss terms at ``ctx.step``.

        The unweighted values are kept in ``last_terms``, the weights in ``last_weights`` (both keyed by the term's
        registry name).
        """
        total: Tensor | None = None
        self.last_terms, self.last_weights = {}, {}
        for term, weight in zip(self.by_kind["loss"], self.loss_weights, strict=True):
            value = term(ctx)
            name = getattr(term, "registry_name", type(term).__name__)
            coefficient = weight(ctx.step)
            self.last_terms[name], self.last_weights[name] = float(value.detach()), coefficient
            if coefficient != 0.0:
                total = coefficient * value if total is None else total + coefficient * value
        return torch.zeros((), device=_device_of(self.model)) if total is None else total

    def before_optimizer_step(self, ctx: TrainContext) -> None:
        for transform in self.by_kind["grad_transform"]:
            transform.apply(ctx)

    def after_optimizer_step(self, ctx: TrainContext) -> None:
        for scheduler in self.by_kind["mask_scheduler"]:
            scheduler.step(ctx)

    def state_dicts(self) -> list[dict[str, Any] | None]:
        """Each hook's state (None for a hook without one), in hook order: what a trainer's checkpoint holds."""
        return [hook.state_dict() if isinstance(hook, Stateful) else None for hook in self.hooks]

    def load_state_dicts(self, states: Sequence[Mapping[str, Any] | None]) -> None:
        """Restore what :meth:`state_dicts` returned (one entry per hook, in the same order)."""
        if len(states) != len(self.hooks):
            raise ValueError(f"{len(states)} hook states for {len(self.hooks)} hooks.")
        for hook, state in zip(self.hooks, states, strict=True):
            if state is not None and isinstance(hook, Stateful):
                hook.load_state_dict(state)

    def step(
        self,
        batch: Any,
        forward: Callable[[Any], Any],
        task_loss: Callable[[Any, Any], Tensor],
        *,
        step: int = 0,
        epoch: int = 0,
        sample_indices: Tensor | None = None,
        extras: Mapping[str, Any] | None = None,
        max_grad_norm: float | None = None,
    ) -> Tensor:
        """One full optimizer step; returns the total loss (detached).

        The total and the task loss are kept as floats in ``last_loss`` and ``last_task_loss``, the unweighted loss
        terms in ``last_terms``.

        Args:
            batch: the training batch, before the batch transforms.
            forward: ``forward(batch) -> outputs`` of the model.
            task_loss: ``task_loss(outputs, batch) -> scalar``, the loss the hooks' terms are added to.
            step: optimizer step (0-based), seen by the hooks as ``ctx.step``.
            epoch: epoch, seen by the hooks as ``ctx.epoch``.
            sample_indices: dataset indices of the batch's samples (for per-sample state such as PS-KD's).
            extras: values the trainer shares with its hooks for this step (``ctx.extras``; e.g. ``total_steps``
                for schedules over the whole run).
            max_grad_norm: clip the global gradient norm of the model's parameters to this, after the gradient
                transforms and before the optimizer step; None = no clipping.

        Raises:
            FloatingPointError: the loss is not finite (nothing is stepped: the parameters stay as they were).
        """
        if self.optimizer is None:
            raise ValueError("`RegHooks.step` needs the `optimizer` given at construction.")
        batch = self.transform(batch)
        outputs = forward(batch)
        ctx = TrainContext(
            model=self.model,
            batch=batch,
            outputs=outputs,
            step=step,
            epoch=epoch,
            sample_indices=sample_indices,
            optimizer=self.optimizer,
            # loss terms that need another pass (Maestro's truncated model) use `forward`
            extras={"forward": forward, **(extras or {})},
        )
        for provider in self.by_kind["target_provider"]:
            ctx.extras.setdefault("targets", provider.targets(ctx))
        task = task_loss(outputs, batch)
        loss = task + self.penalty(ctx)
        self.last_loss = float(loss.detach())  # one read serves the finite check and the caller's logging
        if not math.isfinite(self.last_loss):
            raise FloatingPointError(f"non-finite loss {self.last_loss} at step {step} (epoch {epoch}).")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.before_optimizer_step(ctx)
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_grad_norm)
        self.optimizer.step()
        self.after_optimizer_step(ctx)
        self.last_task_loss = float(task.detach())
        return loss.detach()


def _give_to_optimizer(parameters: list[nn.Parameter], optimizer: torch.optim.Optimizer | None,
                       replaced: set[int]) -> None:
    """Add the parameters the optimizer does not hold yet as one param group.

    The group copies the settings (``lr``, ``weight_decay``, ...) of the group that held the weights the hooks
    replaced when that is one group, else it takes the optimizer's defaults.
    """
    if not parameters:
        return
    if optimizer is None:
        logger.info("RegHooks: preparing the hooks created %d trainable tensor(s); build the optimizer after "
                    "RegHooks so that it holds them.", len(parameters))
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [p for p in parameters if id(p) not in held]
    if not missing:
        return
    sources = [group for group in optimizer.param_groups if any(id(p) in replaced for p in group["params"])]
    settings = {k: v for k, v in sources[0].items() if k != "params"} if len(sources) == 1 else {}
    if "name" in settings:
        settings["name"] = f"{settings['name']}/reparam"
    optimizer.add_param_group({**settings, "params": missing})
    logger.info("RegHooks: added %d trainable tensor(s) (%d values) created by the hooks to the optimizer (%s).",
                len(missing), sum(p.numel() for p in missing),
                "settings of the group they replace" if settings else "the optimizer's defaults")


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[], Iterable[Any]],
    forward: Callable[[Any], Any],
    task_loss: Callable[[Any, Any], Tensor],
    hooks: Sequence[Any] = (),
    *,
    epochs: int = 1,
    sample_indices: Callable[[Any], Tensor] | None = None,
) -> list[float]:
    """Train ``model`` for ``epochs`` passes over ``batches()`` with the given hooks; returns per-step losses.

    ``sample_indices(batch)`` returns the dataset indices of a batch's rows, for hooks with per-sample state
    (PS-KD's past predictions, ELR's target averages).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from common_regs.training import fit
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x = torch.randn(64, 3); y = x @ torch.tensor([1.0, -2.0, 0.5])
        >>> model = nn.Linear(3, 1)
        >>> losses = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda: [(x, y)],
        ...              lambda b: model(b[0]).squeeze(-1), lambda out, b: ((out - b[1]) ** 2).mean(), epochs=50)
        >>> losses[-1] < 0.01 * losses[0]
        True
    """
    if epochs < 1:
        raise ValueError(f"`epochs` must be >= 1, got {epochs}.")
    reg_hooks = RegHooks(hooks, model, optimizer)
    model.train()
    losses: list[float] = []
    step = 0
    for epoch in range(epochs):
        for batch in batches():
            indices = sample_indices(batch) if sample_indices is not None else None
            losses.append(float(reg_hooks.step(batch, forward, task_loss, step=step, epoch=epoch,
                                               sample_indices=indices)))
            step += 1
    return losses
