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
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "HOOK_KINDS",
    "STEP_KINDS",
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
STEP_KINDS: tuple[str, ...] = HOOK_KINDS[:6]
"""The kinds that act during a training step (``common_regs.training.RegHooks`` applies them); solvers and
post-hoc transforms are called by hand."""


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
    """A piece with training state: ``state_dict()`` saves it and ``load_state_dict()`` restores it on resume."""

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
    """Maps a training batch to a new batch (augmentation, feature masking) before the forward pass."""

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
    """A pure numerical routine (optimal transport, structure learning) called with tensors, holding no state."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class PostHoc(Protocol):
    """A one-shot transform of a trained model (pruning, merging); returns the transformed model."""

    def apply(self, model: nn.Module, *args: Any, **kwargs: Any) -> nn.Module: ...


class ConfigFromKeys:
    """The one ``get_config_dict()`` of every registered method: the ``config_keys`` attributes, as JSON values.

    The sentence-transformers pattern: each hyperparameter is a constructor argument kept as an attribute of the
    same name and listed in ``config_keys``. Constructor arguments that are runtime objects rather than
    configuration (a model or teacher to wrap, a tensor computed from data, a progress-bar switch) are listed in
    ``runtime_keys`` instead; the two together are exactly the constructor's parameters, so
    ``cls.from_config(obj.get_config_dict(), **runtime)`` rebuilds an equal method with the same bound objects.

    :meth:`example_kwargs` gives the constructor keywords of a small instance (runtime objects included); the
    registry-wide config contract test builds every registered method from it, so a new method brings its own.
    """

    config_keys: ClassVar[tuple[str, ...]] = ()
    runtime_keys: ClassVar[tuple[str, ...]] = ()

    def get_config_dict(self) -> dict[str, Any]:
        """The hyperparameters (``config_keys``) as JSON values: tuples become lists, tensors nested lists.

        Raises:
            TypeError: a hyperparameter holds an object that JSON cannot hold (e.g. a callable passed where a name
                is also accepted); the message names the class and the key.
        """
        return {key: _json_value(getattr(self, key), f"{type(self).__name__}.{key}") for key in self.config_keys}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **runtime: Any) -> Self:
        """Inverse of :meth:`get_config_dict`; ``runtime`` supplies the ``runtime_keys`` objects."""
        return cls(**runtime, **config)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        """Constructor keywords of a small, valid instance; default: none (every argument has a default)."""
        return {}


def _json_value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {key: _json_value(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, Tensor):
        return value.tolist()
    raise TypeError(
        f"`{where}` is a {type(value).__name__}, which a JSON config cannot hold; pass a value (a name, a number, "
        "a list) instead, or declare the argument in `runtime_keys` if it is a runtime object."
    )
