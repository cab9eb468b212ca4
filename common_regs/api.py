"""The eight hook kinds every common_regs method belongs to, and the context they receive.

A method is a small object of one *kind*; the kind says where in a training step it acts:

====================  ==========================================================  =====================
kind                  acts                                                        call
====================  ==========================================================  =====================
``batch_transform``   on the batch, before the forward pass                       ``t(batch) -> batch``
``target_provider``   supplies soft targets from its own state                    ``p.targets(ctx)``
``loss``              adds a scalar to the loss (weight from a schedule)          ``term(ctx) -> Tensor``
``grad_transform``    on ``.grad`` between backward and the optimizer step        ``g.apply(ctx)``
``mask_scheduler``    owns masks; prunes / regrows after the optimizer step       ``s.step(ctx)``
``reparam``           a ``torch.nn.utils.parametrize`` parametrization            ``r.prepare(model)``
``solver``            a pure numerical routine                                    ``solver(...)``
``post_hoc``          a one-shot model transform after training                   ``p.apply(model)``
====================  ==========================================================  =====================

``common_regs.training.RegHooks`` applies them in that order inside any training loop.
Stateful methods implement ``state_dict()`` / ``load_state_dict()`` so a run can resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "HOOK_KINDS",
    "BatchTransform",
    "ConfigFromKeys",
    "GradTransform",
    "HookKind",
    "LossTerm",
    "MaskScheduler",
    "PostHoc",
    "Reparam",
    "Solver",
    "Stateful",
    "TargetProvider",
    "TrainContext",
]

HookKind = Literal[
    "loss", "reparam", "mask_scheduler", "batch_transform", "target_provider", "grad_transform", "solver", "post_hoc"
]
HOOK_KINDS: tuple[str, ...] = (
    "batch_transform",
    "target_provider",
    "loss",
    "grad_transform",
    "mask_scheduler",
    "reparam",
    "solver",
    "post_hoc",
)


@dataclass
class TrainContext:
    """What a hook may read during one training step.

    Args:
        model: the model being trained.
        batch: the (possibly transformed) batch of this step.
        outputs: whatever the forward pass returned (logits, embeddings, a dict, ...).
        step: global optimizer step, starting at 0.
        epoch: current epoch, starting at 0.
        sample_indices: dataset indices of the batch rows, for per-sample state (PS-KD, ELR); ``None`` if unknown.
        optimizer: the optimizer, for hooks that must reset its state (mask schedulers).
        extras: free-form values a trainer shares with its hooks (e.g. ``{"doc_embeddings": ...}``).
    """

    model: nn.Module
    batch: Any = None
    outputs: Any = None
    step: int = 0
    epoch: int = 0
    sample_indices: Tensor | None = None
    optimizer: torch.optim.Optimizer | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class LossTerm(Protocol):
    """A scalar added to the training loss; ``RegHooks`` multiplies it by the term's weight schedule."""

    def __call__(self, ctx: TrainContext) -> Tensor: ...


@runtime_checkable
class Reparam(Protocol):
    """Registers parametrizations on a model; ``merge`` bakes them into plain weights, ``unmerge`` restores them."""

    def prepare(self, model: nn.Module) -> nn.Module: ...

    def merge(self) -> None: ...

    def unmerge(self) -> None: ...


@runtime_checkable
class MaskScheduler(Protocol):
    """Owns binary masks keyed by parameter name; ``step`` runs after each optimizer step."""

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None: ...

    def step(self, ctx: TrainContext) -> None: ...

    @property
    def masks(self) -> dict[str, Tensor]: ...


@runtime_checkable
class BatchTransform(Protocol):
    def __call__(self, batch: Any) -> Any: ...


@runtime_checkable
class TargetProvider(Protocol):
    """Soft targets computed from the provider's own state (past predictions, teachers)."""

    def targets(self, ctx: TrainContext) -> Tensor: ...


@runtime_checkable
class GradTransform(Protocol):
    """Rewrites ``.grad`` of the model's parameters after backward, before the optimizer step."""

    def apply(self, ctx: TrainContext) -> None: ...


@runtime_checkable
class Solver(Protocol):
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class PostHoc(Protocol):
    """A one-shot transform of a trained model (pruning, merging); returns the transformed model."""

    def apply(self, model: nn.Module, *args: Any, **kwargs: Any) -> nn.Module: ...


class ConfigFromKeys:
    """``get_config_dict()`` = the constructor arguments named in ``config_keys``, each stored under its own name.

    For methods whose constructor arguments are all JSON values kept as attributes; ``cls(**get_config_dict())``
    rebuilds the method (the round trip of every method's config).
    """

    config_keys: ClassVar[tuple[str, ...]] = ()

    def get_config_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.config_keys}
